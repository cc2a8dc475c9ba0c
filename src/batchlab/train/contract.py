"""What every training backend shares: the group, its records and checkpoints, and the one epoch loop.

A group is the replicas of one batch size trained together (one vmapped program in JAX, one torch.func vmap in
PyTorch). A backend (:mod:`batchlab.train.jax_engine`, :mod:`batchlab.train.torch_engine`) provides the
:class:`Backend` operations: the initial state, one epoch, an evaluation, the parameters. :class:`GroupRun`
drives any backend through the same loop: the evaluation before training (epoch 0), resuming from a checkpoint,
divergence (:func:`diverged_now`: a replica's first non-finite loss, or a train loss above BLOWUP_FACTOR times its
epoch-0 value), the probes' schedule with the training clock paused while they
measure, checkpoints, and a stop request honoured at an epoch boundary. Read :meth:`GroupRun.epochs_iter` top to
bottom: it is the training loop of batchlab.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from batchlab.spec import ADAM_BETA1, ADAM_BETA2, ADAM_EPS, BLOWUP_FACTOR, Schedule, scaled_lr

EVAL_CHUNK = 16_384
"""Examples per evaluation chunk: a full-set evaluation never holds more activations than this many rows."""

Metrics = list[np.ndarray]
"""(train loss, train metric, test loss, test metric), each (replicas,), on the host."""

def diverged_now(step_losses: np.ndarray, metrics: Metrics, initial_train_loss: np.ndarray | None) -> np.ndarray:
    """(replicas,) bool: which replicas' epoch shows divergence. A non-finite minibatch loss, train loss or test
    loss, or a train loss above BLOWUP_FACTOR x `initial_train_loss` (where that is finite and > 0; None: the
    non-finite rule only)."""
    finite = np.isfinite(step_losses).all(axis=1) & np.isfinite(metrics[0]) & np.isfinite(metrics[2])
    if initial_train_loss is None:
        return ~finite
    initial = np.asarray(initial_train_loss, float)
    with np.errstate(invalid="ignore"):
        blown = (initial > 0) & np.isfinite(initial) & (np.asarray(metrics[0], float) > BLOWUP_FACTOR * initial)
    return ~finite | blown


@dataclass(frozen=True)
class Group:
    """The replicas trained together: one batch size; per replica a learning rate and a seed pair.

    With `warmup_epochs` > 0 each replica's rate ramps linearly from `warmup_from` to its `lrs` value over that
    many epochs (Goyal et al. 2017's gradual warmup), then stays there."""

    batch_size: int
    lrs: tuple[float, ...]
    init_seeds: tuple[int, ...]
    order_seeds: tuple[int, ...]
    warmup_from: tuple[float, ...] | None = None
    warmup_epochs: int = 0
    schedule: Schedule | None = None
    """The rate and batch-size schedule (None: constant, the original path, bit for bit)."""
    lr_rules: tuple[tuple[float, int, str], ...] = ()
    """With a schedule, per replica (unscaled lr, base batch size, lr scaling): the rate follows the batch size
    in force by the replica's scaling rule, times the schedule's factor."""
    epochs: int = 0
    """With a schedule: the run's epochs (cosine and linear decay over them)."""
    branch_from: tuple[int, int] | None = None
    """A branch (`batchlab branch`): (the parent's epoch it starts from, the parent's updates by then). Its
    state comes from the parent's kept checkpoint, with this group's rates in place of the parent's."""
    adam: tuple[float, float, float] = (ADAM_BETA1, ADAM_BETA2, ADAM_EPS)
    """Adam's (beta1, beta2, eps) for every replica of the group (see `batchlab.spec.StudySpec.adam_for`)."""

    @property
    def n_replicas(self) -> int:
        return len(self.lrs)

    def batch_size_at(self, epoch: int) -> int:
        """The batch size of epoch `epoch` (1-based; epoch 0 reports the first one)."""
        return self.batch_size if self.schedule is None else self.schedule.batch_size_at(max(epoch, 1))

    def lrs_at(self, epoch: int) -> np.ndarray:
        """(replicas,) the rate in force in epoch `epoch` (before any warmup ramp): `lrs` without a schedule."""
        if self.schedule is None or not self.lr_rules:
            return np.asarray(self.lrs, float)
        b, e = self.batch_size_at(epoch), max(epoch, 1)
        factor = self.schedule.lr_factor(e, self.epochs)
        return np.asarray([scaled_lr(lr, b, base, rule) * factor for lr, base, rule in self.lr_rules], float)


@dataclass(frozen=True)
class Checkpoint:
    """A group's state after `epoch` epochs: enough to continue exactly where it stopped. `leaves` are the
    leaves of (params, optimizer state) with the replica axis first, as NumPy arrays."""

    epoch: int
    wall_time_s: float
    leaves: list[np.ndarray]
    active: np.ndarray
    initial_train_loss: np.ndarray | None = None
    """(replicas,) epoch-0 train losses, the reference of the blow-up rule (BLOWUP_FACTOR) after a resume; None:
    only non-finite losses count as divergence after it."""


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch produced for every replica of a group (arrays have the replica axis first)."""

    epoch: int
    """0 is the evaluation before any update."""
    updates: int
    """Optimizer steps taken so far by each replica: epoch * ceil(N / B)."""
    examples_seen: int
    """Training examples processed so far by each replica: epoch * N."""
    wall_time_s: float
    """Training time since the first update, results ready, compile time excluded."""
    step_losses: np.ndarray
    """(replicas, ceil(N/B)) minibatch losses of this epoch's steps; (replicas, 0) at epoch 0."""
    train_loss: np.ndarray
    train_acc: np.ndarray
    """Accuracy for classification, R^2 for regression (see `batchlab.models.tasks`); likewise `test_acc`."""
    test_loss: np.ndarray
    test_acc: np.ndarray
    diverged: np.ndarray
    """(replicas,) bool: the replica diverged in this epoch (:func:`diverged_now`: its first non-finite loss, or
    a train loss above BLOWUP_FACTOR x its epoch-0 train loss)."""
    active: np.ndarray
    """(replicas,) bool: the replica was still training in this epoch (not diverged before it)."""
    eval_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    """(n,) update counts (over the whole run) of the evaluations between epoch ends in this epoch (see
    `eval_every_steps`); empty without them."""
    eval_metrics: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 4), np.float32), repr=False)
    """(replicas, n, 4) train loss, train metric, test loss, test metric at those updates."""
    checkpoint: Checkpoint | None = field(default=None, repr=False)
    """The state after this epoch, when the caller asked for checkpoints."""
    probe: Any = None
    """What the group's `probe` measured at this epoch's parameters, when it was due."""
    batch_size: int = 0
    """The batch size in force this epoch (it changes under a batch-size schedule)."""
    lrs: np.ndarray | None = field(default=None, repr=False)
    """(replicas,) the rate in force at this epoch's last update (after warmup and schedule)."""
    sharpness: Any = None
    """What the group's `sharpness` probe measured at this epoch's parameters, when it was due."""


