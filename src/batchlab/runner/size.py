"""How big a study is before it is registered: epochs per run, replica-steps, disk and memory, with bounds.

The spec and sweep bound what they can see without data (seeds, budgets, axis values, grid points, runs:
:mod:`batchlab.spec`, :mod:`batchlab.sweep`). Once the data are loaded and the runs planned, this module estimates
the rest and refuses, in one line with the estimate, a study that could not finish or would not fit: more epochs
per run than `--epochs` allows, more replica-steps than a machine trains in weeks, more disk than is free, or a
model of which not even one replica fits in the memory budget.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchlab.data.dataset import Dataset
from batchlab.errors import invalid
from batchlab.runner.plan import PlannedGroup
from batchlab.spec import updates_per_epoch

MAX_EPOCHS_PER_RUN = 1_000_000
"""As `--epochs`: a step or example budget may not ask for more epochs than that at any batch size."""
MAX_REPLICA_STEPS = 10**12
"""Replica-steps (optimizer updates summed over every run) in one study."""
REFERENCE_STEPS_PER_S = 270_000
"""Replica-steps per second of the default digits MLP at batch size 1 on one core of our 2-core CPU machine
(README, Speed: 269,711 measured by `python -m bench`): the yardstick for time in size messages; models and
machines differ, so a message says so."""
WAL_BYTES = 1000 * 4096
"""SQLite's write-ahead log grows to its auto-checkpoint size (1,000 pages of 4 KiB) beside the database."""
EPOCH_ROW_BYTES = 200
"""Store bytes per run and epoch besides the step losses (the epochs row, the steps row's key; measured: the
default run's 200 epoch rows and 143,800 step losses take 0.95 MB)."""


@dataclass(frozen=True)
class SizeEstimate:
    """What a study will train and store (upper estimates)."""

    runs: int
    replica_steps: int
    store_bytes: int
    """study.db (step losses at 4 bytes each, epoch rows, one checkpoint per group), its write-ahead log and the
    init/final npz files."""

    def __repr__(self) -> str:
        return (f"SizeEstimate({self.runs:,} runs, {self.replica_steps:,} replica-steps, "
                f"{human_bytes(self.store_bytes)})")

    @property
    def hours_at_reference(self) -> float:
        return self.replica_steps / REFERENCE_STEPS_PER_S / 3600


def estimate(groups: list[PlannedGroup], n_train: int, n_params: dict[str, int]) -> SizeEstimate:
    """The size of the planned `groups` on `n_train` examples; `n_params[group_id]` is its model's parameter count
    (a checkpoint holds parameters and up to two optimizer moments per replica)."""
    runs = steps = store = 0
    for g in groups:
        per_run_steps = g.epochs * updates_per_epoch(n_train, g.batch_size)
        params = 4 * n_params[g.group_id]
        runs += len(g.runs)
        steps += len(g.runs) * per_run_steps
        store += len(g.runs) * (4 * per_run_steps + EPOCH_ROW_BYTES * (g.epochs + 1) + 2 * params) + \
            3 * params * len(g.runs)
    return SizeEstimate(runs, steps, store + WAL_BYTES)


def check_size(groups: list[PlannedGroup], data: Dataset, models: Any, out: Path) -> SizeEstimate:
    """Raise BatchlabError (one line, with the estimate) if the planned study is too large to run or store;
    `models.get(point)` gives each group's model. Returns the estimate."""
    for g in groups:
        if g.epochs > MAX_EPOCHS_PER_RUN:
            p = g.point
            field, value = ("budget_steps", p.budget_steps) if p.budget_steps is not None else \
                ("budget_examples", p.budget_examples) if p.budget_examples is not None else ("epochs", p.epochs)
            raise invalid(field, value, f"a budget of at most {MAX_EPOCHS_PER_RUN:,} epochs per run (batch size "
                          f"{g.batch_size:,} would need {g.epochs:,} epochs of {updates_per_epoch(data.n_train, g.batch_size):,} "
                          "updates)")
    n_params = {g.group_id: models.get(g.point).footprint(data.n_features)[0] for g in groups}
    size = estimate(groups, data.n_train, n_params)
    if size.replica_steps > MAX_REPLICA_STEPS:
        raise invalid("sweep", f"{size.runs:,} runs, {size.replica_steps:.3g} replica-steps in all",
                      f"at most {MAX_REPLICA_STEPS:.0e} replica-steps per study (about "
                      f"{size.hours_at_reference / 24:,.0f} days at the default MLP's ~{REFERENCE_STEPS_PER_S:,} "
                      "replica-steps/s on one core; fewer epochs, runs or batch sizes)")
    free = shutil.disk_usage(_existing(out)).free
    if size.store_bytes > free:
        raise invalid("out", str(out), f"a disk with room for the study (it would store ~{human_bytes(size.store_bytes)}"
                      f" for {size.runs:,} runs and {size.replica_steps:,} replica-steps; "
                      f"{human_bytes(free)} are free there)")
    return size


def check_replica_fits(per_replica: int, free: int, *, batch_size: int, n_params: int, device: str) -> None:
    """Refuse a model of which one replica at `batch_size` needs more than the `free` device memory, before
    anything is registered (instead of an out-of-memory error from the device mid-training)."""
    if per_replica > free:
        raise invalid("model", f"{n_params:,} parameters", f"a model of which one replica fits in memory: at batch "
                      f"size {batch_size:,} it needs ~{human_bytes(per_replica)} (parameters, gradients, optimizer "
                      f"moments, a step's activations, the evaluation) and {device} has {human_bytes(free)} free; "
                      "use a smaller model (--hidden), smaller batch sizes, or a device with more memory")


def human_bytes(n: float) -> str:
    """Bytes in decimal units, e.g. 1.5 GB."""
    unit = "B"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            break
        n /= 1000
    return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"


def _existing(path: Path) -> Path:
    return next((p for p in (path, *path.parents) if p.exists()), Path("."))
