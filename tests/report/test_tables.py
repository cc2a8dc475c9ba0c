"""The terminal tables fit the width they are printed at, never shorten a cell, and print numbers compactly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from rich.console import Console

from batchlab.analysis.runs import RunSummary
from batchlab.analysis.sweeps import Cell
from batchlab.report import tables
from batchlab.report.labels import count, number, seconds
from batchlab.results import StudyResults


def summary(run_id: str, *, batch_size: int, lr: float = 0.03, seed: int = 0, status: str = "completed",
            diverged_epoch: int | None = None, updates_per_epoch: int = 1, epochs: int = 100,
            train_loss: float = 0.0871, wall_time_s: float = 52.039) -> RunSummary:
    return RunSummary(run_id, batch_size, lr, seed, status, diverged_epoch, updates_per_epoch, epochs,
                      updates_per_epoch * epochs, batch_size * updates_per_epoch * epochs, wall_time_s, 4.56, 2.3,
                      train_loss, 0.958, 0.0211, 1.0, 0.02, 10, 0.1342, 0.281, 2.196)


def render(tables_: list, width: int, *, plain: bool = True) -> str:
    with open(os.devnull, "w") as sink:
        console = Console(width=width, record=True, color_system=None, file=sink)
        tables.print_tables(console, tables_)
        return console.export_text()


# A hard case: the longest run ids a sweep makes, 60,000 examples, 6,000,000 updates, a blown-up loss, a divergence.
HARD = [
    summary("bs1-seed10-9e355b3e", batch_size=1, seed=10, lr=0.00316, updates_per_epoch=60_000,
            train_loss=1175007600291453975134208.0),
    summary("bs60000-seed10-7b1e402f", batch_size=60_000, seed=10, lr=0.3, wall_time_s=1234.5),
    summary("bs64-seed11-493f1eae", batch_size=64, seed=11, lr=0.0316, status="diverged", diverged_epoch=12,
            updates_per_epoch=938, epochs=12),
]


@pytest.mark.parametrize("width", [80, 100])
def test_runs_tables_fit_the_width_with_every_update_count_in_full(width):
    out = render(tables.runs_tables(HARD, title="a study with a long title " * 5, width=width, plain=True), width)
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "…" not in out
    for s in HARD:
        assert f"{s.total_updates:,}" in out and s.run_id in out
    assert "6,000,000" in out and "diverged @12" in out
    assert "1.18e24" in out and "1175007600" not in out
    assert not any(c in out for c in "━┃│┏")  # plain: ASCII rules only


def test_a_wide_terminal_gets_one_table_with_every_column():
    one = tables.runs_tables(HARD, width=250)
    assert len(one) == 1 and len(one[0].columns) == len(tables.RUN_COLUMNS)
    two = tables.runs_tables(HARD, width=80)
    assert len(two) == 2
    assert len(tables.runs_tables(HARD, width=80, wide=True)) == 1
    # the narrow tables together hold every column of the wide one (seed and lr repeated where they vary)
    names = {str(c.header).replace("/\n", "/").replace("\n", " ") for t in two for c in t.columns}
    assert set(tables.RUN_COLUMNS) <= names


def test_grid_splits_learning_rates_over_tables_rather_than_shortening_cells():
    lrs = [0.001 * 3 ** i for i in range(9)]
    cells = [Cell(b, lr, 3, 1 if b == 1 and i == 0 else 0, 0.123456 + i, 0.0123, 0.9, 0.01, 0.1, 1.0)
             for b in (1, 8, 64, 1437) for i, lr in enumerate(lrs)]
    cells.append(Cell(8, 5.0, 3, 3, float("nan"), float("nan"), float("nan"), float("nan"), float("nan"), 1.0))
    best = {1: lrs[0], 8: lrs[1]}
    out = render(tables.grid_tables(cells, best, width=80), 80)
    assert max(len(line) for line in out.splitlines()) <= 80 and "…" not in out
    for lr in [*lrs, 5.0]:
        assert f"lr {lr:.3g}" in out
    assert "*0.123" in out and "*1.12" in out and "diverged" in out and "1/3 div." in out
    wide = render(tables.grid_tables(cells, best, width=None), 400)
    assert "0.123 ± 0.0123 (1/3 div.)" in wide


@pytest.mark.parametrize(("value", "text"), [
    (0.0871, "0.0871"), (0.00021, "2.1e-4"), (4.5612, "4.56"), (52.039, "52.0"), (1234.5, "1,234"),
    (1175007600291453975134208.0, "1.18e24"), (1.35e6, "1.35e6"), (0.0, "0"), (float("nan"), "nan"),
    (float("inf"), "inf"), (-0.5, "-0.500"), (2.2, "2.20"), (0.0009996, "1e-3"), (12345.0, "1.23e4"),
])
def test_number_is_compact(value, text):
    assert number(value) == text
    assert len(number(value)) <= 7


def test_seconds_and_counts():
    assert seconds(0.06243) == "0.0624" and seconds(52.039) == "52.0"
    assert count(6_000_000) == "6,000,000"


def test_show_on_a_real_study_fits_80_columns_piped(wine_study):
    env = {**os.environ, "COLUMNS": "80"}
    p = subprocess.run([sys.executable, "-m", "batchlab.cli", "show", str(wine_study)], capture_output=True,
                       text=True, timeout=120, check=False, env=env)
    assert p.returncode == 0, p.stderr
    assert max(len(line) for line in p.stdout.splitlines()) <= 80
    assert "…" not in p.stdout and "━" not in p.stdout
    for s in StudyResults.load(wine_study).summaries:
        assert f"{s.total_updates:,}" in p.stdout and s.run_id in p.stdout
    wide = subprocess.run([sys.executable, "-m", "batchlab.cli", "show", str(wine_study), "--wide"],
                          capture_output=True, text=True, timeout=120, check=False, env=env)
    assert wide.returncode == 0 and "Details (same runs" not in wide.stdout and "Details (same runs" in p.stdout
