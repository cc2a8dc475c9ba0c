"""Where groups train: in this process, in local worker processes (one core each), or as Ray tasks. Transport
only: every executor runs :func:`batchlab.runner.worker.train_group` somewhere and sends its messages back to the
driver, which alone writes the store, so workers need no shared filesystem. A worker that dies has its group
retried from the last checkpoint the driver committed; records the driver already has are skipped, so nothing
is recorded twice.
"""

from __future__ import annotations

import os
import queue
import signal
from collections.abc import Callable, Iterator
from typing import Any

from batchlab.errors import BatchlabError
from batchlab.runner.cores import pin_to_one_core
from batchlab.runner.tasks import GroupDone, GroupStarted, GroupTask, Message
from batchlab.runner.worker import train_group


def run_inline(tasks: list[GroupTask], handle: Callable[[Message], None], should_stop: Callable[[], bool], *,
               model_for: Callable[[GroupTask], Any] | None = None) -> None:
    """Train the groups one after another in this process; `model_for(task)` gives the task's model when the
    driver has loaded it already."""
    for task in tasks:
        if should_stop():
            return
        for message in train_group(task, should_stop, model=None if model_for is None else model_for(task)):
            handle(message)


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


def run_ray(tasks: list[GroupTask], handle: Callable[[Message], None], should_stop: Callable[[], bool], *,
            address: str | None, max_retries: int = 3) -> None:
    """Train each group as a Ray task (a streaming generator) on the cluster at `address` (None: a local one).
    Ray retries a task whose worker dies; its replayed epochs are skipped by the driver."""
    try:
        import ray
    except ImportError:
        raise BatchlabError("executor: got 'ray' but Ray is not installed; allowed: local, or "
                            "pip install 'batchlab[ray]'") from None
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False} if address is None else {}
        ray.init(address=address, log_to_driver=False, **kwargs)
    remote = ray.remote(num_cpus=1, max_retries=max_retries)(_ray_group)
    generators: dict[Any, str] = {remote.remote(task): task.group_id for task in tasks}
    try:
        while generators:
            if should_stop():
                for generator in generators:
                    ray.cancel(generator)
                return
            ready, _ = ray.wait(list(generators), num_returns=1, timeout=0.2)
            for generator in ready:
                try:
                    ref = next(generator)  # type: ignore[arg-type]  # a streaming generator's ObjectRefGenerator
                except StopIteration:
                    del generators[generator]
                    continue
                handle(ray.get(ref))
    finally:
        for generator in generators:
            ray.cancel(generator)


def _ray_group(task: GroupTask) -> Iterator[Message]:
    yield from train_group(task)
