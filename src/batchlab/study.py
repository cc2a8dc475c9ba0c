"""Run a study or a sweep end to end: spec -> data and model -> plan of groups -> executor -> store.

The driver validates everything before the study directory is created, plans the groups (one vmapped program
per batch size and model setting, chunked to fit memory), hands them to an executor, and alone writes the
store from the messages the groups send back. Re-running a sweep into its directory resumes it: finished runs
are skipped, a group in flight restarts from its last committed epoch, and a changed study file is refused.
"""

from __future__ import annotations

import importlib.metadata
import platform
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from batchlab.errors import BatchlabError
from batchlab.executors import EpochDone, GroupDone, GroupTask, Message
from batchlab.spec import StudySpec, updates_per_epoch
from batchlab.store import EpochRow, GroupCheckpoint, RunInfo, Store, check_out, study_exists
from batchlab.sweep import PlannedGroup, Sweep, plan

FINISHED = ("completed", "diverged")


class Progress(Protocol):
    """What the driver tells a progress display (see `batchlab.progress.RichProgress`)."""

    def start_group(self, group_id: str, *, batch_size: int, epochs: int, steps_per_epoch: int,
                    n_replicas: int, done_epochs: int = 0) -> None: ...
    def epoch_done(self, group_id: str, *, epoch: int, wall_time_s: float, diverged: int) -> None: ...
    def end_group(self, group_id: str) -> None: ...


@dataclass(frozen=True)
class StudyResult:
    """Where a study was written and whether every run reached its end."""

    directory: Path
    completed: bool
    wall_time_s: float

    def __repr__(self) -> str:
        state = "completed" if self.completed else "interrupted"
        return f"StudyResult({str(self.directory)!r}, {state}, {self.wall_time_s:.1f} s)"


