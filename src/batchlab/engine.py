"""The training engine: one jit-compiled `lax.scan` per epoch, all replicas of a batch size vmapped together.

Read it top to bottom: the optimizer, the minibatch step, the epoch (a scan over the minibatches of one
shuffling, then a full evaluation), the vmap over replicas, and the loop over epochs that hands each epoch's
records to the caller. Data live on the device once; step losses stay there during the epoch and cross to the
host once per epoch. The engine knows nothing of SQLite or figures: it yields :class:`EpochRecord`s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from batchlab.data import Dataset
from batchlab.models import Model, cross_entropy

INIT_TAG, ORDER_TAG = 0, 1  # fold-in tags: init and data-order streams stay independent even for equal seeds


@dataclass(frozen=True)
class Group:
    """The replicas trained together: one batch size, one learning rate and seed pair per replica."""

    batch_size: int
    lrs: tuple[float, ...]
    init_seeds: tuple[int, ...]
    order_seeds: tuple[int, ...]

    @property
    def n_replicas(self) -> int:
        return len(self.lrs)


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
    test_loss: np.ndarray
    test_acc: np.ndarray
    diverged: np.ndarray
    """(replicas,) bool: the replica met its first non-finite loss in this epoch."""
    active: np.ndarray
    """(replicas,) bool: the replica was still training in this epoch (not diverged before it)."""


def updates_per_epoch(n_train: int, batch_size: int) -> int:
    """ceil(N / B): the last, partial batch is kept."""
    return math.ceil(n_train / batch_size)


def make_optimizer(name: str, *, momentum: float) -> Callable[[jax.Array], optax.GradientTransformation]:
    """A factory lr -> optax transform whose learning rate lives in its state, so it can differ per replica."""
    factories = {
        "sgd": lambda lr: optax.sgd(lr),
        "momentum": lambda lr: optax.sgd(lr, momentum=momentum),
        "adam": lambda lr: optax.adam(lr),
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


def build_epoch_fn(model: Model, optimizer: Callable, *, n_train: int, batch_size: int) -> Callable:
    """The jit-able, vmapped function (params, opt_state, order_seed, epoch, data) -> one epoch's results."""
    steps = updates_per_epoch(n_train, batch_size)
    padded = steps * batch_size

    def evaluate(params, x, y):
        logits = model.apply(params, x)
        return jnp.mean(cross_entropy(logits, y)), jnp.mean(jnp.argmax(logits, -1) == y)

    def minibatch_loss(params, x, y, mask):
        # Mean over the real examples only: the padded tail of the last, partial batch has mask 0.
        return jnp.sum(cross_entropy(model.apply(params, x), y) * mask) / jnp.sum(mask)

    def epoch(params, opt_state, order_seed, epoch_idx, x_train, y_train, x_test, y_test):
        perm = epoch_permutation(order_seed, epoch_idx, n_train)
        index = jnp.concatenate([perm, jnp.zeros(padded - n_train, perm.dtype)]).reshape(steps, batch_size)
        mask = (jnp.arange(padded) < n_train).astype(jnp.float32).reshape(steps, batch_size)

        def step(carry, batch):
            params, opt_state = carry
            idx, m = batch
            loss, grads = jax.value_and_grad(minibatch_loss)(params, x_train[idx], y_train[idx], m)
            updates, opt_state = optimizer(0.0).update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), step_losses = jax.lax.scan(step, (params, opt_state), (index, mask))
        return params, opt_state, step_losses, (*evaluate(params, x_train, y_train), *evaluate(params, x_test, y_test))

    return jax.vmap(epoch, in_axes=(0, 0, 0, None, None, None, None, None))


def build_eval_fn(model: Model) -> Callable:
    """Vmapped (params, data) -> (train loss, train acc, test loss, test acc) per replica."""

    def evaluate(params, x_train, y_train, x_test, y_test):
        out = []
        for x, y in ((x_train, y_train), (x_test, y_test)):
            logits = model.apply(params, x)
            out += [jnp.mean(cross_entropy(logits, y)), jnp.mean(jnp.argmax(logits, -1) == y)]
        return tuple(out)

    return jax.vmap(evaluate, in_axes=(0, None, None, None, None))


def replica_bytes(layer_sizes: tuple[int, ...], *, n_train: int, n_test: int, batch_size: int) -> int:
    """An upper estimate of the device memory one replica needs (float32): parameters, gradients and up to two
    optimizer moments; a step's activations; the epoch's step losses; the full-set evaluation's activations."""
    n_params = sum(a * b + b for a, b in zip(layer_sizes[:-1], layer_sizes[1:]))
    widest = max(layer_sizes)
    activations = 3 * batch_size * sum(layer_sizes)
    evaluation = 2 * max(n_train, n_test) * widest
    return 4 * (4 * n_params + activations + updates_per_epoch(n_train, batch_size) + evaluation)


def memory_budget_bytes(device: jax.Device, fraction: float = 0.5) -> int:
    """`fraction` of the memory free on `device` now (GPU: from JAX's allocator; CPU: available RAM)."""
    import os

    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(fraction * free)


