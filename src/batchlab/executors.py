"""Where groups train: in this process, in local worker processes (one pinned core each), or as Ray tasks.

A group is described by a picklable :class:`GroupTask`; training it yields messages (an :class:`EpochDone` per
epoch, then a :class:`GroupDone`). Every executor sends the messages back to the driver, which alone writes
the store, so workers need no shared filesystem. A worker that dies has its group retried from the last
checkpoint the driver committed; records the driver already has are skipped, so nothing is recorded twice.
"""

from __future__ import annotations

import os
import queue
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from batchlab.data import Dataset
from batchlab.spec import StudySpec


@dataclass(frozen=True)
class GroupTask:
    """Everything a worker needs to train one group, as plain data."""

    group_id: str
    point: StudySpec
    group: Any  # batchlab.engine.Group (imported lazily: this module loads without JAX)
    epochs: int
    data: Dataset
    resume: Any = None  # batchlab.engine.Checkpoint | None
    checkpoints: bool = True
    """Attach the group's state to every epoch (needed to resume; `batchlab run` does not resume)."""


@dataclass(frozen=True)
class GroupStarted:
    group_id: str
    worker: int


@dataclass(frozen=True)
class EpochDone:
    group_id: str
    record: Any  # batchlab.engine.EpochRecord, with its checkpoint
    compile_time_s: float


@dataclass(frozen=True)
class GroupDone:
    group_id: str
    finished: bool
    final_params: list[dict[str, np.ndarray]]
    end_metrics: list[dict[str, float]]


Message = GroupStarted | EpochDone | GroupDone


def train_group(task: GroupTask, should_stop: Callable[[], bool] = lambda: False) -> Iterator[Message]:
    """Train one group, yielding a message per epoch and one at the end."""
    import jax

    from batchlab.device import enable_compilation_cache, resolve_device
    from batchlab.engine import GroupRun
    from batchlab.measure import GroupMeasurements
    from batchlab.models import flatten_params, load_model
    from batchlab.spec import is_torch_reference

    enable_compilation_cache()
    p = task.point
    model = load_model(p, task.data)
    if is_torch_reference(p.model):  # a user's PyTorch module: the same training and measurements in torch.func
        from batchlab.torch_backend import TorchGroupRun
        from batchlab.torch_measure import TorchMeasurements

        measure = TorchMeasurements(model, task.data, gns=p.gns, device=p.device)
        run = TorchGroupRun(model, task.data, task.group, task.epochs, p.optimizer, p.momentum, p.device,
                            probe=None if p.gns == "off" else measure.gns, probe_every=p.gns_every)
    else:
        measure = GroupMeasurements(model, task.data, gns=p.gns)
        run = GroupRun(model, task.data, task.group, task.epochs, p.optimizer, p.momentum, resolve_device(p.device),
                       probe=None if p.gns == "off" else measure.gns, probe_every=p.gns_every)
    active = np.ones(task.group.n_replicas, bool)
    for record in run.epochs_iter(should_stop, resume=task.resume, checkpoints=task.checkpoints):
        active = record.active & ~record.diverged
        yield EpochDone(task.group_id, record, run.compile_time_s)
    final = [flatten_params(jax.tree_util.tree_map(lambda a, i=i: a[i], run.final_params))
             for i in range(task.group.n_replicas)]
    end = measure.end_of_training(run.final_params, active, eps_sharpness=p.eps_sharpness) \
        if p.sharpness and run.finished else [{} for _ in final]
    yield GroupDone(task.group_id, run.finished, final, end)


def run_inline(tasks: list[GroupTask], handle: Callable[[Message], None], should_stop: Callable[[], bool]) -> None:
    """Train the groups one after another in this process."""
    for task in tasks:
        if should_stop():
            return
        for message in train_group(task, should_stop):
            handle(message)


# ---------------------------------------------------------------------------------------------------------
# Local worker processes.


