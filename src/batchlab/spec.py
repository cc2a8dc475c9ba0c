"""The study specification: one frozen dataclass, its allowed values declared as data, validated at the door.

A study is built from CLI flags or a TOML file with the same field names (dashes become underscores), and the
defaults reproduce Lena's two experiments: two noisy moons (a problem with irreducible label noise), an MLP,
batch size 1 against the whole training set, 100 epochs of plain SGD, one seed. Nothing here imports JAX, so bad input is reported in milliseconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchlab.errors import BatchlabError, invalid

FULL = "full"
BUILTIN_DATASETS = ("digits", "iris", "wine", "breast_cancer", "moons", "circles", "blobs", "mnist1d", "text")
BUILTIN_MODELS = ("mlp", "logreg", "cnn", "transformer")
TEXT_SUFFIX = ".txt"
"""A dataset path ending in this is a UTF-8 text corpus, read like `--dataset text` (see `batchlab.data.text`)."""
DATA_FILE_KINDS = {".csv": "CSV", ".parquet": "Parquet", ".npz": "NPZ"}
"""Data-file extensions (lower case) and the format each names."""
TASKS = ("auto", "classification", "regression")

FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38
"""The largest float32 and the smallest normal one: training runs in float32, so a rate, feature or target
beyond them would become inf or 0 there (numpy.finfo(numpy.float32).max and .tiny)."""
MAX_SEEDS = 10_000
MAX_BUDGET = 10**12
"""Bounds on a study's size at the door (see also `batchlab.sweep.MAX_RUNS` and the driver's estimate)."""

# The default learning rate. On the default moons, batch size 1's per-epoch train and test losses rise on about
# half of the epochs (the puzzle's noisy curve) while 100 full-batch updates of the same step size leave the model
# far from converged: the lesson of the puzzle. It is also the rate at which `--dataset digits` trains stably:
# there 0.05 and 0.1 blow up at batch size 1 (see README), so the default stays one flag away from digits.
DEFAULT_LR = 0.03
BLOWUP_FACTOR = 100.0
"""A run whose end-of-epoch train loss exceeds this many times its epoch-0 (initial) train loss has blown up: it
is recorded `diverged` from that epoch (`batchlab.train.contract.diverged_now`), like a run whose loss turned
non-finite. Plain SGD on digits at lr 0.05, batch size 1, ends at train loss ~1e6 from 2.3 (a few enormous logits,
98% train accuracy): finite, but no longer training, and no model a best-rate choice should pick. A run that
trains does not fall that far behind its random initialisation."""
DEFAULT_DATASET = "moons"
"""Two interleaved half-moons with Gaussian noise (scikit-learn's make_moons): at noise 0.3 the classes overlap,
so no model fits every training example, per-example gradients never vanish and SGD's noise (the learning rate
times their spread) stays alive for the whole run. On digits the MLP interpolates the training set and batch
size 1's per-epoch curve goes smooth (see README, "Why the default is moons")."""
ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.9, 0.999, 1e-8
"""optax.adam's (and torch.optim.Adam's) defaults: with them Adam's numbers are those of `optax.adam(lr)`."""
LR_RULES = ("none", "linear", "sqrt", "adam-sde", "beta2-halflife")
"""The values of `lr_scaling`."""


