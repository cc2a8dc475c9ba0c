"""Run a study or a sweep end to end, in one direction: plan (no JAX) -> data and models, loaded once ->
register every run -> execute the groups -> record.

The driver validates everything before the study directory is created (data, rates, size), takes the
directory's lock (one writer per study, :mod:`batchlab.store.lock`), plans the groups (one vmapped program per
batch size and model setting, chunked to fit memory), hands them to an executor, and alone writes the store from
the messages the groups send back (:mod:`batchlab.runner.recorder`). Re-running a sweep into its directory (or
`batchlab resume DIR`) resumes it: finished runs are skipped, a group in flight restarts from its last committed
checkpoint, and a changed study file, data file or model file is refused. The library, not the CLI, decides how a
training process uses the CPU (:mod:`batchlab.runner.cores`), so `batchlab run` and `batchlab.run()` give the
same numbers.
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
from batchlab.errors import BatchlabError, invalid
from batchlab.runner.cores import reproducible_here
from batchlab.runner.inputs import check_inputs, pin_inputs
from batchlab.runner.plan import PlannedGroup, plan
from batchlab.runner.progress import Progress
from batchlab.runner.recorder import Recorder
from batchlab.runner.size import check_replica_fits, check_size
from batchlab.runner.tasks import GroupTask
from batchlab.spec import FLOAT32_MAX, FLOAT32_TINY, StudySpec, check_adam_rule, updates_per_epoch
from batchlab.store.db import (
    RunInfo,
    Store,
    StudyDamaged,
    check_out,
    remove_study,
    require_directory_path,
    study_exists,
)
from batchlab.store.lock import LockWaitStopped, StudyLock
from batchlab.sweep import Sweep, build_sweep

FINISHED = ("completed", "diverged")
EXECUTORS = ("local", "ray")
MODEL_FIELDS = ("model", "hidden", "activation", "image_shape", "device", "layers", "width", "heads")
"""The spec fields that decide which model a sweep point trains (the dataset is the same for every point)."""


@dataclass(frozen=True)
class RunOutcome:
    """Where a study was written and whether every run reached its end (read it back with
    :class:`batchlab.results.StudyResults`)."""

    directory: Path
    completed: bool
    wall_time_s: float
    failures: tuple[str, ...] = ()
    """One line per group that failed (its worker died again and again, or its training raised)."""

    def __repr__(self) -> str:
        state = "completed" if self.completed else "failed" if self.failures else "interrupted"
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


def check_executor(executor: str, workers: int, address: str | None = None) -> None:
    """Raise BatchlabError unless `executor` is local or ray (installed, and reachable at `address`) and `workers`
    an integer >= 1."""
    if executor not in EXECUTORS:
        raise BatchlabError(f"executor: got {executor!r}; allowed: {', '.join(EXECUTORS)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise BatchlabError(f"workers: got {workers!r}; allowed: an integer >= 1")
    if executor == "ray":
        from batchlab.runner.executors import check_ray

        check_ray(address)


RUN_CHECKPOINT_EVERY_S = 30.0
"""`batchlab run` keeps its groups' state at most this often (and when it stops), not every epoch: per-epoch
checkpoints cost the default run ~50% more training time on this machine (batch size 1: 0.70 s -> 1.07 s). A run
killed between checkpoints trains the epochs since the last one again on resume, to the same numbers (the epochs
it had recorded are skipped, not written twice)."""
SWEEP_CHECKPOINT_EVERY_S = 10.0
"""Sweeps (and their workers) likewise keep each group's state at most every this many seconds and when stopped:
a group of 64 replicas of the digits MLP holds 2.5 MB of parameters and momenta, and writing it after every epoch
cost 9% of a 512-batch group's training time (4.7 s -> 4.3 s for 30 epochs). A kill -9 costs at most this much
training again per group in flight."""
KINDS = ("run", "sweep")


def run_study(spec: StudySpec, out: str | Path, *, resume: bool = False, overwrite: bool = False,
              **kwargs: Any) -> RunOutcome:
    """Train every batch size and seed of `spec` into `out`: a new directory, or with `resume` the directory of
    an interrupted run of the same spec, or with `overwrite` a directory whose study is replaced (see
    :func:`run_sweep`)."""
    return run_sweep(Sweep(spec), out, resume=resume, overwrite=overwrite, kind="run", **kwargs)


def resume_study(out: str | Path, **kwargs: Any) -> RunOutcome:
    """Finish the interrupted study in `out` (made by `batchlab run` or `batchlab sweep`) from its own record of
    what it trains, exactly as if it had not stopped (see :func:`run_sweep`)."""
    store = Store.open(out)
    try:
        meta = store.meta(required={"spec": dict, "axes": list})
    finally:
        store.close()
    try:
        sweep = build_sweep({**meta["spec"], **{name: values for name, values in meta["axes"]}})
    except BatchlabError as e:
        raise StudyDamaged(f"dir: {out}/study.db does not describe a study this batchlab can train ({e})") from None
    return run_sweep(sweep, out, resume=True, kind=meta.get("kind", "sweep"), **kwargs)


def run_sweep(sweep: Sweep, out: str | Path, *, resume: bool = True, overwrite: bool = False, kind: str = "sweep",
              wait: bool = False, workers: int = 1, executor: str = "local", address: str | None = None,
              progress: Progress | None = None, should_stop: Callable[[], bool] = lambda: False,
              memory_budget: int | None = None) -> RunOutcome:
    """Train every run of `sweep` into `out`, resuming what an earlier, interrupted call left there.

    `executor` is `local` (this process with workers=1, else `workers` processes on their own cores) or `ray`
    (Ray tasks on the cluster at `address`). The process holds `out`'s lock (:mod:`batchlab.store.lock`) from
    before it looks at the directory until it returns; another writer holding it is an error (with `wait`: it
    waits). Raises BatchlabError, before anything is written, if the data, batch sizes, device, size or `out` are
    not acceptable, if `out` holds a different study (or one made by the other command, `kind`), or if a data or
    model file changed since the study was created. `overwrite` deletes the study in `out` first.
    """
    check_executor(executor, workers, address)
    if resume and overwrite:
        raise BatchlabError("overwrite: got True with resume=True; allowed: one of them (resume keeps the study in "
                            "out, overwrite replaces it)")
    out = Path(out)
    require_directory_path("out", out)
    if not wait:
        StudyLock.check_free(out)  # a quick refusal, before the data are loaded
    if study_exists(out) and not overwrite:  # fail fast, before loading anything; checked again under the lock
        if not resume:
            check_out(out)
        _check_same_study(out, sweep, kind)
    in_process = executor == "local" and workers == 1
    if in_process and not reproducible_here():
        in_process = False  # train in one pinned worker process: the same numbers as `batchlab run`

    from batchlab.data.load import load_dataset
    from batchlab.train.device import enable_compilation_cache, resolve_device

    enable_compilation_cache()
    data = load_dataset(sweep.base)
    points = sweep.points()
    check_rates(points, data.n_train)
    device = resolve_device(sweep.base.device)
    models = ModelCache(data)
    fresh = not out.exists()
    try:
        lock = StudyLock.acquire(out, wait=wait, should_stop=should_stop)
    except LockWaitStopped:
        return RunOutcome(out, False, 0.0)
    try:
        store, groups = _open_or_create(out, sweep, kind, data, models, device, memory_budget, resume=resume,
                                        overwrite=overwrite)
    except BaseException:
        lock.release(remove=fresh and not study_exists(out))
        if fresh:
            _remove_if_empty(out)
        raise
    with lock:
        return _train(store, groups, data, models, out, kind=kind, executor=executor, workers=workers,
                      address=address, progress=progress, should_stop=should_stop, in_process=in_process)


def _open_or_create(out: Path, sweep: Sweep, kind: str, data: Dataset, models: ModelCache, device: Any,
                    memory_budget: int | None, *, resume: bool, overwrite: bool) -> tuple[Store, list[PlannedGroup]]:
    """Under the lock: the study in `out` opened for writing, or a new one created and every run registered."""
    from batchlab.train.device import describe_device

    if overwrite and study_exists(out):
        remove_study(out)
    if study_exists(out):
        if not resume:
            check_out(out)
        meta = _check_same_study(out, sweep, kind)
        groups = plan(sweep, n_train=data.n_train, max_replicas=meta["max_replicas"])
        store = Store.open(out, write=True)
        statuses = store.statuses()
        planned = [r.run_id for g in groups for r in g.runs]
        if any(r not in statuses for r in planned):
            store.close()
            raise StudyDamaged(f"dir: {out}/study.db is damaged: it holds {sum(r in statuses for r in planned)} of "
                               f"the {len(planned)} runs its study defines; the parameter files and any exported "
                               "files are untouched (start again in a new directory)")
        store.interrupt_running()  # a dead writer's
        return store, groups
    points = sweep.points()
    max_replicas = _max_replicas(points, data, models, device, memory_budget)
    groups = plan(sweep, n_train=data.n_train, max_replicas=max_replicas)
    check_size(groups, data, models, out)
    meta = {"kind": kind, "spec": sweep.base.to_dict(), "axes": [[n, list(v)] for n, v in sweep.axes],
            "fingerprint": sweep.fingerprint(), "inputs": pin_inputs(sweep), "versions": versions(),
            "device": describe_device(device), "dataset": data.summary(), "model": repr(models.get(sweep.base)),
            "batch_sizes": sorted({g.batch_size for g in groups}), "max_replicas": max_replicas,
            "replica_chunks": [len(g.runs) for g in groups], "created_at": time.time()}
    store = Store.create(out, meta=meta)
    try:
        _register(store, groups, data, models, meta)
        store.publish()
    except BaseException:
        store.discard()
        raise
    return store, groups


def _train(store: Store, groups: list[PlannedGroup], data: Dataset, models: ModelCache, out: Path, *, kind: str,
           executor: str, workers: int, address: str | None, progress: Progress | None,
           should_stop: Callable[[], bool], in_process: bool) -> RunOutcome:
    t0 = time.perf_counter()
    recorder = None
    try:
        statuses = store.statuses()
        todo = [g for g in groups if any(statuses[r.run_id] not in FINISHED for r in g.runs)]
        recorder = Recorder(store, todo, data.n_train, progress,
                            checkpoint_every_s=RUN_CHECKPOINT_EVERY_S if kind == "run" else SWEEP_CHECKPOINT_EVERY_S)
        tasks = [recorder.task(g, data) for g in todo]
        _execute(tasks, recorder, data, models, executor=executor, workers=workers, address=address,
                 should_stop=should_stop, in_process=in_process)
        statuses = store.statuses()  # the study's own runs (branches of `batchlab branch` finish there)
        completed = all(statuses[r.run_id] in FINISHED for g in groups for r in g.runs)
    finally:
        if recorder is not None:
            try:
                recorder.mark_unfinished()
            except BatchlabError:
                pass  # a full disk: runs left `running` are treated as interrupted by the next writer
        store.close()
    return RunOutcome(out, completed, time.perf_counter() - t0, tuple(recorder.failures.values()))


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass


def check_rates(points: list[StudySpec], n_train: int) -> None:
    """Every run's learning rate (after scaling with the batch size) must be one float32 holds."""
    for p in points:
        for b in p.resolved_batch_sizes(n_train):
            lr = p.lr_for(b)
            if not FLOAT32_TINY <= lr <= FLOAT32_MAX:
                raise invalid("lr", p.lr, f"a rate that float32 holds at every batch size ({p.lr_scaling} scaling "
                              f"gives {lr:.3g} at batch size {b}; float32 holds 1.2e-38 to 3.4e38)")
        check_adam_rule(p, p.resolved_batch_sizes(n_train))


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
    """How many replicas of the largest batch size fit in the memory budget (half the free device memory);
    refused when not even one fits in all of the free memory."""
    from batchlab.train.device import describe_device, memory_budget_bytes, model_replica_bytes

    batch_size = max(max(p.resolved_batch_sizes(data.n_train)) for p in points)
    sizes = {"n_features": data.n_features, "n_train": data.n_train, "n_test": len(data.y_test),
             "batch_size": batch_size, "tokens_per_example": data.tokens_per_example}
    largest = max(points, key=lambda p: model_replica_bytes(models.get(p), **sizes))
    per_replica = model_replica_bytes(models.get(largest), **sizes)
    if memory_budget is None:
        check_replica_fits(per_replica, memory_budget_bytes(device, fraction=1.0), batch_size=batch_size,
                           device=describe_device(device), n_params=models.get(largest).footprint(data.n_features)[0])
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
                      retry=lambda gid: recorder.task(recorder.groups[gid], data), fail=recorder.fail)
    else:
        from batchlab.runner.executors import run_inline

        run_inline(tasks, recorder.handle, should_stop, model_for=lambda task: models.get(task.point))


def _check_same_study(out: str | Path, sweep: Sweep, kind: str) -> dict[str, Any]:
    """The metadata of the study in `out`, if `sweep` (and the command, `kind`) may resume it: the same runs
    (fingerprint), made by the same command, from unchanged data and model files."""
    store = Store.open(out)
    try:
        meta = store.meta(required={"fingerprint": str, "max_replicas": int})
    finally:
        store.close()
    made_by = meta.get("kind")
    if made_by in KINDS and made_by != kind:
        raise BatchlabError(f"out: {out} holds a study made by 'batchlab {made_by}'; allowed: batchlab resume {out} "
                            f"to finish it, or a new --out directory")
    if meta["fingerprint"] != sweep.fingerprint():
        raise BatchlabError(f"out: {out} holds a different study (its runs were defined by another study file); "
                            "allowed: the same study file to resume, or a new --out directory")
    check_inputs(meta.get("inputs"), sweep, Path(out))
    return meta


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
