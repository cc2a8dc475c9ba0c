"""The terminal report's tables as single rich Tables (the layouts for a terminal's width are
:mod:`batchlab.report.tables`'; the words are :mod:`batchlab.report.answer`'s)."""

from __future__ import annotations

from rich.table import Table

from batchlab.analysis.runs import RunSummary
from batchlab.analysis.sweeps import Cell


def runs_table(summaries: list[RunSummary], *, title: str = "Runs", task: str = "classification") -> Table:
    """One row per run with every column; the tables live in `batchlab.report.tables`, laid out for a
    terminal's width (see :func:`batchlab.report.tables.runs_tables`)."""
    from batchlab.report.tables import runs_tables

    return runs_tables(summaries, task=task, title=title, wide=True)[0]


def grid_table(cells: list[Cell], best: dict[int, float], *, title: str = "Sweep") -> Table:
    """Batch sizes down, learning rates across, in one table (see :func:`batchlab.report.tables.grid_tables`)."""
    from batchlab.report.tables import grid_tables

    return grid_tables(cells, best, title=title, wide=True)[0]