def chunk_replicas(n_replicas: int, per_replica_bytes: int, budget_bytes: int) -> list[range]:
    """Split replicas into as few equal-sized chunks as fit the budget (at least one replica per chunk), so a
    large pack is trained in turns instead of crashing with out-of-memory."""
    fit = max(1, budget_bytes // max(per_replica_bytes, 1))
    n_chunks = math.ceil(n_replicas / fit)
    size = math.ceil(n_replicas / n_chunks)
    return [range(i, min(i + size, n_replicas)) for i in range(0, n_replicas, size)]


def enable_compilation_cache(directory: str | None = None) -> str | None:
    """Use JAX's persistent compilation cache so a second run of the same shapes skips compiling.

    The directory is `directory`, else $BATCHLAB_CACHE_DIR, else ~/.cache/batchlab/jax; BATCHLAB_CACHE_DIR=off
    disables it. Returns the directory in use (None when disabled)."""
    import os
    from pathlib import Path

    directory = directory or os.environ.get("BATCHLAB_CACHE_DIR") or str(Path.home() / ".cache" / "batchlab" / "jax")
    if directory == "off":
        return None
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory


def resolve_device(name: str) -> jax.Device:
    """`auto`: the default backend (a GPU when JAX sees one); `cpu`; `gpu` (an error if there is none)."""
    from batchlab.errors import invalid

    if name == "auto":
        return jax.devices()[0]
    try:
        return jax.devices(name)[0]
    except RuntimeError:
        raise invalid("device", name, f"auto, cpu, or gpu when JAX sees one (it sees: {jax.default_backend()})") from None


def describe_device(device: jax.Device) -> str:
    return f"{device.platform}:{device.device_kind}"


@dataclass
class GroupRun:
    """A group's training in progress: compile time, then epochs. Iterate to train."""

    model: Model
    data: Dataset
    group: Group
    epochs: int
    optimizer: str
    momentum: float
    device: jax.Device
    compile_time_s: float = 0.0
    final_params: Any = None

    def train(self, on_epoch: Callable[[EpochRecord], None], should_stop: Callable[[], bool] = lambda: False,
              *, initial_params: Any = None) -> bool:
        """Train for `epochs` epochs, calling `on_epoch` with epoch 0 (before any update) and each epoch after.
        Returns False if `should_stop` asked to stop at an epoch boundary, True when all epochs ran."""
        g, d = self.group, self.data
        steps = updates_per_epoch(d.n_train, g.batch_size)
        with jax.default_device(self.device):
            arrays = [jax.device_put(a, self.device) for a in (d.x_train, d.y_train, d.x_test, d.y_test)]
            params = initial_params if initial_params is not None else init_replicas(self.model, g.init_seeds)
            opt = make_optimizer(self.optimizer, momentum=self.momentum)
            lrs = jnp.asarray(g.lrs, jnp.float32)
            opt_state = jax.vmap(lambda p, lr: opt(lr).init(p))(params, lrs)
            order_seeds = jnp.asarray(g.order_seeds, jnp.uint32)

            t0 = time.perf_counter()
            epoch_fn = jax.jit(build_epoch_fn(self.model, opt, n_train=d.n_train, batch_size=g.batch_size))
            compiled = epoch_fn.lower(params, opt_state, order_seeds, jnp.int32(1), *arrays).compile()
            eval_fn = jax.jit(build_eval_fn(self.model)).lower(params, *arrays).compile()
            self.compile_time_s = time.perf_counter() - t0

            metrics = [np.asarray(m) for m in eval_fn(params, *arrays)]
            active = np.ones(g.n_replicas, bool)
            none = np.zeros(g.n_replicas, bool)
            on_epoch(EpochRecord(0, 0, 0, 0.0, np.zeros((g.n_replicas, 0), np.float32), *metrics,
                                 diverged=none, active=active.copy()))

            def dispatch(epoch, params, opt_state):  # asynchronous: returns device futures at once
                return compiled(params, opt_state, order_seeds, jnp.int32(epoch), *arrays)

            t0 = time.perf_counter()
            pending = dispatch(1, params, opt_state)
            for epoch in range(1, self.epochs + 1):
                params, opt_state, step_losses, metrics = pending
                # Queue epoch e+1 before reading epoch e on the host, so the device computes while the caller
                # stores: storage stays off the critical path. A stop request lets the queued epoch finish.
                stop = epoch < self.epochs and should_stop()
                if epoch < self.epochs and not stop:
                    pending = dispatch(epoch + 1, params, opt_state)
                step_losses = np.asarray(step_losses)  # the one device-to-host transfer of the epoch
                metrics = [np.asarray(m) for m in metrics]
                wall = time.perf_counter() - t0
                finite = np.isfinite(step_losses).all(axis=1) & np.isfinite(metrics[0]) & np.isfinite(metrics[2])
                diverged = active & ~finite
                on_epoch(EpochRecord(epoch, epoch * steps, epoch * d.n_train, wall, step_losses, *metrics,
                                     diverged=diverged, active=active.copy()))
                active &= ~diverged
                if stop or not active.any():
                    self.final_params = params
                    return not stop
            self.final_params = params
        return True