@dataclass(frozen=True)
class StudySpec:
    """Everything that defines a study. Units are stated per field; defaults reproduce Lena's experiments."""

    dataset: str = DEFAULT_DATASET
    """A built-in dataset name or the path of a data file: `.csv`, `.parquet` or `.npz` (see `batchlab.data.load`)."""
    target: str | None = None
    """Data files only: the target column (CSV, Parquet; required) or array (NPZ; default `y`)."""
    features: tuple[str, ...] | None = None
    """The feature columns to use, by name (NPZ: column indices of the flattened X); default all but the target."""
    task: str = "auto"
    """`classification`, `regression`, or `auto`: regression when the target holds floats that are not all
    integers or take more than `batchlab.data.load.AUTO_MAX_CLASSES` values, else classification."""
    n_samples: int = 2000
    """Synthetic datasets only: number of examples generated (train and test together)."""
    noise: float = 0.3
    """Synthetic datasets only: noise level (moons, circles) or cluster standard deviation / 5 (blobs)."""
    data_seed: int = 0
    """Synthetic datasets only: seed of the generator."""
    test_fraction: float = 0.2
    """Fraction of examples held out for testing (stratified by class; random for regression), unless the data
    file gives the split (a CSV or Parquet `split` column, NPZ `X_test` and `y_test` arrays); `mnist1d` keeps its
    generator's split and text holds out its last 10% (`batchlab.data.text`)."""
    split_seed: int = 0
    """Seed of the stratified train/test split."""
    standardize: bool = True
    """Scale features to zero mean and unit variance using training-set statistics."""
    model: str = "mlp"
    """`mlp` (hidden layers, see `hidden`), `logreg` (multinomial logistic regression), `cnn` (a small CNN on
    images of `image_shape`), or a user's model: `module:NAME` or `path/to/file.py:NAME`, NAME a function or
    class returning a JAX model (Flax NNX, Equinox or an (init, apply) pair) or a PyTorch nn.Module (`torch:`
    before the reference insists on PyTorch; see `batchlab.models.factory` for what the factory receives)."""
    hidden: tuple[int, ...] = (128,)
    """MLP hidden-layer widths, input side first."""
    activation: str = "relu"
    """MLP and CNN hidden activation: `relu` or `tanh`."""
    image_shape: tuple[int, ...] | None = None
    """`cnn` only: (height, width) or (height, width, channels) of the images whose pixels, row-major, are the
    features; default: the dataset's own shape (8, 8 for `digits`)."""
    optimizer: str = "sgd"
    """`sgd`, `momentum` (heavy-ball SGD) or `adam`."""
    lr: float = DEFAULT_LR
    """Learning rate at `base_batch_size`; other batch sizes get it scaled by `lr_scaling`."""
    momentum: float = 0.9
    """Momentum coefficient for `optimizer = momentum`."""
    lr_scaling: str = "none"
    """How the learning rate (and Adam's betas) follow the batch size: `none`, `linear` (Goyal et al. 2017),
    `sqrt`, `adam-sde` (Malladi et al. 2022: lr x sqrt(k), 1 - beta x k, eps / sqrt(k)) or `beta2-halflife`
    (Marek et al. 2025: beta2^k, the rate unchanged), k = batch_size / base_batch_size (see :func:`scaled_adam`)."""
    beta1: float = ADAM_BETA1
    """Adam's first-moment decay at `base_batch_size` (optax's default 0.9); `optimizer = adam` only."""
    beta2: float = ADAM_BETA2
    """Adam's second-moment decay at `base_batch_size` (optax's default 0.999); `optimizer = adam` only."""
    base_batch_size: int = 1
    """The batch size at which `lr` applies unscaled."""
    batch_sizes: tuple[int | str, ...] = (1, FULL)
    """Batch sizes to compare: integers 1 <= b <= N (training-set size) and `full` (= N)."""
    epochs: int = 100
    """Passes over the training set (not optimizer steps)."""
    seeds: int = 1
    """Number of seeds (replicas per batch size); seed i uses init seed `seed + i`, order seed `order_seed + i`."""
    seed: int = 0
    """First initialization seed: the initial parameters, identical for every batch size."""
    order_seed: int = 0
    """First data-order seed: the per-epoch shuffling, identical for every batch size."""
    device: str = "auto"
    """`auto` (a GPU when JAX sees one), `cpu` or `gpu`."""
    warmup_epochs: int = 0
    """Epochs of linear warmup from `lr` to the scaled rate (Goyal et al. 2017); needs lr_scaling linear or sqrt."""
    budget_steps: int | None = None
    """Instead of `epochs`: train each batch size for at least this many updates (rounded up to whole epochs)."""
    budget_examples: int | None = None
    """Instead of `epochs`: train each batch size on at least this many examples (rounded up to whole epochs)."""
    gns: str = "auto"
    """Gradient noise scale B_simple: `exact` (per-example gradients over the training set), `estimate`
    (McCandlish et al.'s two-batch estimator from microbatches), `off`, or `auto` (exact up to 20,000 examples)."""
    eval_every_steps: int | None = None
    """Also evaluate the full train and test sets every this many updates (counted over the whole run), not only
    at epoch ends, inside the compiled epoch; steps-to-target then uses every evaluation (Shallue et al. 2018
    evaluate at fixed step intervals). None: at epoch ends only."""
    gns_every: int = 10
    """Measure the gradient noise scale at epoch 0, every this many epochs, and at the last epoch."""
    sharpness: bool = True
    """At the end of training: top Hessian eigenvalue (power iteration) and Hessian trace (Hutchinson)."""
    eps_sharpness: bool = False
    """Also Keskar et al. 2017's epsilon-sharpness (L-BFGS-B maximisation; slower)."""
    # -- schedules (issue 14): the rate and the batch size over training, per epoch -------------------------
    lr_schedule: str = "constant"
    """How the rate changes over the epochs: `constant`; `step` (PyTorch's MultiStepLR: times `lr_gamma` at each
    of `lr_milestones`); `cosine` (lr * (1 + cos(pi (e - 1) / E)) / 2 in epoch e of E, CosineAnnealingLR to 0);
    `linear` (lr * (1 - (e - 1) / E), to 0). It multiplies the (scaled, warmed-up) rate."""
    lr_milestones: tuple[int, ...] = ()
    """`step` only: increasing epochs after which the rate is multiplied by `lr_gamma` (milestone 10: epochs
    1-10 at the rate, 11 on at rate * gamma, as MultiStepLR stepped once per epoch)."""
    lr_gamma: float = 0.1
    """`step` only: the factor at each milestone (PyTorch's default 0.1)."""
    batch_size_milestones: tuple[int, ...] = ()
    """Increasing epochs after which the batch size changes (Smith et al. 2018, "Don't decay the learning rate,
    increase the batch size"): times `batch_size_gamma`, or to the sizes of `batch_size_schedule`. The run
    continues on the same data stream (each epoch is one pass of the same shuffling whatever the batch size).
    With `lr_scaling` linear or sqrt the rate follows the batch size in force (from `base_batch_size`); with
    none it stays (Smith et al.'s experiment)."""
    batch_size_gamma: float = 2.0
    """The batch-size factor at each milestone; sizes round to the nearest integer in [1, N]."""
    batch_size_schedule: tuple[int, ...] | None = None
    """The explicit list form: the batch size in force after each of `batch_size_milestones` (one per
    milestone), instead of `batch_size_gamma`."""
    checkpoint_every: int | None = None
    """Keep the full training state (parameters and optimizer state) of every run at epoch 0 and every this many
    epochs, compressed in study.db (`batchlab branch` starts from them). None: only the resume checkpoint."""
    sharpness_every: int = 0
    """During training, at epoch 0, every this many epochs and at the last: the top Hessian eigenvalue, the trace
    and the batch sharpness (Andreyev & Beneventano 2024), into the epochs table, to watch progressive sharpening
    and the edge of stability 2 / lr (Cohen et al. 2021). 0: off."""
    # --- workloads (issue 13): text and the transformer -------------------------------------------------
    context: int = 64
    """Text and transformer: characters per sequence (one example is `context` characters with next-character
    targets), also the transformer's number of learned positions."""
    layers: int = 2
    """Transformer: number of blocks (attention + MLP, each pre-LayerNorm with a residual)."""
    width: int = 64
    """Transformer: model width D (embedding size); the MLP inside a block is 4 D wide."""
    heads: int = 4
    """Transformer: attention heads; must divide `width`."""
    budget_tokens: int | None = None
    """Text only, instead of `epochs`: train each batch size on at least this many tokens (characters), i.e.
    ceil(budget_tokens / context) sequences, rounded up to whole epochs."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def resolved_batch_sizes(self, n_train: int) -> list[int]:
        """The batch sizes as integers for a training set of `n_train` examples, `full` -> N, deduplicated."""
        sizes = [n_train if b == FULL else int(b) for b in self.batch_sizes]
        for b in sizes:
            if not 1 <= b <= n_train:
                raise invalid("batch_sizes", b, f"integers 1 <= b <= {n_train} (the training-set size) or 'full'")
        return sorted(set(sizes))

    def epochs_for(self, batch_size: int, n_train: int) -> int:
        """Whole epochs to train at `batch_size`: `epochs`, or the fewest that meet the step or example budget."""
        if self.budget_steps is not None and self.batch_size_milestones:  # count the real updates
            schedule, epochs, done = self.schedule_for(batch_size, n_train), 0, 0
            while done < self.budget_steps and epochs <= self.batch_size_milestones[-1]:
                epochs += 1
                done += updates_per_epoch(n_train, schedule.batch_size_at(epochs))
            last = updates_per_epoch(n_train, schedule.batch_size_at(epochs + 1))  # constant after the milestones
            return epochs + max(0, math.ceil((self.budget_steps - done) / last))
        if self.budget_steps is not None:
            return math.ceil(self.budget_steps / updates_per_epoch(n_train, batch_size))
        if self.budget_examples is not None:
            return math.ceil(self.budget_examples / n_train)
        if self.budget_tokens is not None:
            return math.ceil(self.budget_examples_from_tokens / n_train)
        return self.epochs

    @property
    def budget_examples_from_tokens(self) -> int:
        """`budget_tokens` as whole sequences of `context` characters (rounded up); 0 without a token budget."""
        return 0 if self.budget_tokens is None else math.ceil(self.budget_tokens / self.context)

    @property
    def is_text(self) -> bool:
        """Whether the dataset is text (`text` or a .txt path): examples are sequences of `context` tokens."""
        return self.dataset == "text" or text_file(self.dataset)

    def lr_for(self, batch_size: int) -> float:
        """The learning rate used at `batch_size` under the scaling rule."""
        return scaled_lr(self.lr, batch_size, self.base_batch_size, self.lr_scaling)

    @property
    def scheduled(self) -> bool:
        """Whether the rate or the batch size changes over the epochs (a schedule other than constant)."""
        return self.lr_schedule != "constant" or bool(self.batch_size_milestones)

    def schedule_for(self, batch_size: int, n_train: int) -> Schedule:
        """The schedule of a run that starts at `batch_size` (see :class:`Schedule`)."""
        return Schedule(batch_size, n_train, self.lr_schedule, self.lr_milestones, self.lr_gamma,
                        self.batch_size_milestones, self.batch_size_gamma, self.batch_size_schedule)
    def adam_for(self, batch_size: int) -> AdamHyperparams:
        """Adam's (beta1, beta2, eps) in force at `batch_size` under the scaling rule (the spec's own values,
        and eps = ADAM_EPS, for the rules that change only the rate)."""
        k = batch_size / self.base_batch_size
        base = AdamHyperparams(self.beta1, self.beta2, ADAM_EPS)
        if self.lr_scaling == "adam-sde":
            return sde_adam_hyperparams(base, k)
        if self.lr_scaling == "beta2-halflife":
            return AdamHyperparams(self.beta1, halflife_beta2(self.beta2, k), ADAM_EPS)
        return base


def updates_per_epoch(n_train: int, batch_size: int) -> int:
    """ceil(N / B): the last, partial batch is kept."""
    return math.ceil(n_train / batch_size)


def scaled_lr(lr: float, batch_size: int, base_batch_size: int, rule: str) -> float:
    """eps(B) = eps_0 * (B / B_0) for `linear` (Goyal et al. 2017), eps_0 * sqrt(B / B_0) for `sqrt` and
    `adam-sde` (Malladi et al. 2022), eps_0 for `none` and `beta2-halflife` (Marek et al. 2025 hold the rate)."""
    ratio = batch_size / base_batch_size
    return {"none": lr, "linear": lr * ratio, "sqrt": lr * math.sqrt(ratio), "adam-sde": lr * math.sqrt(ratio),
            "beta2-halflife": lr}[rule]


# ---------------------------------------------------------------------------------------------------------
# Adam's coefficients across batch sizes: pure conversions for a batch multiplier k = B / B_0.


@dataclass(frozen=True)
class AdamHyperparams:
    """Adam's decay rates and epsilon (added outside the square root, as optax and torch.optim do)."""

    beta1: float
    beta2: float
    eps: float


