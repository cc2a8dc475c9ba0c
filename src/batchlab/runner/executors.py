"""Where groups train: in this process, in local worker processes (one core each), or as Ray tasks. Transport
only: every executor runs :func:`batchlab.runner.worker.train_group` somewhere and sends its messages back to the
driver, which alone writes the store, so workers need no shared filesystem.

Local workers talk to the driver over one pipe each (no queue or lock shared between processes, so a worker
killed mid-message cannot block the others): the driver hands a task to a worker that says it is idle, and a
worker that dies has its group handed to a replacement, from the last checkpoint the driver committed (records
the driver already has are skipped, so nothing is recorded twice). A group whose worker dies MAX_WORKER_DEATHS
times fails alone and the others finish. Workers ignore stop signals (the driver decides when to stop and
tells them through a shared flag) and exit when the driver dies.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import threading
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from batchlab.errors import BatchlabError
from batchlab.runner.allocator import huge_pages_for_children
from batchlab.runner.cores import pin_to_one_core
from batchlab.runner.interrupt import STOP_SIGNALS
from batchlab.runner.tasks import GroupDone, GroupTask, Message, WorkerError, WorkerReady
from batchlab.runner.worker import train_group

MAX_WORKER_DEATHS = 3
"""A group whose worker process dies this many times (the OOM killer, kill -9) is failed instead of retried."""
STOP_GRACE_S = 5.0
"""On the way out, how long workers get to exit on their own before they are killed."""


def run_inline(tasks: list[GroupTask], handle: Callable[[Message], None], should_stop: Callable[[], bool], *,
               model_for: Callable[[GroupTask], Any] | None = None) -> None:
    """Train the groups one after another in this process; `model_for(task)` gives the task's model when the
    driver has loaded it already."""
    for task in tasks:
        if should_stop():
            return
        for message in train_group(task, should_stop, model=None if model_for is None else model_for(task)):
            handle(message)


def _exit_with_parent() -> None:
    """End this worker when its driver dies (even by kill -9): a thread waits on the parent's sentinel, a pipe
    that closes when the parent process exits."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(3)

    threading.Thread(target=watch, name="batchlab-parent-watch", daemon=True).start()


def _worker_main(worker: int, core: int | None, conn: Any, stop: Any) -> None:
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)  # the driver decides when to stop
    _exit_with_parent()
    pin_to_one_core(core)
    conn.send(WorkerReady(worker))
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        try:
            for message in train_group(task, lambda: bool(stop.value)):
                conn.send(message)
        except BatchlabError as e:
            conn.send(WorkerError(task.group_id, str(e), user_error=True))
            return
        except Exception as e:  # noqa: BLE001  (reported to the driver, which fails this group alone)
            traceback.print_exc()
            conn.send(WorkerError(task.group_id, f"{type(e).__name__}: {' '.join(str(e).split())}", user_error=False))
            return


@dataclass
class _Worker:
    process: Any
    conn: Any
    slot: int
    """Which core it is pinned to (a replacement takes its predecessor's)."""
    ready: bool = False
    group_id: str | None = None
    messages: list[Message] = field(default_factory=list)


