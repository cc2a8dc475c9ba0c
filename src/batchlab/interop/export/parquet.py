"""Parquet export: runs.parquet, epochs.parquet and steps.parquet, typed columns, a missing value as null.

Needs pyarrow (``pip install 'batchlab[parquet]'``), imported only here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from batchlab._optional import import_extra
from batchlab.interop.export.common import refuse_overwrite
from batchlab.store.db import require_directory_path
from batchlab.store.tables import NULLABLE_INTEGERS, OPTIONAL_TABLES, TABLE_NAMES, Columns, read_tables


def export_parquet(directory: str | Path, to: str | Path) -> list[Path]:
    """Write runs.parquet, epochs.parquet, steps.parquet (and evals.parquet when the study evaluated between epoch
    ends) into `to`: the CSV export's tables and columns.

    Example::

        from batchlab.interop.export import export_parquet
        paths = export_parquet("runs/wine", "out/")
        import pandas; epochs = pandas.read_parquet("out/epochs.parquet")
    """
    out = Path(to)
    require_directory_path("to", out)
    refuse_overwrite(out, [f"{name}.parquet" for name in TABLE_NAMES])
    pa = import_extra("pyarrow", extra="parquet", purpose="--format parquet")
    pq = import_extra("pyarrow.parquet", extra="parquet", purpose="--format parquet")
    tables = read_tables(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in TABLE_NAMES:
        if name in OPTIONAL_TABLES and not len(next(iter(tables[name].values()))):
            continue
        paths.append(out / f"{name}.parquet")
        pq.write_table(arrow_table(pa, tables[name]), paths[-1])
    return paths


def arrow_table(pa, columns: Columns):
    """A pyarrow Table: int64, float64 (NaN -> null) and string columns; `diverged_epoch` is a nullable int64."""
    arrays = {}
    for name, values in columns.items():
        if isinstance(values, np.ndarray) and values.dtype.kind == "f":
            arrays[name] = pa.array(values, pa.float64(), mask=np.isnan(values))
        elif isinstance(values, np.ndarray) or name in NULLABLE_INTEGERS:
            arrays[name] = pa.array(values, pa.int64())
        else:
            arrays[name] = pa.array(values, pa.string())
    return pa.table(arrays)
