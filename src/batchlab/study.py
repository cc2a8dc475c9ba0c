"""Run a study end to end: spec -> data and model -> engine (one group per batch size) -> store.

This is the Python entry point the CLI calls; everything is validated before the study directory is created.
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
from batchlab.spec import StudySpec, run_id, updates_per_epoch
from batchlab.store import EpochRow, RunInfo, Store, check_out


class Progress(Protocol):
    """What the runner tells a progress display (see `batchlab.progress.RichProgress`)."""

    def start_group(self, *, batch_size: int, epochs: int, steps_per_epoch: int, n_replicas: int) -> None: ...
    def epoch_done(self, *, epoch: int, wall_time_s: float) -> None: ...
    def end_group(self) -> None: ...


@dataclass(frozen=True)
class StudyResult:
    """Where a study was written and whether it ran to the end."""

    directory: Path
    completed: bool
    wall_time_s: float

    def __repr__(self) -> str:
        state = "completed" if self.completed else "interrupted"
        return f"StudyResult({str(self.directory)!r}, {state}, {self.wall_time_s:.1f} s)"


def versions() -> dict[str, str]:
    """Library versions recorded with every run."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("batchlab", "jax", "jaxlib", "optax", "numpy", "scikit-learn"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def run_study(spec: StudySpec, out: str | Path, *, progress: Progress | None = None,
              should_stop: Callable[[], bool] = lambda: False, memory_budget: int | None = None) -> StudyResult:
    """Train every batch size of `spec` (all seeds of one batch size vmapped together) and record it in `out`.

    Raises BatchlabError, before anything is written, if the data, the batch sizes, the device or `out` are
    not acceptable. Replicas that do not fit in `memory_budget` bytes (default: half the device's free memory)
    are trained in turns, in chunks.
    """
    check_out(out)
    from batchlab.data import load_dataset
    from batchlab.device import (chunk_replicas, describe_device, enable_compilation_cache, memory_budget_bytes,
                                 replica_bytes, resolve_device)
    from batchlab.models import make_model

    enable_compilation_cache()
    data = load_dataset(spec)
    batch_sizes = spec.resolved_batch_sizes(data.n_train)
    device = resolve_device(spec.device)
    model = make_model(spec.model, n_features=data.n_features, n_classes=data.n_classes, hidden=spec.hidden,
                       activation=spec.activation)
    meta = {"spec": spec.to_dict(), "versions": versions(), "device": describe_device(device),
            "dataset": {"name": data.name, "n_train": data.n_train, "n_test": len(data.y_test),
                        "n_features": data.n_features, "n_classes": data.n_classes},
            "model": repr(model), "batch_sizes": batch_sizes, "created_at": time.time()}

    per_replica = replica_bytes(model.layer_sizes, n_train=data.n_train, n_test=len(data.y_test),
                                batch_size=max(batch_sizes))
    budget = memory_budget_bytes(device) if memory_budget is None else memory_budget
    chunks = chunk_replicas(spec.seeds, per_replica, budget)
    store = Store.create(out, meta={**meta, "replica_chunks": [len(c) for c in chunks]})
    t0 = time.perf_counter()
    completed = True
    try:
        for b in batch_sizes:
            runs = [RunInfo(run_id(spec, batch_size=b, seed_index=i), b, spec.lr_for(b), spec.seed + i,
                            spec.seed + i, spec.order_seed + i, data.n_train, updates_per_epoch(data.n_train, b),
                            spec.epochs) for i in range(spec.seeds)]
            store.add_runs(runs, config=spec.to_dict(), versions=meta["versions"], device=meta["device"])
            for chunk in chunks:
                completed = _train_group(store, [runs[i] for i in chunk], model, data, spec, device, progress,
                                         should_stop)
                if not completed:
                    return StudyResult(Path(out), False, time.perf_counter() - t0)
    finally:
        store.close()
    return StudyResult(Path(out), completed, time.perf_counter() - t0)


def _train_group(store: Store, runs: list[RunInfo], model, data, spec: StudySpec, device, progress: Progress | None,
                 should_stop: Callable[[], bool]) -> bool:
    """Train one pack of replicas (one batch size) as a single vmapped program, recording every epoch."""
    from batchlab.engine import Group, GroupRun, init_replicas
    from batchlab.models import flatten_params

    group = Group(runs[0].batch_size, tuple(r.lr for r in runs), tuple(r.init_seed for r in runs),
                  tuple(r.order_seed for r in runs))
    gr = GroupRun(model, data, group, spec.epochs, spec.optimizer, spec.momentum, device)
    initial = init_replicas(model, group.init_seeds)
    for i, r in enumerate(runs):
        store.save_params(r.run_id, flatten_params(_replica(initial, i)), kind="init")
    if progress:
        progress.start_group(batch_size=group.batch_size, epochs=spec.epochs,
                             steps_per_epoch=runs[0].updates_per_epoch, n_replicas=len(runs))

    def record(rec) -> None:
        rows = [EpochRow(r.run_id, rec.epoch, rec.updates, rec.examples_seen, rec.wall_time_s, rec.train_loss[i],
                         rec.train_acc[i], rec.test_loss[i], rec.test_acc[i], rec.step_losses[i])
                for i, r in enumerate(runs) if rec.active[i]]
        store.write_epoch(rows, diverged=[r.run_id for r, d in zip(runs, rec.diverged) if d],
                          compile_time_s=gr.compile_time_s)
        if progress and rec.epoch > 0:
            progress.epoch_done(epoch=rec.epoch, wall_time_s=rec.wall_time_s)

    finished = gr.train(record, should_stop, initial_params=initial)
    for i, r in enumerate(runs):
        store.save_params(r.run_id, flatten_params(_replica(gr.final_params, i)), kind="final")
    store.finish_runs([r.run_id for r in runs], status="completed" if finished else "interrupted")
    if progress:
        progress.end_group()
    return finished


def _replica(stacked, i: int):
    import jax

    return jax.tree_util.tree_map(lambda a: a[i], stacked)


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
