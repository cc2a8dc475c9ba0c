"""The training engine: one jit-compiled `lax.scan` per epoch, all replicas of a batch size vmapped together.

Read it top to bottom: the optimizer, the minibatch step, the epoch (a scan over the minibatches of one
shuffling, then a full evaluation), the vmap over replicas, and the loop over epochs that hands each epoch's
records to the caller. Data live on the device once; step losses stay there during the epoch and cross to the
host once per epoch. The engine knows nothing of SQLite or figures: it yields :class:`EpochRecord`s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from batchlab.data import Dataset
from batchlab.models import Model
from batchlab.spec import updates_per_epoch
from batchlab.tasks import CLASSIFICATION, Task, get_task

INIT_TAG, ORDER_TAG = 0, 1  # fold-in tags: init and data-order streams stay independent even for equal seeds


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

    @property
    def n_replicas(self) -> int:
        return len(self.lrs)


@dataclass(frozen=True)
class Checkpoint:
    """A group's state after `epoch` epochs: enough to continue exactly where it stopped. `leaves` are the
    leaves of (params, optimizer state) with the replica axis first, as NumPy arrays."""

    epoch: int
    wall_time_s: float
    leaves: list[np.ndarray]
    active: np.ndarray


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
    """Accuracy for classification, R^2 for regression (see `batchlab.tasks`); likewise `test_acc`."""
    test_loss: np.ndarray
    test_acc: np.ndarray
    diverged: np.ndarray
    """(replicas,) bool: the replica met its first non-finite loss in this epoch."""
    active: np.ndarray
    """(replicas,) bool: the replica was still training in this epoch (not diverged before it)."""
    checkpoint: Checkpoint | None = field(default=None, repr=False)
    """The state after this epoch, when the caller asked for checkpoints."""
    probe: Any = None
    """What the group's `probe` measured at this epoch's parameters, when it was due."""


def make_optimizer(name: str, *, momentum: float) -> Callable[[jax.Array], optax.GradientTransformation]:
    """A factory lr -> optax transform whose learning rate lives in its state, so it can differ per replica
    and change per step (warmup)."""
    factories = {
        "sgd": lambda learning_rate: optax.sgd(learning_rate),
        "momentum": lambda learning_rate: optax.sgd(learning_rate, momentum=momentum),
        "adam": lambda learning_rate: optax.adam(learning_rate),
    }
    return optax.inject_hyperparams(factories[name])


def init_replicas(model: Model, init_seeds: tuple[int, ...]) -> Any:
    """Initial parameters of each replica, stacked on a leading axis. They depend on the seed only, so every
    batch size of a seed starts from identical parameters."""
    keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), INIT_TAG) for s in init_seeds])
    return jax.vmap(model.init)(keys)


def epoch_permutation(order_seed: int | jax.Array, epoch: int | jax.Array, n: int) -> jax.Array:
    """The shuffling of epoch `epoch` (1-based): a function of the order seed and epoch only, not the batch size."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(order_seed), ORDER_TAG), epoch)
    return jax.random.permutation(key, n)


EVAL_CHUNK = 16_384
"""Examples per evaluation chunk: a full-set evaluation never holds more activations than this many rows."""


