"""The PyTorch backend: a user's `nn.Module` trained under the same controlled comparison as the JAX engine.

`--model torch:path/to/file.py:function` (or `torch:module:function`) names a factory called as
`function(n_features=F, n_classes=K)` that returns an `nn.Module` mapping a batch (examples, F) to logits
(examples, K). Replica i's initial weights are whatever the factory builds after `torch.manual_seed(init_seed)`
(inside `torch.random.fork_rng`, so torch's global generator is left as it was): they depend on the seed
only, as in the JAX engine, and are recorded in `init/<run_id>.npz` under the module's parameter names.

What matches the JAX engine (:mod:`batchlab.engine`), so the two backends can be compared run for run:

- the data order: epoch e of order seed s is `engine.epoch_permutation(s, e, N)`, batches are consecutive
  chunks of it, the last partial batch is kept and its loss is the mean over its real examples;
- the optimizers, written out as optax defines them (not torch.optim): `sgd` p <- p - lr g; `momentum`
  (optax.sgd(lr, momentum=m), the same as torch.optim.SGD with dampening 0) v <- g + m v, p <- p - lr v with
  v starting at 0; `adam` (optax.adam, b1 0.9, b2 0.999, eps 1e-8 outside the square root, as torch.optim.Adam)
  m <- b1 m + (1 - b1) g, v <- b2 v + (1 - b2) g^2, p <- p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps);
  warmup ramps the rate per step as the engine does;
- the records: per-step minibatch losses, full-set train and test loss and accuracy per epoch (in chunks of
  `engine.EVAL_CHUNK` rows), divergence at the first non-finite loss, checkpoints to resume from.

How: all replicas of a group train together, `torch.func.vmap` over `torch.func.grad_and_value` of a
`torch.func.functional_call` of one module with each replica's parameters (no Python loop over replicas). The
module is in training mode for updates and evaluation mode for the full-set losses; vmap draws different
random numbers per replica (dropout). Modules with buffers (BatchNorm's running statistics) are refused: a
buffer updated in place cannot be vmapped over replicas. PyTorch runs eagerly: `compile_time_s` is the one-off
cost of the first calls (torch.func's lazy set-up, ~1-2 s), kept out of the training time as the JAX engine's
compile time is. The gradient noise scale and the curvature at the end are measured as for JAX models, by
:mod:`batchlab.torch_measure`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from batchlab.data import Dataset
from batchlab.engine import EVAL_CHUNK, Checkpoint, EpochLoop, EpochRecord, Group, epoch_permutation
from batchlab.errors import BatchlabError, invalid
from batchlab.spec import updates_per_epoch
from batchlab.user_models import call_factory, resolve_factory

ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8
"""optax.adam's defaults (torch.optim.Adam's too)."""


def import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise BatchlabError("model: a torch: model needs PyTorch, which is not installed; allowed: "
                            "pip install 'batchlab[torch]'") from None
    return torch


def torch_device(name: str) -> Any:
    """`auto` (CUDA when torch sees it), `cpu`, or `gpu` (an error if torch sees no CUDA device)."""
    torch = import_torch()
    if name == "gpu" and not torch.cuda.is_available():
        raise invalid("device", name, "auto or cpu: this PyTorch sees no CUDA device")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class TorchModel:
    """A user's PyTorch model: the factory and the sizes it is called with."""

    name: str
    """The reference, `torch:...`."""
    factory: Callable[..., Any]
    n_features: int
    n_classes: int
    summary: str = ""
    layer_sizes: tuple[int, ...] = ()

    def __repr__(self) -> str:
        return f"TorchModel({self.name!r}, {self.summary})"

    def build(self, init_seed: int) -> Any:
        """The module as the factory builds it after torch.manual_seed(init_seed); torch's RNG is restored after."""
        torch = import_torch()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            return call_factory(self.name, self.factory, n_features=self.n_features, n_classes=self.n_classes)

    def init_replicas(self, init_seeds: tuple[int, ...]) -> dict[str, np.ndarray]:
        """Initial parameters of each replica, {name: float32 array with the replica axis first}."""
        modules = [dict(self.build(s).named_parameters()) for s in init_seeds]
        return {name: np.stack([m[name].detach().cpu().numpy().astype(np.float32) for m in modules])
                for name in modules[0]}

    def footprint(self, n_features: int) -> tuple[int, int]:
        """(parameters, floats output per example by all submodules in one forward pass)."""
        torch = import_torch()
        module = self.build(0)
        floats = [0]

        def count(_module, _inputs, output):
            floats[0] += output.numel() if isinstance(output, torch.Tensor) else 0

        hooks = [m.register_forward_hook(count) for m in module.modules()]
        with torch.no_grad():
            module(torch.zeros(1, n_features))
        for h in hooks:
            h.remove()
        return sum(p.numel() for p in module.parameters()), floats[0]