def sde_beta(beta: float, k: float) -> float:
    """Malladi et al. 2022 ("On the SDEs and Scaling Rules for Adaptive Gradient Algorithms", arXiv 2205.10287),
    the square-root scaling rule: for a batch multiplier k, 1 - beta' = k (1 - beta), i.e. beta' = 1 - k (1 - beta),
    so that the moving averages forget at the same rate per example. Needs k (1 - beta) < 1 (beta' > 0)."""
    return 1.0 - k * (1.0 - beta)


def sde_adam_hyperparams(base: AdamHyperparams, k: float) -> AdamHyperparams:
    """Malladi et al. 2022's rule for Adam at a batch multiplier k: both betas by :func:`sde_beta` and
    eps' = eps / sqrt(k) (the rate itself goes as sqrt(k), see :func:`scaled_lr`)."""
    return AdamHyperparams(sde_beta(base.beta1, k), sde_beta(base.beta2, k), base.eps / math.sqrt(k))


def halflife_beta2(beta2: float, k: float) -> float:
    """Marek et al. 2025 ("Small Batch Size Training for Language Models", arXiv 2507.07101): hold the half-life
    of beta2's moving average fixed in examples (tokens). After T steps of batch B the weight of a gradient is
    beta2^T; its half-life in examples is t_half = B ln(1/2) / ln(beta2), fixed when beta2' = beta2^(B'/B) = beta2^k.
    E.g. beta2 = 0.95 at B = 512 becomes 0.95^(1/32) ~ 0.9984 at B = 16."""
    return beta2 ** k