EVAL_CHUNK = 16_384
"""Examples per evaluation chunk: a full-set evaluation never holds more activations than this many rows."""


class Backend(Protocol):
    """One group's training in one framework. States are opaque to the loop: (params, optimizer state) in
    whatever form the backend keeps them, replica axis first."""

    asynchronous: bool
    """Whether :meth:`dispatch` returns before the epoch is computed (JAX's asynchronous dispatch), so the loop
    can queue the next epoch before reading this one on the host."""
    compile_time_s: float
    """One-off set-up cost (compilation), kept out of the training time."""

    def initial_state(self, initial_params: Any, resume: Checkpoint | None) -> Any:
        """The state before the first epoch: `initial_params` (stacked; None: the model's own initialisation
        from the group's init seeds), or exactly the state a checkpoint holds."""

    def prepare(self, state: Any, first_epoch: int) -> None:
        """Compile (or warm up) whatever the epochs need; adds its cost to `compile_time_s`."""

    def evaluate(self, state: Any) -> Metrics:
        """Full-set train and test loss and metric of every replica, on the host."""

    def dispatch(self, state: Any, epoch: int) -> tuple[Any, Any]:
        """Start epoch `epoch` (1-based) from `state`: (the state after it, its outputs for :meth:`fetch`)."""

    def fetch(self, outputs: Any) -> tuple[np.ndarray, Metrics, np.ndarray, np.ndarray]:
        """An epoch's (replicas, steps) minibatch losses, its end-of-epoch evaluation, and its evaluations between
        epoch ends (update counts (n,), metrics (replicas, n, 4)), on the host (waits for them)."""

    def block(self, state: Any) -> None:
        """Wait until `state` is computed."""

    def params(self, state: Any) -> Any:
        """The stacked parameters of `state`, as the probes and the final snapshot take them."""

    def leaves(self, state: Any) -> list[np.ndarray]:
        """Every array of `state` (parameters, then optimizer state), on the host, for a checkpoint."""


Probe = Callable[[Any, np.ndarray], Any]
"""probe(stacked params, active mask) -> per-replica measurements (e.g. the gradient noise scale)."""