def load_torch_model(reference: str, *, n_features: int, n_classes: int, device: str = "auto") -> TorchModel:
    """The factory `reference` names, called once and checked: it returns an nn.Module without buffers, with float
    parameters, whose output on a (2, n_features) batch is (2, n_classes). Raises BatchlabError otherwise."""
    torch = import_torch()
    torch_device(device)
    factory = resolve_factory(reference)
    model = TorchModel(reference, factory, n_features, n_classes)
    module = model.build(0)
    if not isinstance(module, torch.nn.Module):
        raise BatchlabError(f"model: {reference} returned a {type(module).__module__}.{type(module).__name__}; "
                            "allowed: a torch.nn.Module")
    buffers = [name for name, _ in module.named_buffers()]
    if buffers:
        raise BatchlabError(f"model: {reference} has buffers ({', '.join(buffers[:3])}); allowed: a module without "
                            "buffers (BatchNorm's running statistics cannot be trained per replica; use LayerNorm)")
    params = list(module.parameters())
    if not params or not all(p.is_floating_point() for p in params):
        raise BatchlabError(f"model: {reference} has no float parameters; allowed: a module with trainable weights")
    try:
        with torch.no_grad():
            out = module(torch.zeros(2, n_features))
    except Exception as e:  # noqa: BLE001 (the user's code: any error is theirs to fix, in one line)
        raise BatchlabError(f"model: {reference}: its forward on a batch of shape (2, {n_features}) failed: "
                            f"{type(e).__name__}: {' '.join(str(e).split())}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, n_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BatchlabError(f"model: {reference}: its forward returned {shape} for a batch of shape "
                            f"(2, {n_features}); allowed: logits of shape (2, {n_classes}) (examples, classes)")
    n_params = sum(p.numel() for p in params)
    return TorchModel(reference, factory, n_features, n_classes, f"PyTorch {type(module).__name__}, "
                      f"{n_params:,} parameters")


def task_loss(outputs: Any, y: Any, *, regression: bool) -> Any:
    """Per-example loss, as :mod:`batchlab.tasks` defines it: cross-entropy of the logits, or the squared error
    of the one output for regression; `outputs` (..., outputs), `y` (...)."""
    torch = import_torch()
    if regression:
        return (outputs[..., 0] - y) ** 2
    return torch.nn.functional.cross_entropy(outputs.flatten(0, -2), y.flatten(), reduction="none").reshape(y.shape)


class Optimizer:
    """optax's sgd, momentum (trace) and adam as updates of stacked tensors (replica axis first); the learning
    rate is per replica. State is a list of tensors in a fixed order (for checkpoints)."""

    def __init__(self, name: str, momentum: float, params: dict[str, Any]):
        torch = import_torch()
        self.name, self.momentum, self.names = name, momentum, list(params)
        zeros = [torch.zeros_like(params[n]) for n in self.names]
        count = torch.zeros(next(iter(params.values())).shape[0], dtype=torch.int32, device=zeros[0].device)
        self.state: list[Any] = {"sgd": [], "momentum": zeros,
                                 "adam": [count, *zeros, *[z.clone() for z in zeros]]}[name]

    def step(self, params: dict[str, Any], grads: dict[str, Any], lr: Any) -> dict[str, Any]:
        """New parameters after one update with per-replica learning rates `lr` (replicas,)."""
        torch = import_torch()

        def per_replica(v: Any, like: Any) -> Any:
            return v.reshape(-1, *([1] * (like.dim() - 1)))

        if self.name == "sgd":
            directions = [grads[n] for n in self.names]
        elif self.name == "momentum":
            self.state = [grads[n] + self.momentum * t for n, t in zip(self.names, self.state)]
            directions = self.state
        else:
            k = len(self.names)
            count, mu, nu = self.state[0] + 1, self.state[1:1 + k], self.state[1 + k:]
            mu = [(1 - ADAM_B1) * grads[n] + ADAM_B1 * m for n, m in zip(self.names, mu)]
            nu = [(1 - ADAM_B2) * grads[n] ** 2 + ADAM_B2 * v for n, v in zip(self.names, nu)]
            # Bias corrections 1 - b^t in float32, as optax computes them (torch.optim: in float64).
            b1 = 1 - torch.tensor(ADAM_B1, dtype=torch.float32, device=count.device) ** count.float()
            b2 = 1 - torch.tensor(ADAM_B2, dtype=torch.float32, device=count.device) ** count.float()
            directions = [(m / per_replica(b1, m)) / (torch.sqrt(v / per_replica(b2, v)) + ADAM_EPS)
                          for m, v in zip(mu, nu)]
            self.state = [count, *mu, *nu]
        return {n: params[n] + (-per_replica(lr, d)) * d for n, d in zip(self.names, directions)}


