"""CSV export: runs.csv, epochs.csv and steps.csv (the tables of `batchlab.store.tables`; a missing value is empty)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from batchlab.interop.export.common import refuse_overwrite
from batchlab.store.db import require_directory_path
from batchlab.store.tables import OPTIONAL_TABLES, TABLE_NAMES, Columns, read_tables


def export_csv(directory: str | Path, to: str | Path) -> list[Path]:
    """Write runs.csv (wall_time_s is training time without compile), epochs.csv, steps.csv and, when the study
    evaluated between epoch ends, evals.csv into `to`.

    Example::

        batchlab.export_csv("runs/wine", "out/")   # [out/runs.csv, out/epochs.csv, out/steps.csv]
    """
    out = Path(to)
    require_directory_path("to", out)
    refuse_overwrite(out, [f"{name}.csv" for name in TABLE_NAMES])
    tables = read_tables(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in TABLE_NAMES:
        if name in OPTIONAL_TABLES and not len(next(iter(tables[name].values()))):
            continue
        paths.append(out / f"{name}.csv")
        write_csv(paths[-1], tables[name])
    return paths


def write_csv(path: Path, columns: Columns) -> None:
    cells = [[_cell(v) for v in values] for values in columns.values()]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(zip(*cells))


def _cell(v: object) -> object:
    """Integers as integers, floats as their shortest exact repr, NaN and None as an empty cell."""
    if v is None:
        return ""
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        return repr(float(v)) if np.isfinite(v) else ""
    return v