def halflife_examples(beta2: float, batch_size: int) -> float:
    """The half-life of beta2's moving average in examples, B ln(1/2) / ln(beta2) (Marek et al. 2025)."""
    return batch_size * math.log(0.5) / math.log(beta2)


def check_adam_rule(spec: StudySpec, batch_sizes: list[int]) -> None:
    """Raise the door's one-line error when the rule maps a beta outside (0, 1) at one of `batch_sizes` (Malladi's
    1 - k (1 - beta) turns negative for k >= 1 / (1 - beta))."""
    if spec.optimizer != "adam":
        return
    for b in batch_sizes:
        h = spec.adam_for(b)
        for name, value in (("beta1", h.beta1), ("beta2", h.beta2)):
            if not 0.0 < value < 1.0:
                base = getattr(spec, name)
                raise invalid(name, base, f"a value whose {spec.lr_scaling} image at batch size {b} (multiplier "
                              f"{b / spec.base_batch_size:g}) stays in (0, 1); here it is {value:.6g} (raise "
                              f"base_batch_size or {name})")


@dataclass(frozen=True)
class Schedule:
    """The batch size and the rate factor in force at each epoch of one run (epochs are 1-based; a milestone m
    changes epochs m + 1 on, as PyTorch's MultiStepLR stepped at each epoch's end). Pure arithmetic, no JAX."""

    batch_size: int
    """At epoch 1."""
    n_train: int
    lr_schedule: str = "constant"
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    batch_size_milestones: tuple[int, ...] = ()
    batch_size_gamma: float = 2.0
    batch_size_schedule: tuple[int, ...] | None = None

    def batch_size_at(self, epoch: int) -> int:
        """The batch size of epoch `epoch`."""
        k = sum(1 for m in self.batch_size_milestones if m < epoch)
        if k == 0:
            return self.batch_size
        size = self.batch_size_schedule[k - 1] if self.batch_size_schedule else \
            round(self.batch_size * self.batch_size_gamma ** k)
        return max(1, min(self.n_train, int(size)))

    def lr_factor(self, epoch: int, epochs: int) -> float:
        """The factor on the rate in epoch `epoch` of `epochs` (1.0 throughout for `constant`)."""
        if self.lr_schedule == "step":
            return float(self.lr_gamma ** sum(1 for m in self.lr_milestones if m < epoch))
        if self.lr_schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / epochs))
        if self.lr_schedule == "linear":
            return 1.0 - (epoch - 1) / epochs
        return 1.0

    def updates_through(self, epoch: int) -> int:
        """Optimizer updates after `epoch` epochs: the sum of ceil(N / B_e) over them."""
        if not self.batch_size_milestones:
            return epoch * updates_per_epoch(self.n_train, self.batch_size)
        return sum(updates_per_epoch(self.n_train, self.batch_size_at(e)) for e in range(1, epoch + 1))

    def batch_sizes_from(self, first: int, last: int) -> list[int]:
        """The distinct batch sizes of epochs `first`..`last`, in the order they come."""
        out: list[int] = []
        for b in [self.batch_size_at(first)] + [self.batch_size_at(m + 1) for m in self.batch_size_milestones
                                                 if first <= m + 1 <= last]:
            if b not in out:
                out.append(b)
        return out


