"""batchlab: measure, show and explain what the mini-batch size does to neural-network training.

Example::

    import batchlab
    spec = batchlab.StudySpec(batch_sizes=(1, 32, "full"), epochs=20, seeds=3)
    result = batchlab.run_study(spec, "runs/example")
    results = batchlab.StudyResults.load(result.directory)
    print(results.explanation())

Importing batchlab is cheap: JAX is imported only when training starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batchlab.errors import BatchlabError
from batchlab.spec import StudySpec, build_spec

__version__ = "0.1.0"
__all__ = ["BatchlabError", "StudySpec", "StudyResults", "build_spec", "run_study", "export_csv"]

if TYPE_CHECKING:
    from batchlab.export import export_csv
    from batchlab.results import StudyResults
    from batchlab.study import run_study

_LAZY = {"run_study": "batchlab.study", "StudyResults": "batchlab.results", "export_csv": "batchlab.export"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'batchlab' has no attribute {name!r}")
