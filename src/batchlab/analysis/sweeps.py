"""Results across a sweep: seeds aggregated as mean and spread, the best learning rate per batch size.

The best learning rate is chosen on the final test loss, as Shallue et al. (2018) tune per batch size on a
validation metric; batchlab's test split plays that role here, so treat the chosen rate's test numbers as
optimistic.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from batchlab.analysis.runs import RunSummary


@dataclass(frozen=True)
class Cell:
    """One (batch size, learning rate) point of a sweep, over its seeds; means skip diverged seeds."""

    batch_size: int
    lr: float
    n: int
    n_diverged: int
    mean_test_loss: float
    std_test_loss: float
    mean_test_acc: float
    std_test_acc: float
    mean_train_loss: float
    mean_wall_time_s: float

    @property
    def usable(self) -> bool:
        return self.n_diverged < self.n


def aggregate(summaries: list[RunSummary]) -> list[Cell]:
    """Cells sorted by batch size then learning rate. The spread is the standard deviation over seeds (ddof 0)."""
    by_cell: dict[tuple[int, float], list[RunSummary]] = defaultdict(list)
    for s in summaries:
        by_cell[(s.batch_size, s.lr)].append(s)
    cells = []
    for (b, lr), runs in sorted(by_cell.items()):
        ok = [r for r in runs if r.status != "diverged"]
        cells.append(Cell(b, lr, len(runs), len(runs) - len(ok), _stat(ok, "final_test_loss", np.mean),
                          _stat(ok, "final_test_loss", np.std), _stat(ok, "final_test_acc", np.mean),
                          _stat(ok, "final_test_acc", np.std), _stat(ok, "final_train_loss", np.mean),
                          _stat(ok, "wall_time_s", np.mean)))
    return cells


def _stat(runs: list[RunSummary], attr: str, reduce) -> float:
    return float(reduce([getattr(r, attr) for r in runs])) if runs else float("nan")


def best_lr_per_batch_size(cells: list[Cell]) -> dict[int, float]:
    """For each batch size, the learning rate with the lowest mean final test loss among cells where no seed
    diverged (else among cells with a usable seed); ties go to the smaller rate."""
    best: dict[int, float] = {}
    for b in sorted({c.batch_size for c in cells}):
        candidates = [c for c in cells if c.batch_size == b and c.n_diverged == 0] or \
                     [c for c in cells if c.batch_size == b and c.usable]
        if candidates:
            best[b] = min(candidates, key=lambda c: (c.mean_test_loss, c.lr)).lr
    return best


def mean_and_band(curves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation across seeds, epoch by epoch, over the epochs every curve has."""
    n = min(len(c) for c in curves)
    stacked = np.array([c[:n] for c in curves], float)
    return stacked.mean(axis=0), stacked.std(axis=0)