NOT_IN_RUN_ID = ("batch_sizes", "seeds", "device", "gns", "gns_every", "sharpness", "eps_sharpness",
                 "eval_every_steps", "checkpoint_every", "sharpness_every")
"""Fields that do not change what a run computes (or that the id states separately)."""
LATER_FIELDS = {"beta1": ADAM_BETA1, "beta2": ADAM_BETA2, "sharpness_every": 0}
"""Fields added after studies were first written, with their defaults: left out of a run's id (and a sweep's
fingerprint) at their default, so existing studies keep their run ids."""


def identity_dict(spec: StudySpec) -> dict[str, Any]:
    """:meth:`StudySpec.to_dict` without the fields added later that hold their defaults
    (:func:`drop_later_defaults`)."""
    return drop_later_defaults(spec.to_dict())


OMITTED_AT_DEFAULT = ("context", "layers", "width", "heads", "budget_tokens")
"""Fields left out of a run's id while they hold their default, so ids of studies made before they existed stay."""


def run_id(spec: StudySpec, *, batch_size: int, seed_index: int) -> str:
    """A readable, content-derived id: the same spec, batch size and seed always name the same run."""
    defaults = StudySpec()
    content = {k: v for k, v in identity_dict(spec).items() if k not in NOT_IN_RUN_ID
               and not (k in OMITTED_AT_DEFAULT and getattr(spec, k) == getattr(defaults, k))}
    content.update(batch_size=batch_size, init_seed=spec.seed + seed_index, order_seed=spec.order_seed + seed_index)
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:8]
    return f"bs{batch_size}-seed{spec.seed + seed_index}-{digest}"


_LATER_DEFAULTS: dict[str, Any] = {"lr_schedule": "constant", "lr_milestones": [], "lr_gamma": 0.1,
                                   "batch_size_milestones": [], "batch_size_gamma": 2.0, "batch_size_schedule": None,
                                   "checkpoint_every": None}
"""Fields added after run ids were first pinned (tests/test_golden.py), with their defaults (as in to_dict)."""