@dataclass
class TorchGroupRun(EpochLoop):
    """A group's training in PyTorch, with :class:`batchlab.engine.GroupRun`'s interface (`epochs_iter`,
    `compile_time_s`, `final_params`, `finished`); `final_params` is {name: array (replicas, ...)}."""

    model: TorchModel
    data: Dataset
    group: Group
    epochs: int
    optimizer: str
    momentum: float
    device: str = "auto"
    probe: Callable[[Any, np.ndarray], Any] | None = None
    """As GroupRun's: called as probe(stacked params {name: (replicas, ...)}, active mask) at epochs where
    `probe_due(epoch)`, its time excluded from the training time (see :mod:`batchlab.torch_measure`)."""
    probe_every: int = 0
    compile_time_s: float = 0.0
    final_params: Any = None
    finished: bool = False

    def _probe(self, epoch: int, params: Any, active: np.ndarray) -> Any:
        return self.probe(params, active) if self.probe is not None and self.probe_due(epoch) else None

    def epochs_iter(self, should_stop: Callable[[], bool] = lambda: False, *, initial_params: Any = None,
                    resume: Checkpoint | None = None, checkpoints: bool = False) -> Iterator[EpochRecord]:
        """As :meth:`batchlab.engine.GroupRun.epochs_iter`. `initial_params` ({name: (replicas, ...)}, e.g.
        converted from a JAX model's) replaces the factory's initial weights."""
        torch = import_torch()
        from torch.func import functional_call, grad_and_value, vmap

        g, d = self.group, self.data
        dev = torch_device(self.device)

        def tensor(a: Any, dtype: Any = None) -> Any:  # a writable copy: JAX's and memory-mapped arrays are not
            return torch.from_numpy(np.array(a, dtype=dtype, copy=True)).to(dev)

        n, steps = d.n_train, updates_per_epoch(d.n_train, g.batch_size)
        padded = steps * g.batch_size
        self.finished = False
        module = self.model.build(g.init_seeds[0]).to(dev)
        start = self.model.init_replicas(g.init_seeds) if initial_params is None else initial_params
        params = {k: tensor(v, np.float32) for k, v in start.items()}
        opt = Optimizer(self.optimizer, self.momentum, params)
        if resume is not None:
            k = len(params)
            params = {name: tensor(a) for name, a in zip(params, resume.leaves[:k])}
            opt.state = [tensor(a) for a in resume.leaves[k:]]
        x_train, x_test = (tensor(a, np.float32) for a in (d.x_train, d.x_test))
        regression = getattr(d, "task", "classification") == "regression"
        y_train, y_test = (tensor(a, np.float32 if regression else np.int64) for a in (d.y_train, d.y_test))
        lr_to = torch.tensor(g.lrs, dtype=torch.float32, device=dev)
        lr_from = torch.tensor(g.warmup_from or g.lrs, dtype=torch.float32, device=dev)
        warmup_steps = g.warmup_epochs * steps

        def loss(outputs, y):
            return task_loss(outputs, y, regression=regression)

        def minibatch_loss(p, x, y, mask):
            return torch.sum(loss(functional_call(module, p, (x,)), y) * mask) / torch.sum(mask)

        step_fn = vmap(grad_and_value(minibatch_loss), in_dims=(0, 0, 0, None), randomness="different")

        def evaluate(p, x, y):
            """(mean loss, metric) per replica on (x, y), EVAL_CHUNK rows at a time; the metric is accuracy, or
            R^2 = 1 - MSE / Var(y) for regression."""
            module.eval()
            loss_sum = torch.zeros(g.n_replicas, dtype=torch.float64, device=dev)
            correct = torch.zeros(g.n_replicas, dtype=torch.float64, device=dev)
            with torch.no_grad():
                for s in range(0, len(y), EVAL_CHUNK):
                    xc, yc = x[s:s + EVAL_CHUNK], y[s:s + EVAL_CHUNK]
                    outputs = vmap(lambda q, xc=xc: functional_call(module, q, (xc,)))(p)
                    loss_sum += loss(outputs, yc.expand(g.n_replicas, -1)).sum(1).double()
                    if not regression:
                        correct += (outputs.argmax(-1) == yc).sum(1).double()
            module.train()
            mean_loss = loss_sum / len(y)
            metric = 1 - mean_loss / torch.var(y.double(), correction=0) if regression else correct / len(y)
            return mean_loss.float().cpu().numpy(), metric.float().cpu().numpy()

        def metrics(p):
            return [*evaluate(p, x_train, y_train), *evaluate(p, x_test, y_test)]

        def snapshot(epoch: int, wall: float, active: np.ndarray) -> Checkpoint | None:
            if not checkpoints:
                return None
            leaves = [t.detach().cpu().numpy().copy() for t in [*params.values(), *opt.state]]
            return Checkpoint(epoch, wall, leaves, active.copy())

        def numpy_params():
            return {k: v.detach().cpu().numpy() for k, v in params.items()}

        first = 1 if resume is None else resume.epoch + 1
        active = np.ones(g.n_replicas, bool) if resume is None else resume.active.copy()
        wall_offset = 0.0 if resume is None else resume.wall_time_s
        self.final_params = numpy_params()
        module.train()
        if resume is None:
            none = np.zeros(g.n_replicas, bool)
            yield EpochRecord(0, 0, 0, 0.0, np.zeros((g.n_replicas, 0), np.float32), *metrics(params),
                              diverged=none, active=active.copy(), checkpoint=snapshot(0, 0.0, active),
                              probe=self._probe(0, self.final_params, active))
        mask = tensor((np.arange(padded) < n).reshape(steps, g.batch_size), np.float32)
        # Eager PyTorch compiles nothing, but its first torch.func call (lazy imports, ~1-2 s) and the first data
        # permutation (a JAX program) are one-off costs: measured here, on results thrown away, as compile time.
        t0 = time.perf_counter()
        np.asarray(epoch_permutation(g.order_seeds[0], max(first, 1), n))
        step_fn(params, x_train[:g.batch_size].expand(g.n_replicas, -1, -1),
                y_train[:g.batch_size].expand(g.n_replicas, -1), mask[0])
        self.compile_time_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for epoch in range(first, self.epochs + 1):
            perms = np.stack([np.asarray(epoch_permutation(s, epoch, n)) for s in g.order_seeds])
            index = np.concatenate([perms, np.zeros((g.n_replicas, padded - n), perms.dtype)], axis=1)
            index = tensor(index.reshape(g.n_replicas, steps, g.batch_size), np.int64)
            losses = torch.empty(g.n_replicas, steps, device=dev)
            for s in range(steps):
                t = (epoch - 1) * steps + s
                lr = lr_from + (lr_to - lr_from) * min(1.0, t / warmup_steps) if warmup_steps else lr_to
                grads, losses[:, s] = step_fn(params, x_train[index[:, s]], y_train[index[:, s]], mask[s])
                params = opt.step(params, grads, lr)
            step_losses = losses.detach().cpu().numpy()  # the one device-to-host transfer of the epoch's steps
            epoch_metrics = metrics(params)
            wall = wall_offset + time.perf_counter() - t0
            self.final_params = numpy_params()
            paused = time.perf_counter()  # probes measure at fixed parameters, off the training clock
            probe = self._probe(epoch, self.final_params, active)
            t0 += time.perf_counter() - paused
            finite = np.isfinite(step_losses).all(axis=1) & np.isfinite(epoch_metrics[0]) & \
                np.isfinite(epoch_metrics[2])
            diverged = active & ~finite
            active &= ~diverged
            stop = epoch < self.epochs and should_stop()
            yield EpochRecord(epoch, epoch * steps, epoch * n, wall, step_losses, *epoch_metrics, diverged=diverged,
                              active=active | diverged, checkpoint=snapshot(epoch, wall, active), probe=probe)
            if stop:
                return
            if not active.any():
                break
        self.finished = True


def mlp_params_to_torch(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """batchlab's built-in MLP parameters ({"layer00/w": (fan_in, fan_out), ...}, optionally with a leading
    replica axis) as the parameters of `nn.Sequential(Linear, activation, Linear, ...)` ({"0.weight": (out, in),
    "0.bias", "2.weight", ...}): the way to start a PyTorch twin from batchlab's initial weights."""
    layers = sorted({k.split("/")[0] for k in flat})
    out = {}
    for i, layer in enumerate(layers):
        out[f"{2 * i}.weight"] = np.swapaxes(flat[f"{layer}/w"], -1, -2)
        out[f"{2 * i}.bias"] = flat[f"{layer}/b"]
    return out
