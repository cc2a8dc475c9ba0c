"""batchlab: measure, show and explain what the mini-batch size does to neural-network training.

Example (a notebook or a script; seconds on a CPU)::

    import batchlab

    spec = batchlab.make_study(dataset="wine", batch_sizes=[1, 16, "full"], epochs=20, seeds=2)
    results = batchlab.run(spec, out="runs/wine")      # StudyResults; a progress bar on stderr
    print(results.explanation())                        # measured numbers, in words
    results.runs_df()                                   # pandas DataFrames: runs_df, epochs_df, steps_df
    results.epochs_df(format="polars")                  # or polars (extras: batchlab[pandas], batchlab[polars])
    results.figure("overlay"); results.write_report()   # one PNG; report.html
    results.export("mlflow", "sqlite:///mlflow.db")     # or csv, parquet, tensorboard

    results = batchlab.open("runs/wine")                # a finished study directory, later
    sweep = batchlab.load_study("sweep.toml")           # a TOML study file (lists make axes)

The public names are in ``__all__``: ``make_study``, ``load_study``, ``run``, ``open`` (see `batchlab.api`);
``StudySpec``, ``Sweep``, ``StudyResults``; ``BatchlabError`` (every user error: one line naming the field, its
value and what is allowed); and the lower-level ``build_spec``, ``run_study`` and ``export_csv``. (It is
``make_study``, not ``study``.)

Importing batchlab is cheap: JAX, NumPy and the optional libraries are imported only when needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batchlab.errors import BatchlabError
from batchlab.spec import StudySpec, build_spec

__version__ = "0.1.0"
__all__ = [
    "BatchlabError",
    "StudyResults",
    "StudySpec",
    "Sweep",
    "build_spec",
    "export_csv",
    "load_study",
    "make_study",
    "open",
    "run",
    "run_study",
]

if TYPE_CHECKING:
    from batchlab.api import load_study, make_study, open, run
    from batchlab.interop.export.csv import export_csv
    from batchlab.results import StudyResults
    from batchlab.runner.driver import run_study
    from batchlab.sweep import Sweep

_LAZY = {"make_study": "batchlab.api", "load_study": "batchlab.api", "run": "batchlab.api", "open": "batchlab.api",
         "run_study": "batchlab.runner.driver", "StudyResults": "batchlab.results", "Sweep": "batchlab.sweep",
         "export_csv": "batchlab.interop.export.csv"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'batchlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
