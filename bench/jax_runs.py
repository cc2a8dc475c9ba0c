"""The JAX contenders: batchlab's engine with and without its SQLite store, and a bare hand-written scan."""

from __future__ import annotations

import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from batchlab.data.dataset import Dataset
from batchlab.data.load import load_dataset
from batchlab.models.jax import make_model
from batchlab.runner.driver import run_study
from batchlab.spec import StudySpec
from batchlab.store.db import Store
from batchlab.train.backends import group_run
from batchlab.train.contract import EpochRecord, Group
from bench.results import Result

CPU = jax.devices("cpu")[0]
ENGINE, SCAN = "batchlab engine, no store", "bare jitted lax.scan"
LR = 0.03
"""SGD's rate for every contender (digits, MLP 64-128-10)."""


def digits() -> Dataset:
    """batchlab's default split of digits (N_train = 1437), standardized."""
    return load_dataset(StudySpec(dataset="digits"))


def warm_up_jax() -> None:
    """Start the JAX backend once, so its start-up is not charged to whichever contender runs first."""
    jax.block_until_ready(jax.device_put(jnp.zeros(4), CPU) + 1)


def compilation_cache() -> str | None:
    """The persistent compilation cache directory in use (run_study turns it on for the whole process)."""
    return jax.config.jax_compilation_cache_dir


def engine_with_store(epochs: int) -> list[Result]:
    """`run_study` at batch size 1: the engine with all recording on, writing a SQLite store.

    Two results: steps over the run's recorded training wall time (compile excluded, as the engine measures it)
    and steps over the whole `run_study` call (compile, store, parameter files included)."""
    spec = StudySpec(dataset="digits", lr=LR, batch_sizes=(1,), epochs=epochs, seeds=1, device="cpu")
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        run_study(spec, out=out)
        total = time.perf_counter() - t0
        store = Store.open(out)
        run = store.runs()[0]
        epoch_of_step, losses = store.step_losses(run["run_id"])
        store.close()
    loss = float(losses[epoch_of_step == epoch_of_step.max()].mean())
    steps, examples, compile_s = run["total_updates"], run["examples_seen"], run["compile_time_s"]
    return [Result("batchlab engine + store (training time)", 1, steps, examples, run["wall_time_s"], 1, loss,
                   compile_s),
            Result("batchlab engine + store (end to end)", 1, steps, examples, total, 1, loss, compile_s)]


def engine(data: Dataset, *, batch_size: int, epochs: int, replicas: int = 1) -> Result:
    """`GroupRun.train` (the JAX backend) without the store: the epoch records are dropped, except the last, kept for its times."""
    model = make_model("mlp", n_features=data.n_features, n_classes=data.n_classes)
    seeds = tuple(range(replicas))
    group = Group(batch_size, (LR,) * replicas, seeds, seeds)
    last: dict[str, EpochRecord] = {}
    run = group_run(model, data, group, epochs, optimizer="sgd", momentum=0.0, device="cpu")
    run.train(on_epoch=lambda r: last.update(rec=r))
    rec = last["rec"]
    name = ENGINE + (f", {replicas} replicas" if replicas > 1 else "")
    return Result(name, batch_size, rec.updates, rec.examples_seen, rec.wall_time_s, replicas,
                  float(rec.step_losses.mean()), run.compile_time_s)


def init_mlp(key: jax.Array, sizes=(64, 128, 10)) -> dict:
    """PyTorch's nn.Linear initialization (as batchlab's): U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    k = jax.random.split(key, 4)
    bound1, bound2 = 1 / np.sqrt(sizes[0]), 1 / np.sqrt(sizes[1])
    return {"w1": jax.random.uniform(k[0], sizes[:2], minval=-bound1, maxval=bound1),
            "b1": jax.random.uniform(k[1], sizes[1:2], minval=-bound1, maxval=bound1),
            "w2": jax.random.uniform(k[2], sizes[1:], minval=-bound2, maxval=bound2),
            "b2": jax.random.uniform(k[3], sizes[2:], minval=-bound2, maxval=bound2)}


def loss_fn(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean cross-entropy of the MLP on one minibatch."""
    logits = jax.nn.relu(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def make_scan_epoch(n: int, batch_size: int):
    """A jitted epoch (params, epoch, x, y) -> (params, step losses): shuffle, then scan over the minibatches.
    The permutation is padded cyclically to whole batches (as many steps as the engine's ceil(N/B))."""
    steps = -(-n // batch_size)

    @jax.jit
    def epoch(params, epoch_idx, x, y):
        perm = jax.random.permutation(jax.random.fold_in(jax.random.PRNGKey(0), epoch_idx), n)
        index = jnp.resize(perm, steps * batch_size).reshape(steps, batch_size)

        def step(params, idx):
            loss, grads = jax.value_and_grad(loss_fn)(params, x[idx], y[idx])
            return jax.tree_util.tree_map(lambda p, g: p - LR * g, params, grads), loss

        return jax.lax.scan(step, params, index)

    return epoch, steps


def bare_scan(data: Dataset, *, batch_size: int, epochs: int) -> Result:
    """The bare scan: one untimed epoch compiles it, then `epochs` epochs are timed to the last result."""
    x, y = jax.device_put(data.x_train, CPU), jax.device_put(data.y_train, CPU)
    epoch, steps = make_scan_epoch(data.n_train, batch_size)
    params = jax.device_put(init_mlp(jax.random.PRNGKey(0)), CPU)
    t0 = time.perf_counter()
    jax.block_until_ready(epoch(params, 0, x, y))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for e in range(1, epochs + 1):
        params, losses = epoch(params, e, x, y)
    jax.block_until_ready((params, losses))
    seconds = time.perf_counter() - t0
    return Result(SCAN, batch_size, epochs * steps, epochs * data.n_train, seconds,
                  final_loss=float(losses.mean()), compile_s=compile_s)
