"""Optional dependencies (pyarrow, tensorboard, mlflow, pandas, polars): imported only when a feature needs them.

A missing one is a user error, reported in one line that names the batchlab extra installing it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from batchlab.errors import BatchlabError


def import_extra(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import `module`, or raise BatchlabError: "`purpose` needs the X package ...; HINT: pip install ..."."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise BatchlabError(f"{purpose} needs the {module.split('.')[0]} package, which is not installed; "
                            f"HINT: pip install 'batchlab[{extra}]'") from None
