"""Export a study to where people already look: plain files, TensorBoard, MLflow.

``batchlab export DIR --format FORMAT --to TARGET`` and :func:`export` call one exporter per format (in
`batchlab.interop.export`); each imports its library only when used, and a missing one is a one-line error naming
the extra to install.

======================  ==========================================  ============================================
format                  TARGET                                      writes
======================  ==========================================  ============================================
csv                     a directory                                 runs.csv, epochs.csv, steps.csv
parquet                 a directory                                 runs.parquet, epochs.parquet, steps.parquet
tensorboard             a log directory                             one run directory of event files per run
mlflow                  a tracking URI ``sqlite:///FILE.db``        one MLflow run per run, under a study run
======================  ==========================================  ============================================
"""

from __future__ import annotations

from pathlib import Path

from batchlab.errors import invalid
from batchlab.interop.export.csv import export_csv
from batchlab.interop.export.mlflow import MlflowExport, export_mlflow
from batchlab.interop.export.parquet import export_parquet
from batchlab.interop.export.tensorboard import export_tensorboard
from batchlab.store.db import check_outside_study

FORMATS = {"csv": "", "parquet": "parquet", "tensorboard": "tensorboard", "mlflow": "mlflow"}
"""Export format -> the batchlab extra it needs ("" for none)."""

__all__ = ["FORMATS", "MlflowExport", "export", "export_csv", "export_mlflow", "export_parquet",
           "export_tensorboard"]


def export(directory: str | Path, *, format: str, to: str | Path,
           max_step_points: int | None = None) -> list[Path] | MlflowExport:
    """Export the study in `directory` as `format` to `to` (see the table above); returns the files or run
    directories written, or for mlflow where the runs went. `max_step_points` (tensorboard, mlflow) caps the
    per-step losses per run (default: all for tensorboard, 10,000 min/max-decimated for mlflow; 0: all).

    Example::

        batchlab.interop.export.export("runs/wine", format="mlflow", to="sqlite:///mlflow.db")
    """
    if format not in FORMATS:
        raise invalid("format", format, ", ".join(FORMATS))
    if max_step_points is not None and format in ("csv", "parquet"):
        raise invalid("max_step_points", max_step_points, "only with the tensorboard and mlflow formats (csv and "
                      "parquet keep every step)")
    if format == "mlflow":
        if isinstance(to, str) and to.startswith("sqlite:///"):
            check_outside_study("to", to[len("sqlite:///"):], directory)
    else:
        check_outside_study("to", to, directory)
    if format == "csv":
        return export_csv(directory, to)
    if format == "parquet":
        return export_parquet(directory, to)
    if format == "tensorboard":
        return export_tensorboard(directory, to, max_step_points=max_step_points)
    return export_mlflow(directory, str(to), max_step_points=max_step_points)