def versions() -> dict[str, str]:
    """Library versions recorded with every run, with those of users' models (PyTorch, Equinox, Flax) when a
    model loaded them (the driver loads every model before it records anything)."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    model_libraries = tuple(pkg for pkg in ("torch", "equinox", "flax") if pkg in sys.modules)
    for pkg in ("batchlab", "jax", "jaxlib", "optax", "numpy", "scikit-learn", *model_libraries):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def run_study(spec: StudySpec, out: str | Path, **kwargs) -> StudyResult:
    """Train every batch size and seed of `spec` and record it in a new directory `out` (see :func:`run_sweep`)."""
    return run_sweep(Sweep(spec), out, resume=False, **kwargs)


def run_sweep(sweep: Sweep, out: str | Path, *, resume: bool = True, workers: int = 1, executor: str = "local",
              address: str | None = None, progress: Progress | None = None,
              should_stop: Callable[[], bool] = lambda: False, memory_budget: int | None = None) -> StudyResult:
    """Train every run of `sweep` into `out`, resuming what an earlier, interrupted call left there.

    `executor` is `local` (this process with workers=1, else `workers` pinned processes) or `ray` (Ray tasks
    on the cluster at `address`). Raises BatchlabError, before anything is written, if the data, batch sizes,
    device or `out` are not acceptable, or if `out` holds a different study.
    """
    if executor not in ("local", "ray"):
        raise BatchlabError(f"executor: got {executor!r}; allowed: local, ray")
    if workers < 1:
        raise BatchlabError(f"workers: got {workers!r}; allowed: an integer >= 1")
    existing = study_exists(out)
    if existing and not resume:
        check_out(out)  # raises: run refuses to write into an existing study
    if not existing:
        check_out(out)
    if existing:
        _check_same_study(out, sweep)

    from batchlab.data import load_dataset
    from batchlab.device import (
        describe_device,
        enable_compilation_cache,
        memory_budget_bytes,
        model_replica_bytes,
        resolve_device,
    )
    from batchlab.models import load_model

    enable_compilation_cache()
    data = load_dataset(sweep.base)
    points = sweep.points()
    for point in points:
        point.resolved_batch_sizes(data.n_train)
    device = resolve_device(sweep.base.device)
    if existing:
        store = Store.open(out)
        max_replicas = store.meta()["max_replicas"]
    else:
        batch_size = max(max(p.resolved_batch_sizes(data.n_train)) for p in points)
        per_replica = max(model_replica_bytes(load_model(p, data), n_features=data.n_features, n_train=data.n_train,
                                              n_test=len(data.y_test), batch_size=batch_size) for p in points)
        budget = memory_budget_bytes(device) if memory_budget is None else memory_budget
        max_replicas = max(1, budget // per_replica)
    groups = plan(sweep, n_train=data.n_train, max_replicas=max_replicas)
    if not existing:
        meta = {"spec": sweep.base.to_dict(), "axes": [[n, list(v)] for n, v in sweep.axes],
                "fingerprint": sweep.fingerprint(), "versions": versions(), "device": describe_device(device),
                "dataset": data.summary(),
                "model": repr(load_model(sweep.base, data)),
                "batch_sizes": sorted({g.batch_size for g in groups}), "max_replicas": max_replicas, "replica_chunks": [len(g.runs) for g in groups],
                "created_at": time.time()}
        store = Store.create(out, meta=meta)
        _register(store, groups, data, meta)
        store.publish()

    t0 = time.perf_counter()
    try:
        statuses = store.statuses()
        todo = [g for g in groups if any(statuses[r.run_id] not in FINISHED for r in g.runs)]
        recorder = Recorder(store, todo, data.n_train, progress, checkpoints=resume)
        tasks = [recorder.task(g, data) for g in todo]
        if executor == "ray":
            from batchlab.executors import run_ray

            run_ray(tasks, recorder.handle, should_stop, address=address)
        elif workers > 1:
            from batchlab.executors import run_processes

            run_processes(tasks, recorder.handle, should_stop, workers=workers,
                          retry=lambda gid: recorder.task(recorder.groups[gid], data))
        else:
            from batchlab.executors import run_inline

            run_inline(tasks, recorder.handle, should_stop)
        recorder.mark_unfinished()
        completed = all(s in FINISHED for s in store.statuses().values())
    finally:
        store.close()
    return StudyResult(Path(out), completed, time.perf_counter() - t0)


def _check_same_study(out: str | Path, sweep: Sweep) -> None:
    store = Store.open(out)
    try:
        fingerprint = store.meta().get("fingerprint")
    finally:
        store.close()
    if fingerprint != sweep.fingerprint():
        raise BatchlabError(f"out: {out} holds a different study (its runs were defined by another study file); "
                            "allowed: the same study file to resume, or a new --out directory")


def _register(store: Store, groups: list[PlannedGroup], data, meta: dict) -> None:
    """Record every planned run and its initial parameters before any training."""
    import jax

    from batchlab.engine import init_replicas
    from batchlab.models import flatten_params, load_model
    from batchlab.spec import is_torch_reference

    for g in groups:
        infos = [(RunInfo(r.run_id, g.group_id, r.batch_size, r.lr, r.init_seed, r.init_seed, r.order_seed,
                          data.n_train, updates_per_epoch(data.n_train, r.batch_size), r.epochs),
                  dict(r.point.to_dict(), task=data.task))  # the task trained on, also when the spec said auto
                 for r in g.runs]
        store.add_runs(infos, versions=meta["versions"], device=meta["device"])
        p = g.point
        model = load_model(p, data)
        seeds = tuple(r.init_seed for r in g.runs)
        initial = model.init_replicas(seeds) if is_torch_reference(p.model) else init_replicas(model, seeds)
        for i, r in enumerate(g.runs):
            store.save_params(r.run_id, flatten_params(jax.tree_util.tree_map(lambda a, i=i: a[i], initial)))


class Recorder:
    """The driver's side: turns groups into tasks (with their last checkpoint) and messages into store rows.
    Records of an epoch the store already has (a retried task replaying) are skipped."""

    def __init__(self, store: Store, groups: list[PlannedGroup], n_train: int, progress: Progress | None, *,
                 checkpoints: bool = True):
        self.store, self.n_train, self.progress, self.checkpoints = store, n_train, progress, checkpoints
        self.groups = {g.group_id: g for g in groups}
        self.last_epoch: dict[str, int] = {}
        self.started: set[str] = set()

    def task(self, g: PlannedGroup, data) -> GroupTask:
        from batchlab.engine import Checkpoint, Group

        saved = self.store.checkpoint(g.group_id)
        self.last_epoch[g.group_id] = -1 if saved is None else saved.epoch
        resume = None if saved is None else Checkpoint(saved.epoch, saved.wall_time_s, saved.leaves, saved.active)
        p = g.point
        group = Group(g.batch_size, tuple(r.lr for r in g.runs), tuple(r.init_seed for r in g.runs),
                      tuple(r.order_seed for r in g.runs),
                      warmup_from=tuple(r.point.lr for r in g.runs) if p.warmup_epochs else None,
                      warmup_epochs=p.warmup_epochs)
        return GroupTask(g.group_id, p, group, g.epochs, data, resume, self.checkpoints)

    def handle(self, message: Message) -> None:
        if isinstance(message, EpochDone):
            self._epoch(message)
        elif isinstance(message, GroupDone):
            self._done(message)

    def _epoch(self, m: EpochDone) -> None:
        g, rec = self.groups[m.group_id], m.record
        if rec.epoch <= self.last_epoch[m.group_id]:
            return
        if m.group_id not in self.started:
            self.started.add(m.group_id)
            self.store.mark_runs([r.run_id for r in g.runs], status="running")
            if self.progress:
                self.progress.start_group(m.group_id, batch_size=g.batch_size, epochs=g.epochs,
                                          steps_per_epoch=updates_per_epoch(self.n_train, g.batch_size),
                                          n_replicas=len(g.runs), done_epochs=max(rec.epoch - 1, 0))
        gns = rec.probe or [None] * len(g.runs)
        rows = [EpochRow(r.run_id, rec.epoch, rec.updates, rec.examples_seen, rec.wall_time_s, rec.train_loss[i],
                         rec.train_acc[i], rec.test_loss[i], rec.test_acc[i], rec.step_losses[i], gns[i])
                for i, r in enumerate(g.runs) if rec.active[i]]
        cp = rec.checkpoint
        self.store.write_epoch(rows, diverged=[r.run_id for r, d in zip(g.runs, rec.diverged) if d],
                               compile_time_s=m.compile_time_s,
                               checkpoint=None if cp is None else
                               GroupCheckpoint(m.group_id, cp.epoch, cp.wall_time_s, cp.active, cp.leaves))
        self.last_epoch[m.group_id] = rec.epoch
        if self.progress and rec.epoch > 0:
            self.progress.epoch_done(m.group_id, epoch=rec.epoch, wall_time_s=rec.wall_time_s,
                                     diverged=int(rec.diverged.sum()))

    def _done(self, m: GroupDone) -> None:
        g = self.groups[m.group_id]
        for r, params in zip(g.runs, m.final_params):
            self.store.save_params(r.run_id, params, kind="final")
        self.store.write_run_metrics({r.run_id: metrics for r, metrics in zip(g.runs, m.end_metrics) if metrics})
        self.store.finish_runs([r.run_id for r in g.runs], status="completed" if m.finished else "interrupted")
        if self.progress:
            self.progress.end_group(m.group_id)

    def mark_unfinished(self) -> None:
        """Runs of groups that started but did not finish (a stop request, a lost worker) become interrupted."""
        for gid in self.started:
            self.store.mark_runs([r.run_id for r in self.groups[gid].runs], status="interrupted")


@contextmanager
def stop_on_interrupt() -> Iterator[Callable[[], bool]]:
    """Within the block, the first Ctrl-C asks training to stop after the current epoch (finished epochs are
    kept); a second Ctrl-C interrupts at once."""
    requested = False
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        nonlocal requested
        if requested:
            raise KeyboardInterrupt
        requested = True
        print("\nStopping after the current epoch (Ctrl-C again to abort now)...", file=sys.stderr)

    signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: requested
    finally:
        signal.signal(signal.SIGINT, previous)
