"""Export a study to plain files: `runs.csv`, `epochs.csv` and `steps.csv`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from batchlab.store import EPOCH_FIELDS, Store, require_directory_path

RUN_FIELDS = ("run_id", "batch_size", "lr", "seed", "init_seed", "order_seed", "status", "diverged_epoch",
              "updates_per_epoch", "epochs_planned", "epochs_done", "total_updates", "examples_seen", "wall_time_s",
              "compile_time_s", "n_train", "device", "versions", "config")


def export_csv(directory: str | Path, to: str | Path) -> list[Path]:
    """Write runs.csv (wall_time_s is training time without compile), epochs.csv and steps.csv into `to`."""
    out = Path(to)
    require_directory_path("to", out)
    store = Store.open(directory)
    out.mkdir(parents=True, exist_ok=True)
    try:
        runs = store.runs()
        with (out / "runs.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(RUN_FIELDS)
            for r in runs:
                w.writerow([json.dumps(r[k], sort_keys=True) if k in ("versions", "config") else _cell(r[k])
                            for k in RUN_FIELDS])
        with (out / "epochs.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(("run_id",) + EPOCH_FIELDS)
            for r in runs:
                e = store.epochs(r["run_id"])
                for i in range(len(e["epoch"])):
                    w.writerow([r["run_id"], *(_cell(e[k][i]) for k in EPOCH_FIELDS)])
        with (out / "steps.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(("run_id", "step", "epoch", "batch_loss"))
            for r in runs:
                epochs, losses = store.step_losses(r["run_id"])
                w.writerows((r["run_id"], i + 1, int(e), repr(float(v))) for i, (e, v) in enumerate(zip(epochs, losses)))
    finally:
        store.close()
    return [out / "runs.csv", out / "epochs.csv", out / "steps.csv"]


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        return "" if not np.isfinite(v) else repr(float(v))
    return v