def drop_later_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """`values` without the fields added later that hold their defaults: run ids and sweep fingerprints of
    studies made before those fields existed stay the same."""
    later = {**_LATER_DEFAULTS, **LATER_FIELDS}
    return {k: v for k, v in values.items() if not (k in later and v == later[k])}


# ---------------------------------------------------------------------------------------------------------
# Constraints as data: field -> (parser from CLI string or TOML value, description of what is allowed).


def _int_in(lo: int, hi: float = math.inf) -> tuple[Callable[[Any], int], str]:
    allowed = f"an integer >= {lo}" if hi == math.inf else f"an integer in [{lo}, {int(hi)}]"

    def parse(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int | str):
            raise TypeError
        n = int(v)
        if not lo <= n <= hi:
            raise ValueError
        return n

    return parse, allowed


def _float_in(lo: float, hi: float, *, open_lo: bool = False, open_hi: bool = False) -> tuple[Callable, str]:
    lb, rb = "(" if open_lo else "[", ")" if open_hi else "]"
    allowed = f"a number in {lb}{lo}, {'inf' if hi == math.inf else hi}{rb}"

    def parse(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float | str):
            raise TypeError
        x = float(v)
        if not math.isfinite(x) or x < lo or x > hi or (open_lo and x == lo) or (open_hi and x == hi):
            raise ValueError
        return x

    return parse, allowed


def _choice(*options: str) -> tuple[Callable[[Any], str], str]:
    def parse(v: Any) -> str:
        if v not in options:
            raise ValueError
        return str(v)

    return parse, "one of " + ", ".join(options)


def _bool() -> tuple[Callable[[Any], bool], str]:
    def parse(v: Any) -> bool:
        if isinstance(v, bool):
            return v
        if str(v).lower() in ("true", "1", "yes"):
            return True
        if str(v).lower() in ("false", "0", "no"):
            return False
        raise ValueError

    return parse, "true or false"


def _list_of(item: Callable[[Any], Any]) -> Callable[[Any], tuple]:
    def parse(v: Any) -> tuple:
        items = [s.strip() for s in v.split(",")] if isinstance(v, str) else v
        if isinstance(items, int | float) and not isinstance(items, bool):
            items = [items]
        if not isinstance(items, list | tuple) or not items:
            raise ValueError
        return tuple(item(x) for x in items)

    return parse


def _batch_size(v: Any) -> int | str:
    if v == FULL:
        return FULL
    return _int_in(1)[0](v)


def data_file_kind(dataset: str) -> str | None:
    """`CSV`, `Parquet` or `NPZ` for a data-file path (by its extension), None for a built-in dataset name."""
    return DATA_FILE_KINDS.get(Path(dataset).suffix.lower()) if dataset not in BUILTIN_DATASETS else None


def text_file(dataset: str) -> bool:
    """Whether `dataset` is the path of a text corpus (ends in .txt)."""
    return dataset not in BUILTIN_DATASETS and Path(dataset).suffix.lower() == TEXT_SUFFIX