def evaluate(model: Model, params: Any, x: jax.Array, y: jax.Array, *,
             task: Task = CLASSIFICATION) -> tuple[jax.Array, jax.Array]:
    """Mean loss and metric of `params` on (x, y) for the task (cross-entropy and accuracy, or squared error and
    R^2), in chunks of EVAL_CHUNK rows (`lax.map`) so that memory stays flat however large the data."""
    n = x.shape[0]
    if n <= EVAL_CHUNK:
        outputs = model.apply(params, x)
        return jnp.mean(task.loss(outputs, y)), task.metric(jnp.mean(task.score(outputs, y)), y)
    chunks = -(-n // EVAL_CHUNK)
    pad = chunks * EVAL_CHUNK - n
    xs = jnp.concatenate([x, jnp.zeros((pad, x.shape[1]), x.dtype)]).reshape(chunks, EVAL_CHUNK, x.shape[1])
    ys = jnp.concatenate([y, jnp.zeros(pad, y.dtype)]).reshape(chunks, EVAL_CHUNK)
    mask = (jnp.arange(chunks * EVAL_CHUNK) < n).reshape(chunks, EVAL_CHUNK)

    def one(batch):
        xc, yc, mc = batch
        outputs = model.apply(params, xc)
        return jnp.sum(task.loss(outputs, yc) * mc), jnp.sum(task.score(outputs, yc) * mc)

    loss_sums, score_sums = jax.lax.map(one, (xs, ys, mask))
    return jnp.sum(loss_sums) / n, task.metric(jnp.sum(score_sums) / n, y)


def build_epoch_fn(model: Model, optimizer: Callable, *, n_train: int, batch_size: int,
                   warmup_steps: int = 0, task: Task = CLASSIFICATION) -> Callable:
    """The vmapped function (params, opt_state, order_seed, lr_from, lr_to, epoch, data) -> one epoch's results."""
    steps = updates_per_epoch(n_train, batch_size)
    padded = steps * batch_size

    def minibatch_loss(params, x, y, mask):
        # Mean over the real examples only: the padded tail of the last, partial batch has mask 0.
        return jnp.sum(task.loss(model.apply(params, x), y) * mask) / jnp.sum(mask)

    def epoch(params, opt_state, order_seed, lr_from, lr_to, epoch_idx, x_train, y_train, x_test, y_test):
        perm = epoch_permutation(order_seed, epoch_idx, n_train)
        index = jnp.concatenate([perm, jnp.zeros(padded - n_train, perm.dtype)]).reshape(steps, batch_size)
        mask = (jnp.arange(padded) < n_train).astype(jnp.float32).reshape(steps, batch_size)
        step_numbers = (epoch_idx - 1) * steps + jnp.arange(steps)

        def step(carry, batch):
            params, opt_state = carry
            idx, m, t = batch
            if warmup_steps:  # linear ramp lr_from -> lr_to over the first warmup_steps updates
                lr = lr_from + (lr_to - lr_from) * jnp.minimum(1.0, t / warmup_steps)
                opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": lr})
            loss, grads = jax.value_and_grad(minibatch_loss)(params, x_train[idx], y_train[idx], m)
            updates, opt_state = optimizer(0.0).update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), step_losses = jax.lax.scan(step, (params, opt_state), (index, mask, step_numbers))
        metrics = (*evaluate(model, params, x_train, y_train, task=task),
                   *evaluate(model, params, x_test, y_test, task=task))
        return params, opt_state, step_losses, metrics

    return jax.vmap(epoch, in_axes=(0, 0, 0, 0, 0, None, None, None, None, None))


def build_eval_fn(model: Model, task: Task = CLASSIFICATION) -> Callable:
    """Vmapped (params, data) -> (train loss, train metric, test loss, test metric) per replica."""

    def evaluate_all(params, x_train, y_train, x_test, y_test):
        return (*evaluate(model, params, x_train, y_train, task=task),
                *evaluate(model, params, x_test, y_test, task=task))

    return jax.vmap(evaluate_all, in_axes=(0, None, None, None, None))


class EpochLoop:
    """What every backend's group run shares (the JAX engine here, `batchlab.torch_backend`): when probes are due,
    and `train`, a callback form of the backend's `epochs_iter` generator."""

    epochs: int
    probe_every: int
    finished: bool

    def probe_due(self, epoch: int) -> bool:
        """Epoch 0, every `probe_every` epochs, and the last epoch."""
        return self.probe_every > 0 and (epoch % self.probe_every == 0 or epoch == self.epochs)

    def epochs_iter(self, should_stop: Callable[[], bool] = lambda: False, **kwargs: Any) -> Iterator[EpochRecord]:
        raise NotImplementedError

    def train(self, on_epoch: Callable[[EpochRecord], None], should_stop: Callable[[], bool] = lambda: False, *,
              initial_params: Any = None, resume: Checkpoint | None = None, checkpoints: bool = False) -> bool:
        """Run `epochs_iter`, handing each record to `on_epoch`; returns whether all epochs ran."""
        for record in self.epochs_iter(should_stop, initial_params=initial_params, resume=resume,
                                       checkpoints=checkpoints):
            on_epoch(record)
        return self.finished


