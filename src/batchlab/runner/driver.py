"""Run a study or a sweep end to end, in one direction: plan (no JAX) -> data and models, loaded once ->
register every run -> execute the groups -> record.

The driver validates everything before the study directory is created, plans the groups (one vmapped program
per batch size and model setting, chunked to fit memory), hands them to an executor, and alone writes the
store from the messages the groups send back (:mod:`batchlab.runner.recorder`). Re-running a sweep into its
directory resumes it: finished runs are skipped, a group in flight restarts from its last committed epoch, and
a changed study file is refused. The library, not the CLI, decides how a training process uses the CPU
(:mod:`batchlab.runner.cores`), so `batchlab run` and `batchlab.run()` give the same numbers.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchlab.data.dataset import Dataset
from batchlab.errors import BatchlabError
from batchlab.runner.cores import reproducible_here
from batchlab.runner.plan import PlannedGroup, plan
from batchlab.runner.progress import Progress
from batchlab.runner.recorder import Recorder
from batchlab.runner.tasks import GroupTask
from batchlab.spec import StudySpec, updates_per_epoch
from batchlab.store.db import RunInfo, Store, check_out, study_exists
from batchlab.sweep import Sweep

FINISHED = ("completed", "diverged")
EXECUTORS = ("local", "ray")
MODEL_FIELDS = ("model", "hidden", "activation", "image_shape", "device")
"""The spec fields that decide which model a sweep point trains (the dataset is the same for every point)."""


@dataclass(frozen=True)
class RunOutcome:
    """Where a study was written and whether every run reached its end (read it back with
    :class:`batchlab.results.StudyResults`)."""

    directory: Path
    completed: bool
    wall_time_s: float

    def __repr__(self) -> str:
        state = "completed" if self.completed else "interrupted"
        return f"RunOutcome({str(self.directory)!r}, {state}, {self.wall_time_s:.1f} s)"


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


def check_executor(executor: str, workers: int) -> None:
    """Raise BatchlabError unless `executor` is local or ray and `workers` an integer >= 1."""
    if executor not in EXECUTORS:
        raise BatchlabError(f"executor: got {executor!r}; allowed: {', '.join(EXECUTORS)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise BatchlabError(f"workers: got {workers!r}; allowed: an integer >= 1")


def run_study(spec: StudySpec, out: str | Path, **kwargs: Any) -> RunOutcome:
    """Train every batch size and seed of `spec` and record it in a new directory `out` (see :func:`run_sweep`)."""
    return run_sweep(Sweep(spec), out, resume=False, **kwargs)


def run_sweep(sweep: Sweep, out: str | Path, *, resume: bool = True, workers: int = 1, executor: str = "local",
              address: str | None = None, progress: Progress | None = None,
              should_stop: Callable[[], bool] = lambda: False, memory_budget: int | None = None) -> RunOutcome:
    """Train every run of `sweep` into `out`, resuming what an earlier, interrupted call left there.

    `executor` is `local` (this process with workers=1, else `workers` processes on their own cores) or `ray`
    (Ray tasks on the cluster at `address`). Raises BatchlabError, before anything is written, if the data, batch
    sizes, device or `out` are not acceptable, or if `out` holds a different study.
    """
    check_executor(executor, workers)
    existing = study_exists(out)
    if not existing or not resume:
        check_out(out)  # run refuses to write into an existing study
    if existing:
        _check_same_study(out, sweep)
    in_process = executor == "local" and workers == 1
    if in_process and not reproducible_here():
        in_process = False  # train in one pinned worker process: the same numbers as `batchlab run`

    from batchlab.data.load import load_dataset
    from batchlab.train.device import describe_device, enable_compilation_cache, resolve_device

    enable_compilation_cache()
    data = load_dataset(sweep.base)
    points = sweep.points()
    for point in points:
        point.resolved_batch_sizes(data.n_train)
    device = resolve_device(sweep.base.device)
    models = ModelCache(data)
    if existing:
        store = Store.open(out)
        max_replicas = store.meta()["max_replicas"]
    else:
        max_replicas = _max_replicas(points, data, models, device, memory_budget)
    groups = plan(sweep, n_train=data.n_train, max_replicas=max_replicas)
    if not existing:
        meta = {"spec": sweep.base.to_dict(), "axes": [[n, list(v)] for n, v in sweep.axes],
                "fingerprint": sweep.fingerprint(), "versions": versions(), "device": describe_device(device),
                "dataset": data.summary(), "model": repr(models.get(sweep.base)),
                "batch_sizes": sorted({g.batch_size for g in groups}), "max_replicas": max_replicas,
                "replica_chunks": [len(g.runs) for g in groups], "created_at": time.time()}
        store = Store.create(out, meta=meta)
        _register(store, groups, data, models, meta)
        store.publish()

    t0 = time.perf_counter()
    try:
        statuses = store.statuses()
        todo = [g for g in groups if any(statuses[r.run_id] not in FINISHED for r in g.runs)]
        recorder = Recorder(store, todo, data.n_train, progress, checkpoints=resume)
        tasks = [recorder.task(g, data) for g in todo]
        _execute(tasks, recorder, data, models, executor=executor, workers=workers, address=address,
                 should_stop=should_stop, in_process=in_process)
        recorder.mark_unfinished()
        completed = all(s in FINISHED for s in store.statuses().values())
    finally:
        store.close()
    return RunOutcome(Path(out), completed, time.perf_counter() - t0)


class ModelCache:
    """Each model setting of a sweep loaded once (user models are imported, called and checked then)."""

    def __init__(self, data: Dataset):
        self.data = data
        self._models: dict[str, Any] = {}

    def get(self, point: StudySpec) -> Any:
        from batchlab.models.registry import load_model

        key = json.dumps({f: getattr(point, f) for f in MODEL_FIELDS}, sort_keys=True, default=list)
        if key not in self._models:
            self._models[key] = load_model(point, self.data)
        return self._models[key]


def _max_replicas(points: list[StudySpec], data: Dataset, models: ModelCache, device: Any,
                  memory_budget: int | None) -> int:
    """How many replicas of the largest batch size fit in the memory budget (half the free device memory)."""
    from batchlab.train.device import memory_budget_bytes, model_replica_bytes

    batch_size = max(max(p.resolved_batch_sizes(data.n_train)) for p in points)
    per_replica = max(model_replica_bytes(models.get(p), n_features=data.n_features, n_train=data.n_train,
                                          n_test=len(data.y_test), batch_size=batch_size) for p in points)
    budget = memory_budget_bytes(device) if memory_budget is None else memory_budget
    return max(1, budget // per_replica)


def _execute(tasks: list[GroupTask], recorder: Recorder, data: Dataset, models: ModelCache, *, executor: str,
             workers: int, address: str | None, should_stop: Callable[[], bool], in_process: bool) -> None:
    if executor == "ray":
        from batchlab.runner.executors import run_ray

        run_ray(tasks, recorder.handle, should_stop, address=address)
    elif not in_process:
        from batchlab.runner.executors import run_processes

        run_processes(tasks, recorder.handle, should_stop, workers=workers,
                      retry=lambda gid: recorder.task(recorder.groups[gid], data))
    else:
        from batchlab.runner.executors import run_inline

        run_inline(tasks, recorder.handle, should_stop, model_for=lambda task: models.get(task.point))


def _check_same_study(out: str | Path, sweep: Sweep) -> None:
    store = Store.open(out)
    try:
        fingerprint = store.meta().get("fingerprint")
    finally:
        store.close()
    if fingerprint != sweep.fingerprint():
        raise BatchlabError(f"out: {out} holds a different study (its runs were defined by another study file); "
                            "allowed: the same study file to resume, or a new --out directory")


def _register(store: Store, groups: list[PlannedGroup], data: Dataset, models: ModelCache, meta: dict) -> None:
    """Record every planned run and its initial parameters before any training."""
    import jax

    from batchlab.models.params import flatten_params

    for g in groups:
        infos = [(RunInfo(r.run_id, g.group_id, r.batch_size, r.lr, r.init_seed, r.init_seed, r.order_seed,
                          data.n_train, updates_per_epoch(data.n_train, r.batch_size), r.epochs),
                  dict(r.point.to_dict(), task=data.task))  # the task trained on, also when the spec said auto
                 for r in g.runs]
        store.add_runs(infos, versions=meta["versions"], device=meta["device"])
        initial = models.get(g.point).init_replicas(tuple(r.init_seed for r in g.runs))
        for i, r in enumerate(g.runs):
            store.save_params(r.run_id, flatten_params(jax.tree_util.tree_map(lambda a, i=i: a[i], initial)))