def _dataset(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError
    if v in BUILTIN_DATASETS or data_file_kind(v) or text_file(v):
        return v
    raise ValueError


def _feature_name(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool):  # a TOML list of NPZ column indices
        return str(v)
    if not isinstance(v, str) or not v.strip():
        raise ValueError
    return v


def _feature_names(v: Any) -> tuple[str, ...]:
    names = _list_of(_feature_name)(v)
    if len(set(names)) != len(names):
        raise ValueError
    return names


TORCH_PREFIX = "torch:"


def split_model_reference(model: str) -> tuple[bool, str, str]:
    """`[torch:]TARGET:NAME` -> (whether `torch:` insists on PyTorch, TARGET (a module or a .py path), NAME).
    Raises ValueError if it is not of that form. Which backend trains it is decided when the factory is called
    (see :mod:`batchlab.models.registry`)."""
    explicit_torch = model.startswith(TORCH_PREFIX)
    rest = model[len(TORCH_PREFIX):] if explicit_torch else model
    target, sep, function = rest.rpartition(":")
    if not sep or not target.strip() or not function.isidentifier():
        raise ValueError(model)
    return explicit_torch, target, function


def _model(v: Any) -> str:
    if v in BUILTIN_MODELS:
        return str(v)
    if not isinstance(v, str) or ":" not in v:
        raise ValueError
    split_model_reference(v)
    return v


def _image_shape(v: Any) -> tuple[int, ...] | None:
    if v is None:
        return None
    shape = _list_of(_int_in(1)[0])(v)
    if len(shape) not in (2, 3):
        raise ValueError
    return shape if len(shape) == 3 else (*shape, 1)


def _milestones(v: Any) -> tuple[int, ...]:
    if isinstance(v, list | tuple) and not v:
        return ()
    values = _list_of(_int_in(1, 1_000_000)[0])(v)
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError
    return values


def _optional_str(v: Any) -> str | None:
    if v is None or (isinstance(v, str) and v):
        return v
    raise ValueError


CONSTRAINTS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "dataset": (_dataset, "one of " + ", ".join(BUILTIN_DATASETS) + ", or a path ending in .csv, .parquet, .npz "
                          "or .txt"),
    "target": (_optional_str, "a column name of the data file"),
    "features": (lambda v: None if v is None else _feature_names(v),
                 "distinct column names separated by commas, e.g. a,b,c (NPZ: column indices, e.g. 0,3,7)"),
    "task": _choice(*TASKS),
    "n_samples": _int_in(20, 10_000_000),
    "noise": _float_in(0.0, math.inf),
    "data_seed": _int_in(0),
    "test_fraction": _float_in(0.0, 1.0, open_lo=True, open_hi=True),
    "split_seed": _int_in(0),
    "standardize": _bool(),
    "model": (_model, ("mlp, logreg, cnn, transformer, or a user model: module:NAME or path/to/file.py:NAME (a JAX model or a "
                       "PyTorch nn.Module; torch:... insists on PyTorch)")),
    "hidden": (_list_of(_int_in(1)[0]), "positive integers separated by commas, e.g. 128 or 256,128"),
    "activation": _choice("relu", "tanh"),
    "image_shape": (_image_shape, "height,width or height,width,channels: positive integers, e.g. 8,8"),
    "optimizer": _choice("sgd", "momentum", "adam"),
    "lr": (_float_in(FLOAT32_TINY, FLOAT32_MAX)[0], "a number > 0 that float32 holds (1.2e-38 to 3.4e38)"),
    "momentum": _float_in(0.0, 1.0, open_hi=True),
    "lr_scaling": _choice(*LR_RULES),
    "beta1": _float_in(0.0, 1.0, open_lo=True, open_hi=True),
    "beta2": _float_in(0.0, 1.0, open_lo=True, open_hi=True),
    "base_batch_size": _int_in(1),
    "batch_sizes": (_list_of(_batch_size), "integers >= 1 and 'full', separated by commas, e.g. 1,32,full"),
    "epochs": _int_in(1, 1_000_000),
    "seeds": _int_in(1, MAX_SEEDS),
    "seed": _int_in(0, 2**31 - 1),
    "order_seed": _int_in(0, 2**31 - 1),
    "device": _choice("auto", "cpu", "gpu"),
    "warmup_epochs": _int_in(0, 1_000_000),
    "budget_steps": (lambda v: None if v is None else _int_in(1, MAX_BUDGET)[0](v),
                     f"an integer in [1, {MAX_BUDGET:.0e}] (updates per run)"),
    "budget_examples": (lambda v: None if v is None else _int_in(1, MAX_BUDGET)[0](v),
                        f"an integer in [1, {MAX_BUDGET:.0e}] (examples per run)"),
    "gns": _choice("auto", "exact", "estimate", "off"),
    "eval_every_steps": (lambda v: None if v is None else _int_in(1, 10**9)[0](v),
                         "an integer >= 1 (updates between evaluations)"),
    "gns_every": _int_in(1, 1_000_000),
    "sharpness": _bool(),
    "eps_sharpness": _bool(),
    "checkpoint_every": (lambda v: None if v is None else _int_in(1, 1_000_000)[0](v),
                         "an integer >= 1 (epochs between kept training states)"),
    "lr_schedule": _choice("constant", "step", "cosine", "linear"),
    "lr_milestones": (lambda v: _milestones(v), "increasing epochs >= 1 separated by commas, e.g. 10,20"),
    "lr_gamma": _float_in(0.0, FLOAT32_MAX, open_lo=True),
    "batch_size_milestones": (lambda v: _milestones(v), "increasing epochs >= 1 separated by commas, e.g. 10,20"),
    "batch_size_gamma": _float_in(0.0, 1e6, open_lo=True),
    "batch_size_schedule": (lambda v: None if v is None else _list_of(_int_in(1)[0])(v),
                            "positive integers separated by commas, one per batch_size_milestones entry"),
    "sharpness_every": _int_in(0, 1_000_000),
    "context": _int_in(1, 4096),
    "layers": _int_in(1, 64),
    "width": _int_in(1, 4096),
    "heads": _int_in(1, 256),
    "budget_tokens": (lambda v: None if v is None else _int_in(1, MAX_BUDGET)[0](v),
                      f"an integer in [1, {MAX_BUDGET:.0e}] (tokens per run)"),
}
assert set(CONSTRAINTS) == {f.name for f in dataclasses.fields(StudySpec)}