@dataclass
class GroupRun(EpochLoop):
    """A group's training: compile once, then epochs. Call :meth:`train`."""

    model: Model
    data: Dataset
    group: Group
    epochs: int
    optimizer: str
    momentum: float
    device: jax.Device
    probe: Callable[[Any, np.ndarray], Any] | None = None
    """Called as probe(stacked params, active mask) at epochs where `probe_due(epoch)`; its time is excluded
    from the training wall time (used for the gradient noise scale)."""
    probe_every: int = 0
    compile_time_s: float = 0.0
    final_params: Any = None
    finished: bool = False

    def epochs_iter(self, should_stop: Callable[[], bool] = lambda: False, *, initial_params: Any = None,
                    resume: Checkpoint | None = None, checkpoints: bool = False) -> Iterator[EpochRecord]:
        """Yield epoch 0 (before any update; skipped when resuming) and each epoch after, up to `epochs`.
        `resume` continues exactly from a checkpoint; `checkpoints` attaches one to every record. Afterwards
        `finished` is False if `should_stop` asked to stop at an epoch boundary, True when all epochs ran."""
        g, d = self.group, self.data
        task = get_task(d.task)
        steps = updates_per_epoch(d.n_train, g.batch_size)
        self.finished = False
        with jax.default_device(self.device):
            arrays = [jax.device_put(a, self.device) for a in (d.x_train, d.y_train, d.x_test, d.y_test)]
            opt = make_optimizer(self.optimizer, momentum=self.momentum)
            lr_to = jnp.asarray(g.lrs, jnp.float32)
            lr_from = jnp.asarray(g.warmup_from or g.lrs, jnp.float32)
            params = initial_params if initial_params is not None else init_replicas(self.model, g.init_seeds)
            opt_state = jax.vmap(lambda p, lr: opt(lr).init(p))(params, lr_from if g.warmup_epochs else lr_to)
            treedef = jax.tree_util.tree_structure((params, opt_state))
            if resume is not None:
                params, opt_state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in resume.leaves])
            per_replica = (jnp.asarray(g.order_seeds, jnp.uint32), lr_from, lr_to)

            t0 = time.perf_counter()
            epoch_fn = jax.jit(build_epoch_fn(self.model, opt, n_train=d.n_train, batch_size=g.batch_size,
                                              warmup_steps=g.warmup_epochs * steps, task=task))
            compiled = epoch_fn.lower(params, opt_state, *per_replica, np.int32(1), *arrays).compile()
            self.compile_time_s = time.perf_counter() - t0

            def snapshot(epoch: int, wall: float, params, opt_state, active) -> Checkpoint | None:
                if not checkpoints:
                    return None
                leaves = [np.asarray(a) for a in jax.tree_util.tree_leaves((params, opt_state))]
                return Checkpoint(epoch, wall, leaves, active.copy())

            first = 1 if resume is None else resume.epoch + 1
            active = np.ones(g.n_replicas, bool) if resume is None else resume.active.copy()
            wall_offset = 0.0 if resume is None else resume.wall_time_s
            self.final_params = params
            if resume is None:
                t0 = time.perf_counter()
                metrics = [np.asarray(m) for m in jax.jit(build_eval_fn(self.model, task))(params, *arrays)]
                self.compile_time_s += time.perf_counter() - t0  # evaluation compile, once per group
                none = np.zeros(g.n_replicas, bool)
                probe = self.probe(params, active) if self.probe is not None and self.probe_due(0) else None
                yield EpochRecord(0, 0, 0, 0.0, np.zeros((g.n_replicas, 0), np.float32), *metrics,
                                  diverged=none, active=active.copy(),
                                  checkpoint=snapshot(0, 0.0, params, opt_state, active), probe=probe)

            def dispatch(epoch, params, opt_state):  # asynchronous: returns device futures at once
                return compiled(params, opt_state, *per_replica, np.int32(epoch), *arrays)

            t0 = time.perf_counter()
            pending = dispatch(first, params, opt_state) if first <= self.epochs else None
            for epoch in range(first, self.epochs + 1):
                params, opt_state, step_losses, metrics = pending
                probing = self.probe is not None and self.probe_due(epoch)
                stop = epoch < self.epochs and should_stop()
                if probing:  # measure at fixed parameters, with the clock paused and nothing else queued
                    jax.block_until_ready(params)
                    wall = wall_offset + time.perf_counter() - t0
                    paused = time.perf_counter()
                    probe = self.probe(params, active)
                    t0 += time.perf_counter() - paused
                # Queue epoch e+1 before reading epoch e on the host, so the device computes while the caller
                # stores: storage stays off the critical path. A stop request lets the queued epoch finish.
                if epoch < self.epochs and not stop:
                    pending = dispatch(epoch + 1, params, opt_state)
                step_losses = np.asarray(step_losses)  # the one device-to-host transfer of the epoch
                metrics = [np.asarray(m) for m in metrics]
                if not probing:
                    wall, probe = wall_offset + time.perf_counter() - t0, None
                finite = np.isfinite(step_losses).all(axis=1) & np.isfinite(metrics[0]) & np.isfinite(metrics[2])
                diverged = active & ~finite
                active &= ~diverged
                self.final_params = params
                yield EpochRecord(epoch, epoch * steps, epoch * d.n_train, wall, step_losses, *metrics,
                                  diverged=diverged, active=active | diverged,
                                  checkpoint=snapshot(epoch, wall, params, opt_state, active), probe=probe)
                if stop:
                    return
                if not active.any():
                    break
        self.finished = True