@dataclass
class GroupRun:
    """A group's training on any backend: call :meth:`epochs_iter` (a generator of records) or :meth:`train`."""

    backend: Backend
    n_replicas: int
    epochs: int
    """Epochs to train (passes over the training set)."""
    n_train: int
    steps_per_epoch: int
    """Optimizer updates per epoch, ceil(N / B)."""
    probe: Probe | None = None
    """Called at epochs where :meth:`probe_due`; its time is excluded from the training time."""
    probe_every: int = 0
    group: Group | None = None
    """The group, for its batch size and rates in force per epoch (schedules); None: constant."""
    warmup_steps: int = 0
    """Updates of linear warmup (for the rate in force reported per epoch)."""
    sharpness: Probe | None = None
    """Curvature during training (`sharpness_every`), on the same schedule rule as `probe` with its own period;
    its time is excluded from the training time too."""
    sharpness_every: int = 0
    final_params: Any = None
    """The stacked parameters after the last epoch that ran."""
    finished: bool = False
    """After :meth:`epochs_iter`: True when every epoch ran (or every replica diverged), False after a stop."""

    @property
    def compile_time_s(self) -> float:
        return self.backend.compile_time_s

    def updates_through(self, epoch: int) -> int:
        """Optimizer updates after `epoch` epochs: the real ones under a batch-size schedule."""
        g = self.group
        if g is not None and g.branch_from is not None:
            start, before = g.branch_from
            return before + (epoch - start) * self.steps_per_epoch
        if g is None or g.schedule is None:
            return epoch * self.steps_per_epoch
        return g.schedule.updates_through(epoch)

    def rates(self, epoch: int) -> tuple[int, np.ndarray | None]:
        """(batch size, rates at the epoch's last update) in force in epoch `epoch` (epoch 0: the first rates)."""
        g = self.group
        if g is None:
            return 0, None
        lrs = g.lrs_at(epoch)
        if g.warmup_epochs and g.warmup_from is not None and self.warmup_steps:
            done = self.updates_through(epoch)
            ramp = min(1.0, max(done - 1, 0) / self.warmup_steps) if epoch else 0.0
            lrs = np.asarray(g.warmup_from, float) + (lrs - np.asarray(g.warmup_from, float)) * ramp
        return g.batch_size_at(epoch), lrs

    def probe_due(self, epoch: int) -> bool:
        """Epoch 0, every `probe_every` epochs, and the last epoch."""
        return self.probe_every > 0 and (epoch % self.probe_every == 0 or epoch == self.epochs)

    def sharpness_due(self, epoch: int) -> bool:
        """Epoch 0, every `sharpness_every` epochs, and the last epoch."""
        return self.sharpness is not None and self.sharpness_every > 0 and (
            epoch % self.sharpness_every == 0 or epoch == self.epochs)

    def _measure(self, params: Any, active: np.ndarray, epoch: int) -> tuple[Any, Any]:
        """(probe, sharpness) measurements due at `epoch` (None where not due)."""
        probe = self.probe(params, active) if self.probe is not None and self.probe_due(epoch) else None
        sharp = self.sharpness(params, active) if self.sharpness is not None and self.sharpness_due(epoch) else None
        return probe, sharp

    def epochs_iter(self, should_stop: Callable[[], bool] = lambda: False, *, initial_params: Any = None,
                    resume: Checkpoint | None = None, checkpoints: bool = False,
                    checkpoint_every_s: float | None = None, keep_every: int = 0) -> Iterator[EpochRecord]:
        """Yield epoch 0 (before any update; skipped when resuming) and each epoch after, up to `epochs`.
        `resume` continues exactly from a checkpoint; `checkpoints` attaches one to every record;
        `checkpoint_every_s` instead attaches one at most every that many seconds and to the record of the epoch
        where a stop request is honoured (so a stopped group can continue exactly); `keep_every` > 0 also attaches
        one at epoch 0 and every that many epochs (the states `checkpoint_every` keeps). Afterwards `finished` is False
        if `should_stop` asked to stop at an epoch boundary, True when all epochs ran."""
        backend = self.backend
        self.finished = False
        state = backend.initial_state(initial_params, resume)
        first = 1 if resume is None else resume.epoch + 1
        backend.prepare(state, first)
        active = np.ones(self.n_replicas, bool) if resume is None else resume.active.copy()
        wall_offset = 0.0 if resume is None else resume.wall_time_s
        self.final_params = backend.params(state)
        initial_loss = None if resume is None else resume.initial_train_loss

        last_snapshot = time.perf_counter()

        def snapshot(epoch: int, wall: float, state: Any, *, stopping: bool = False) -> Checkpoint | None:
            nonlocal last_snapshot
            due = checkpoint_every_s is not None and (stopping or time.perf_counter() - last_snapshot >= checkpoint_every_s)
            kept = keep_every > 0 and epoch % keep_every == 0
            if not (checkpoints or due or kept):
                return None
            last_snapshot = time.perf_counter()
            return Checkpoint(epoch, wall, backend.leaves(state), active.copy(), initial_loss)

        if resume is None:
            train_loss, train_acc, test_loss, test_acc = backend.evaluate(state)
            initial_loss = np.asarray(train_loss, float).copy()
            none = np.zeros(self.n_replicas, bool)
            probe, sharp = self._measure(self.final_params, active, 0)
            yield EpochRecord(epoch=0, updates=0, examples_seen=0, wall_time_s=0.0,
                              step_losses=np.zeros((self.n_replicas, 0), np.float32), train_loss=train_loss,
                              train_acc=train_acc, test_loss=test_loss, test_acc=test_acc, diverged=none,
                              active=active.copy(), eval_metrics=np.zeros((self.n_replicas, 0, 4), np.float32),
                              checkpoint=snapshot(0, 0.0, state), probe=probe, batch_size=self.rates(0)[0],
                              lrs=self.rates(0)[1], sharpness=sharp)

        t0 = time.perf_counter()
        pending = None
        for epoch in range(first, self.epochs + 1):
            state, outputs = pending if pending is not None else backend.dispatch(state, epoch)
            pending = None
            probing = (self.probe is not None and self.probe_due(epoch)) or self.sharpness_due(epoch)
            stop = epoch < self.epochs and should_stop()
            probe = sharp = None
            if probing:  # measure at fixed parameters, with the clock paused and nothing else queued
                backend.block(state)
                wall = wall_offset + time.perf_counter() - t0
                paused = time.perf_counter()
                probe, sharp = self._measure(backend.params(state), active, epoch)
                t0 += time.perf_counter() - paused
            # Queue epoch e+1 before reading epoch e on the host, so the device computes while the caller
            # stores: storage stays off the critical path. A stop request lets the queued epoch finish.
            if backend.asynchronous and epoch < self.epochs and not stop:
                pending = backend.dispatch(state, epoch + 1)
            step_losses, metrics, eval_steps, eval_metrics = backend.fetch(outputs)  # one device-to-host transfer
            if not probing:
                wall = wall_offset + time.perf_counter() - t0
            diverged = active & diverged_now(step_losses, metrics, initial_loss)
            active &= ~diverged
            self.final_params = backend.params(state)
            train_loss, train_acc, test_loss, test_acc = metrics
            batch_size, lrs = self.rates(epoch)
            yield EpochRecord(epoch=epoch, updates=self.updates_through(epoch), examples_seen=epoch * self.n_train,
                              wall_time_s=wall, step_losses=step_losses, train_loss=train_loss, train_acc=train_acc,
                              test_loss=test_loss, test_acc=test_acc, diverged=diverged, active=active | diverged,
                              eval_steps=eval_steps, eval_metrics=eval_metrics,
                              checkpoint=snapshot(epoch, wall, state, stopping=stop), probe=probe,
                              batch_size=batch_size, lrs=lrs, sharpness=sharp)
            if stop:
                return
            if not active.any():
                break
        self.finished = True

    def train(self, on_epoch: Callable[[EpochRecord], None], should_stop: Callable[[], bool] = lambda: False, *,
              initial_params: Any = None, resume: Checkpoint | None = None, checkpoints: bool = False) -> bool:
        """Run :meth:`epochs_iter`, handing each record to `on_epoch`; returns whether all epochs ran."""
        for record in self.epochs_iter(should_stop, initial_params=initial_params, resume=resume,
                                       checkpoints=checkpoints):
            on_epoch(record)
        return self.finished


def eval_points(epoch: int, steps_per_epoch: int, every: int | None, *, before: int | None = None) -> np.ndarray:
    """The update counts (over the whole run, 1-based) inside epoch `epoch` at which an evaluation between epoch
    ends is due: the multiples of `every` after its first update and before its last (the epoch's own evaluation
    covers its last update). `before`: the updates before this epoch, when batch sizes differ between epochs."""
    if not every:
        return np.zeros(0, np.int64)
    start_at = (epoch - 1) * steps_per_epoch if before is None else before
    first, last = start_at + 1, start_at + steps_per_epoch - 1
    start = -(-first // every) * every
    return np.arange(start, last + 1, every, dtype=np.int64)