def build_spec(values: Mapping[str, Any]) -> StudySpec:
    """Validate raw values (CLI strings or TOML values) field by field and build the spec.

    Raises BatchlabError on the first unknown field or bad value, naming it and what is allowed.
    """
    parsed: dict[str, Any] = {}
    for name, raw in values.items():
        if name not in CONSTRAINTS:
            raise BatchlabError(f"{name}: unknown field; allowed fields: {', '.join(CONSTRAINTS)}")
        parse, allowed = CONSTRAINTS[name]
        try:
            parsed[name] = parse(raw)
        except (ValueError, TypeError, AttributeError):
            raise invalid(name, raw, allowed) from None
    spec = StudySpec(**parsed)
    kind = data_file_kind(spec.dataset)
    if kind is not None and not Path(spec.dataset).is_file():  # before the flags that only a file's contents need
        raise invalid("dataset", spec.dataset, f"a built-in dataset name or the path of an existing {kind} file")
    if spec.target is not None and kind is None:
        raise invalid("target", spec.target, "only with a CSV, Parquet or NPZ dataset (the built-in datasets have "
                      "their labels)")
    if kind in ("CSV", "Parquet") and spec.target is None:
        raise invalid("target", None, f"the name of the target column (class labels or values) of the {kind} file "
                      "(--target COLUMN)")
    if spec.task == "regression" and kind is None:
        raise invalid("task", spec.task, "classification or auto for a built-in dataset (their targets are classes)")
    if spec.image_shape is not None and spec.model != "cnn":
        raise invalid("image_shape", ",".join(map(str, spec.image_shape)), "only with model cnn")
    if spec.warmup_epochs and spec.lr_scaling in ("none", "beta2-halflife"):
        raise invalid("warmup_epochs", spec.warmup_epochs, "0 unless lr_scaling is linear, sqrt or adam-sde (warmup "
                      "ramps from lr to the scaled rate, Goyal et al. 2017)")
    _check_schedules(spec)
    if spec.budget_steps is not None and spec.budget_examples is not None:
        raise invalid("budget_examples", spec.budget_examples, "unset when budget_steps is set (one budget per study)")
    check_workload(spec)
    return spec


def _check_schedules(spec: StudySpec) -> None:
    """The schedule fields agree with each other (see the fields' docstrings)."""
    if spec.lr_schedule == "step" and not spec.lr_milestones:
        raise invalid("lr_milestones", "", "at least one epoch with lr_schedule step, e.g. 10,20")
    if spec.lr_milestones and spec.lr_schedule != "step":
        raise invalid("lr_milestones", ",".join(map(str, spec.lr_milestones)), "unset unless lr_schedule is step")
    if spec.batch_size_schedule is not None and len(spec.batch_size_schedule) != len(spec.batch_size_milestones):
        raise invalid("batch_size_schedule", ",".join(map(str, spec.batch_size_schedule)),
                      f"one batch size per batch_size_milestones entry ({len(spec.batch_size_milestones)})")
    if spec.warmup_epochs and spec.batch_size_milestones and spec.batch_size_milestones[0] < spec.warmup_epochs:
        raise invalid("batch_size_milestones", ",".join(map(str, spec.batch_size_milestones)),
                      f"epochs >= warmup_epochs ({spec.warmup_epochs}): the batch size changes after the warmup")
def check_workload(spec: StudySpec) -> None:
    """The text dataset and the transformer go together; their own fields must agree (issue 13)."""
    if spec.budget_tokens is not None:
        if not spec.is_text:
            raise invalid("budget_tokens", spec.budget_tokens, "only with dataset text or a .txt file (use "
                          "budget_examples or budget_steps otherwise)")
        if spec.budget_steps is not None or spec.budget_examples is not None:
            raise invalid("budget_tokens", spec.budget_tokens, "unset when budget_steps or budget_examples is set "
                          "(one budget per study)")
    if spec.is_text and spec.model in ("mlp", "logreg", "cnn"):
        raise invalid("model", spec.model, "transformer (or a user's JAX model) for text: its examples are "
                      "sequences with a next-character target at every position")
    if spec.model == "transformer" and not spec.is_text:
        raise invalid("model", spec.model, "mlp, logreg or cnn for this dataset (transformer needs dataset text "
                      "or a .txt file)")
    if spec.width % spec.heads:
        raise invalid("heads", spec.heads, f"a divisor of width {spec.width} (each head is width / heads wide)")


def read_toml(path: str | Path) -> dict[str, Any]:
    """The raw values of a TOML study file; unknown keys are reported by :func:`build_spec`."""
    p = Path(path)
    if not p.is_file():
        raise invalid("config", str(path), "the path of an existing TOML file")
    try:
        return tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BatchlabError(f"config: {path} is not valid TOML ({e})") from None