def run_processes(tasks: list[GroupTask], handle: Callable[[Message], None], should_stop: Callable[[], bool], *,
                  workers: int, retry: Callable[[str], GroupTask], fail: Callable[[str, str], None],
                  max_deaths: int = MAX_WORKER_DEATHS) -> None:
    """Train groups in up to `workers` spawned processes, each pinned to its own core. A worker that dies is
    replaced and its group handed out again from `retry(group_id)` (the driver's last committed checkpoint);
    after `max_deaths` deaths on one group, or an exception in its training, `fail(group_id, reason)` is
    called and the other groups go on. Returns when every group finished or failed, or after a stop request
    once the groups in flight stopped at an epoch boundary. A user error in a worker is raised here."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")
    stop = ctx.RawValue("b", 0)  # lock-free: a worker killed while reading it cannot block anyone
    cores = sorted(os.sched_getaffinity(0))
    queue: deque[GroupTask] = deque(tasks)
    deaths: Counter[str] = Counter()
    pool: dict[int, _Worker] = {}  # by worker id: every process gets a new one
    ids = itertools.count()
    start_failures = 0

    def start(slot: int) -> None:
        w = next(ids)
        conn, child = ctx.Pipe(duplex=True)
        process = ctx.Process(target=_worker_main, daemon=True, name=f"batchlab-worker-{slot}",
                              args=(w, cores[slot % len(cores)], child, stop))
        with huge_pages_for_children():
            process.start()
        child.close()
        pool[w] = _Worker(process, conn, slot)

    def died(w: int) -> None:
        nonlocal start_failures
        worker = pool.pop(w)
        worker.conn.close()
        worker.process.join(timeout=1)
        if worker.process.is_alive():  # its pipe broke but it lives on: make it a death
            worker.process.kill()
            worker.process.join()
        code = worker.process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        if not worker.ready:
            start_failures += 1
            if start_failures >= max_deaths:
                raise RuntimeError(f"worker processes die before they start ({how}), {start_failures} times")
        gid = worker.group_id
        if gid is not None and not stop.value:
            deaths[gid] += 1
            if deaths[gid] >= max_deaths:
                fail(gid, f"its worker process died {deaths[gid]} times (last: {how})")
            else:
                queue.appendleft(retry(gid))
        if queue and not stop.value:
            start(worker.slot)

    def receive(w: int) -> bool:
        """Handle what worker `w` sent; False if its pipe broke (it died, perhaps mid-message)."""
        worker = pool[w]
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                if isinstance(message, WorkerReady):
                    worker.ready = True
                elif isinstance(message, WorkerError):
                    if message.user_error:
                        raise BatchlabError(message.message)
                    fail(message.group_id, f"training raised {message.message}")
                    worker.group_id = None
                else:
                    handle(message)
                    if isinstance(message, GroupDone):
                        worker.group_id = None
        except (EOFError, OSError):
            return False
        return True

    for slot in range(min(workers, len(tasks))):
        start(slot)
    try:
        while pool:
            if should_stop():
                stop.value = 1
            for w, worker in list(pool.items()):
                if worker.ready and worker.group_id is None:
                    task = queue.popleft() if queue and not stop.value else None
                    try:
                        worker.conn.send(task)
                    except OSError:
                        if task is not None:
                            queue.appendleft(task)
                        continue  # its sentinel reports the death below
                    if task is None:
                        pool.pop(w).process.join(timeout=STOP_GRACE_S)
                    else:
                        worker.group_id = task.group_id
            sentinels: dict[Any, int] = {worker.process.sentinel: w for w, worker in pool.items()}
            pipes: dict[Any, int] = {worker.conn: w for w, worker in pool.items()}
            for ready in wait([*pipes, *sentinels], timeout=0.2):
                found = pipes.get(ready, sentinels.get(ready))
                if found is None or found not in pool:
                    continue
                w = found
                if ready in pipes and receive(w):
                    continue
                receive(w)  # what it sent before it died
                died(w)
    finally:
        stop.value = 1
        for worker in pool.values():
            try:
                worker.conn.send(None)
            except OSError:
                pass
        for worker in pool.values():
            worker.process.join(timeout=STOP_GRACE_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()


def check_ray(address: str | None) -> None:
    """Raise BatchlabError, before anything is written, if Ray is not installed, nothing listens at `address`
    (HOST:PORT of a running cluster) or the cluster there refuses this process (None: a local cluster is
    started later, by :func:`run_ray`)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise BatchlabError("executor: got 'ray' but Ray is not installed; allowed: local, or "
                            "pip install 'batchlab[ray]'") from None
    if address is None or address == "auto":
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise BatchlabError(f"address: got {address!r}; allowed: HOST:PORT of a Ray cluster (what 'ray start --head' "
                            "printed), e.g. 127.0.0.1:6379")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise BatchlabError(f"address: nothing answers at {address} ({e.strerror or e}); allowed: the address of a "
                            f"running Ray cluster (check it with 'ray status --address {address}'), or no --address "
                            "to start a local one") from None
    connect_ray(address)


def connect_ray(address: str | None) -> None:
    """Join the Ray cluster at `address` (None: start a local one) unless this process already has; a refusal
    (a stale auth token, another Ray version) is one line with its cause and a hint. Called before the study is
    created, so a cluster that cannot be joined leaves nothing behind."""
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False} if address is None else {}
    try:
        ray.init(address=address, log_to_driver=False, **kwargs)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as e:
        causes = [e, *([e.__cause__] if e.__cause__ is not None else [])]
        cause = "; ".join(f"{type(c).__name__}: {_last_line(c)}" for c in causes)
        raise BatchlabError(f"address: could not connect to the Ray cluster at {address or 'a new local one'} "
                            f"({cause}); hint: check 'ray status', and that this machine's Ray version and any "
                            "auth token Ray finds here (e.g. in ~/.ray) match the cluster's") from None


def _last_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(e).__name__


def run_ray(tasks: list[GroupTask], handle: Callable[[Message], None], should_stop: Callable[[], bool], *,
            address: str | None, max_retries: int = 3) -> None:
    """Train each group as a Ray task (a streaming generator) on the cluster at `address` (None: a local one).
    Ray retries a task whose worker dies; its replayed epochs are skipped by the driver."""
    check_ray(address)
    connect_ray(address)
    import ray

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