def pin_to_one_core(core: int | None = None) -> int | None:
    """Pin this process to one core (the first allowed one by default) before JAX starts its CPU backend.

    On CPU, XLA sizes its thread pool from the cores it may use, and the thread count changes how large matrix
    products are split, hence their float32 rounding. Pinning every training process to one core makes results
    identical whether groups train inline or in worker processes, and is faster on small machines (a pinned
    digits sweep ran in 3.9 s against 7.9 s free on 2 cores). BATCHLAB_NO_PIN=1 disables it."""
    if os.environ.get("BATCHLAB_NO_PIN") == "1" or not hasattr(os, "sched_setaffinity"):
        return None
    core = min(os.sched_getaffinity(0)) if core is None else core
    os.sched_setaffinity(0, {core})
    return core


def _worker_main(worker: int, core: int | None, tasks: Any, results: Any, stop: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides when to stop
    pin_to_one_core(core)
    while not stop.is_set():
        task = tasks.get()
        if task is None:
            return
        results.put(GroupStarted(task.group_id, worker))
        for message in train_group(task, stop.is_set):
            results.put(message)


def run_processes(tasks: list[GroupTask], handle: Callable[[Message], None], should_stop: Callable[[], bool], *,
                  workers: int, retry: Callable[[str], GroupTask]) -> None:
    """Train groups in `workers` spawned processes, each pinned to its own core. A worker that dies is replaced
    and its group is queued again from `retry(group_id)` (the driver's last committed checkpoint)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    task_queue, results, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    cores = sorted(os.sched_getaffinity(0))

    def start(worker: int):
        process = ctx.Process(target=_worker_main, daemon=True,
                              args=(worker, cores[worker % len(cores)], task_queue, results, stop))
        process.start()
        return process

    for task in tasks:
        task_queue.put(task)
    processes = {w: start(w) for w in range(workers)}
    for _ in processes:
        task_queue.put(None)
    pending = {t.group_id for t in tasks}
    holding: dict[int, str] = {}
    try:
        while pending:
            if should_stop():
                stop.set()
            try:
                message = results.get(timeout=0.2)
            except queue.Empty:
                for w, process in list(processes.items()):
                    if process.is_alive() or w not in holding:
                        continue
                    group_id = holding.pop(w)
                    if stop.is_set():
                        pending.discard(group_id)  # left for the next resume
                    else:
                        task_queue.put(retry(group_id))
                        processes[w] = start(w)
                if not any(p.is_alive() for p in processes.values()):
                    return  # stopped, or a task was lost before it started: a re-run resumes what is left
                continue
            if isinstance(message, GroupStarted):
                holding[message.worker] = message.group_id
                continue
            if isinstance(message, GroupDone):
                pending.discard(message.group_id)
                holding = {w: g for w, g in holding.items() if g != message.group_id}
            handle(message)
    finally:
        stop.set()
        for process in processes.values():
            process.join(timeout=5)
            if process.is_alive():
                process.kill()


# ---------------------------------------------------------------------------------------------------------
# Ray.


def run_ray(tasks: list[GroupTask], handle: Callable[[Message], None], should_stop: Callable[[], bool], *,
            address: str | None, max_retries: int = 3) -> None:
    """Train each group as a Ray task (a streaming generator) on the cluster at `address` (None: a local one).
    Ray retries a task whose worker dies; its replayed epochs are skipped by the driver."""
    try:
        import ray
    except ImportError:
        from batchlab.errors import BatchlabError

        raise BatchlabError("executor: got 'ray' but Ray is not installed; allowed: local, or "
                            "pip install 'batchlab[ray]'") from None
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False} if address is None else {}
        ray.init(address=address, log_to_driver=False, **kwargs)
    remote = ray.remote(num_cpus=1, max_retries=max_retries)(_ray_group)
    generators = {remote.remote(task): task.group_id for task in tasks}
    try:
        while generators:
            if should_stop():
                for generator in generators:
                    ray.cancel(generator)
                return
            ready, _ = ray.wait(list(generators), num_returns=1, timeout=0.2)
            for generator in ready:
                try:
                    ref = next(generator)
                except StopIteration:
                    del generators[generator]
                    continue
                handle(ray.get(ref))
    finally:
        for generator in generators:
            ray.cancel(generator)


def _ray_group(task: GroupTask) -> Iterator[Message]:
    yield from train_group(task)
