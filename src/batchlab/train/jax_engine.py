"""The JAX backend: one jit-compiled `lax.scan` per epoch, all replicas of a batch size vmapped together.

Read it top to bottom: the optimizer, the minibatch step, the epoch (a scan over the minibatches of one
shuffling, then a full evaluation), the vmap over replicas, and :class:`JaxBackend`, the operations the shared
epoch loop (:class:`batchlab.train.contract.GroupRun`) calls. Data live on the device once; step losses stay
there during the epoch and cross to the host once per epoch; dispatch is asynchronous, so the loop queues epoch
e + 1 before it reads epoch e. The engine knows nothing of SQLite or figures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from batchlab.data.dataset import Dataset
from batchlab.models.jax import Model
from batchlab.models.tasks import CLASSIFICATION, Task, get_task
from batchlab.spec import ADAM_BETA1, ADAM_BETA2, ADAM_EPS, updates_per_epoch
from batchlab.train.contract import EVAL_CHUNK, Checkpoint, Group, Metrics, eval_points
from batchlab.train.order import epoch_permutation


def make_optimizer(name: str, *, momentum: float,
                   adam: tuple[float, float, float] = (ADAM_BETA1, ADAM_BETA2, ADAM_EPS),
                   ) -> Callable[[jax.Array], optax.GradientTransformation]:
    """A factory lr -> optax transform whose learning rate lives in its state, so it can differ per replica
    and change per step (warmup). `adam` = (beta1, beta2, eps), constants of the compiled program; optax's
    defaults give exactly `optax.adam(lr)`."""
    b1, b2, eps = adam
    factories = {
        "sgd": lambda learning_rate: optax.sgd(learning_rate),
        "momentum": lambda learning_rate: optax.sgd(learning_rate, momentum=momentum),
        "adam": lambda learning_rate: optax.adam(learning_rate, b1=b1, b2=b2, eps=eps),
    }
    return optax.inject_hyperparams(factories[name])


def evaluate(model: Model, params: Any, x: jax.Array, y: jax.Array, *,
             task: Task = CLASSIFICATION) -> tuple[jax.Array, jax.Array]:
    """Mean loss and metric of `params` on (x, y) for the task (cross-entropy and accuracy, or squared error and
    R^2), in chunks of EVAL_CHUNK rows (`lax.map`) so that memory stays flat however large the data."""
    n = x.shape[0]
    rows = eval_chunk_rows(y)
    if n <= rows:
        outputs = model.apply(params, x)
        return jnp.mean(task.loss(outputs, y)), task.metric(jnp.mean(task.score(outputs, y)), y)
    chunks = -(-n // rows)
    pad = chunks * rows - n
    xs = jnp.concatenate([x, jnp.zeros((pad, x.shape[1]), x.dtype)]).reshape(chunks, rows, x.shape[1])
    ys = jnp.concatenate([y, jnp.zeros((pad, *y.shape[1:]), y.dtype)]).reshape(chunks, rows, *y.shape[1:])
    mask = (jnp.arange(chunks * rows) < n).reshape(chunks, rows)

    def one(batch):
        xc, yc, mc = batch
        outputs = model.apply(params, xc)
        return jnp.sum(task.loss(outputs, yc) * mc), jnp.sum(task.score(outputs, yc) * mc)

    loss_sums, score_sums = jax.lax.map(one, (xs, ys, mask))
    return jnp.sum(loss_sums) / n, task.metric(jnp.sum(score_sums) / n, y)


def eval_chunk_rows(y: jax.Array | np.ndarray) -> int:
    """Rows per evaluation chunk: EVAL_CHUNK examples, or for sequence targets (text: (examples, T)) EVAL_CHUNK
    tokens' worth of sequences, so a chunk's activations stay the same size."""
    return max(1, EVAL_CHUNK // math.prod(y.shape[1:]))


def build_epoch_fn(model: Model, optimizer: Callable, *, n_train: int, batch_size: int,
                   warmup_steps: int = 0, task: Task = CLASSIFICATION, eval_every: int | None = None,
                   scheduled: bool = False) -> Callable:
    """The vmapped function (params, opt_state, order_seed, lr_from, lr_to, epoch, data) -> one epoch's results:
    (params, opt_state, step losses (steps,), end-of-epoch metrics, and with `eval_every` the metrics after every
    update (steps, 4), NaN where no evaluation was due). An evaluation between epoch ends is a `lax.cond` on the
    update count, which is the same for every replica, so under vmap it stays a branch: the full-set evaluation
    runs only where it is due. Without `eval_every` the scan has no such branch at all.

    `scheduled` (rate or batch-size schedules): the function takes one more argument after the epoch, the
    updates before it (`first_step`, which differs from (epoch - 1) * steps once the batch size has changed),
    and `lr_to` is the rate in force this epoch: set at every update (warmup ramps towards it). Without a
    schedule the program is the original one, so constant runs keep their numbers bit for bit."""
    steps = updates_per_epoch(n_train, batch_size)
    padded = steps * batch_size

    def minibatch_loss(params, x, y, mask):
        # Mean over the real examples only: the padded tail of the last, partial batch has mask 0.
        return jnp.sum(task.loss(model.apply(params, x), y) * mask) / jnp.sum(mask)

    def epoch(params, opt_state, order_seed, lr_from, lr_to, epoch_idx, first_step, x_train, y_train, x_test, y_test):
        perm = epoch_permutation(order_seed, epoch_idx, n_train)
        index = jnp.concatenate([perm, jnp.zeros(padded - n_train, perm.dtype)]).reshape(steps, batch_size)
        mask = (jnp.arange(padded) < n_train).astype(jnp.float32).reshape(steps, batch_size)
        before = first_step if scheduled else (epoch_idx - 1) * steps
        step_numbers = before + jnp.arange(steps)

        def step(carry, batch):
            params, opt_state = carry
            idx, m, t = batch
            if warmup_steps:  # linear ramp lr_from -> lr_to over the first warmup_steps updates
                lr = lr_from + (lr_to - lr_from) * jnp.minimum(1.0, t / warmup_steps)
                opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": lr})
            elif scheduled:  # the rate in force this epoch
                opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": lr_to})
            loss, grads = jax.value_and_grad(minibatch_loss)(params, x_train[idx], y_train[idx], m)
            updates, opt_state = optimizer(0.0).update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            if not eval_every:
                return (params, opt_state), loss
            done = t + 1  # updates after this step; the epoch's last one is evaluated at the epoch's end
            due = (done % eval_every == 0) & (done < before + steps)
            between = jax.lax.cond(due, lambda p: jnp.stack(evaluate_both(p)),
                                   lambda p: jnp.full(4, jnp.nan, jnp.float32), params)
            return (params, opt_state), (loss, between)

        def evaluate_both(p):
            return (*evaluate(model, p, x_train, y_train, task=task), *evaluate(model, p, x_test, y_test, task=task))

        (params, opt_state), per_step = jax.lax.scan(step, (params, opt_state), (index, mask, step_numbers))
        step_losses, between = per_step if eval_every else (per_step, None)
        metrics = evaluate_both(params)
        return (params, opt_state, step_losses, metrics) + ((between,) if eval_every else ())

    if scheduled:
        return jax.vmap(epoch, in_axes=(0, 0, 0, 0, 0, None, None, None, None, None, None))

    def constant(params, opt_state, order_seed, lr_from, lr_to, epoch_idx, x_train, y_train, x_test, y_test):
        return epoch(params, opt_state, order_seed, lr_from, lr_to, epoch_idx, None, x_train, y_train, x_test, y_test)

    return jax.vmap(constant, in_axes=(0, 0, 0, 0, 0, None, None, None, None, None))


def build_eval_fn(model: Model, task: Task = CLASSIFICATION) -> Callable:
    """Vmapped (params, data) -> (train loss, train metric, test loss, test metric) per replica."""

    def evaluate_all(params, x_train, y_train, x_test, y_test):
        return (*evaluate(model, params, x_train, y_train, task=task),
                *evaluate(model, params, x_test, y_test, task=task))

    return jax.vmap(evaluate_all, in_axes=(0, None, None, None, None))


@dataclass
class JaxBackend:
    """:class:`batchlab.train.contract.Backend` for a JAX model: the state is (params, optimizer state) as
    device arrays with the replica axis first."""

    model: Model
    data: Dataset
    group: Group
    optimizer: str
    momentum: float
    device: jax.Device
    eval_every_steps: int | None = None
    """Also evaluate every this many updates (see :func:`build_epoch_fn`)."""
    asynchronous: bool = True
    compile_time_s: float = 0.0
    _arrays: list[jax.Array] = field(default_factory=list, repr=False)
    _per_replica: tuple[jax.Array, ...] = field(default=(), repr=False)
    _compiled: Any = field(default=None, repr=False)
    _by_batch_size: dict[int, Any] = field(default_factory=dict, repr=False)

    def initial_state(self, initial_params: Any, resume: Checkpoint | None) -> Any:
        g, d = self.group, self.data
        with jax.default_device(self.device):
            self._arrays = [jax.device_put(a, self.device) for a in (d.x_train, d.y_train, d.x_test, d.y_test)]
            opt = make_optimizer(self.optimizer, momentum=self.momentum, adam=self.group.adam)
            lr_to = jnp.asarray(g.lrs, jnp.float32)
            lr_from = jnp.asarray(g.warmup_from or g.lrs, jnp.float32)
            params = initial_params if initial_params is not None else self.model.init_replicas(g.init_seeds)
            opt_state = jax.vmap(lambda p, lr: opt(lr).init(p))(params, lr_from if g.warmup_epochs else lr_to)
            if resume is not None:
                treedef = jax.tree_util.tree_structure((params, opt_state))
                params, opt_state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in resume.leaves])
                if g.branch_from is not None:  # a branch trains at its own rate from the parent's state
                    opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": lr_to})
            self._per_replica = (jnp.asarray(g.order_seeds, jnp.uint32), lr_from, lr_to)
        return params, opt_state

    def prepare(self, state: Any, first_epoch: int) -> None:
        g, d = self.group, self.data
        if g.schedule is not None:
            self._prepare_scheduled(state, first_epoch)
            return
        steps = updates_per_epoch(d.n_train, g.batch_size)
        with jax.default_device(self.device):
            t0 = time.perf_counter()
            opt = make_optimizer(self.optimizer, momentum=self.momentum, adam=self.group.adam)
            epoch_fn = jax.jit(build_epoch_fn(self.model, opt, n_train=d.n_train, batch_size=g.batch_size,
                                              warmup_steps=g.warmup_epochs * steps, task=get_task(d.task),
                                              eval_every=self.eval_every_steps))
            self._compiled = epoch_fn.lower(*state, *self._per_replica, np.int32(1), *self._arrays).compile()
            self.compile_time_s = time.perf_counter() - t0

    def _prepare_scheduled(self, state: Any, first_epoch: int) -> None:
        """One compiled epoch per batch size the schedule uses from `first_epoch` on (compiled once each)."""
        g, d = self.group, self.data
        assert g.schedule is not None
        warmup_steps = g.warmup_epochs * updates_per_epoch(d.n_train, g.batch_size)
        self._by_batch_size = {}
        with jax.default_device(self.device):
            t0 = time.perf_counter()
            opt = make_optimizer(self.optimizer, momentum=self.momentum)
            for b in g.schedule.batch_sizes_from(first_epoch, max(g.epochs, first_epoch)):
                epoch_fn = jax.jit(build_epoch_fn(self.model, opt, n_train=d.n_train, batch_size=b,
                                                  warmup_steps=warmup_steps, task=get_task(d.task),
                                                  eval_every=self.eval_every_steps, scheduled=True))
                self._by_batch_size[b] = epoch_fn.lower(*state, *self._per_replica, np.int32(1), np.int32(0),
                                                        *self._arrays).compile()
            self.compile_time_s = time.perf_counter() - t0

    def evaluate(self, state: Any) -> Metrics:
        with jax.default_device(self.device):
            t0 = time.perf_counter()
            metrics = [np.asarray(m) for m in
                       jax.jit(build_eval_fn(self.model, get_task(self.data.task)))(state[0], *self._arrays)]
            self.compile_time_s += time.perf_counter() - t0  # evaluation compile, once per group
        return metrics

    def dispatch(self, state: Any, epoch: int) -> tuple[Any, Any]:
        """Asynchronous: returns device futures at once."""
        g = self.group
        if g.schedule is not None:
            order_seeds, lr_from, _ = self._per_replica
            with jax.default_device(self.device):
                lr_now = jnp.asarray(g.lrs_at(epoch), jnp.float32)
            params, opt_state, *outputs = self._by_batch_size[g.batch_size_at(epoch)](
                *state, order_seeds, lr_from, lr_now, np.int32(epoch), np.int32(g.schedule.updates_through(epoch - 1)),
                *self._arrays)
            return (params, opt_state), (epoch, *outputs)
        params, opt_state, *outputs = self._compiled(*state, *self._per_replica, np.int32(epoch), *self._arrays)
        return (params, opt_state), (epoch, *outputs)

    def fetch(self, outputs: Any) -> tuple[np.ndarray, Metrics, np.ndarray, np.ndarray]:
        epoch, step_losses, metrics, *between = outputs
        g = self.group
        steps = updates_per_epoch(self.data.n_train, g.batch_size_at(epoch))
        before = (epoch - 1) * steps if g.schedule is None else g.schedule.updates_through(epoch - 1)
        due = eval_points(epoch, steps, self.eval_every_steps, before=before)
        evals = np.asarray(between[0])[:, due - 1 - before] if between else \
            np.zeros((self.group.n_replicas, 0, 4), np.float32)
        return np.asarray(step_losses), [np.asarray(m) for m in metrics], due, evals

    def block(self, state: Any) -> None:
        jax.block_until_ready(state[0])

    def params(self, state: Any) -> Any:
        return state[0]

    def leaves(self, state: Any) -> list[np.ndarray]:
        return [np.asarray(a) for a in jax.tree_util.tree_leaves(state)]
