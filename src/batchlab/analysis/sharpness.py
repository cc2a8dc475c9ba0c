"""Sharpness over training against the stability threshold 2 / lr: progressive sharpening and the edge of
stability (Cohen et al. 2021, "Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability"),
and for SGD the batch sharpness (Andreyev & Beneventano 2024, "Edge of Stochastic Stability").

Gradient descent with step lr on a quadratic with curvature lambda is stable only while lambda < 2 / lr. Cohen
et al. found that full-batch GD raises the top Hessian eigenvalue lambda_max (progressive sharpening) until it
reaches 2 / lr and then hovers there. For minibatch SGD, Andreyev & Beneventano find that what settles at 2 / lr
is the batch sharpness E_B[g_B^T H_B g_B / |g_B|^2], while lambda_max stays below. Pure functions on the
per-epoch arrays the store gives (`sharpness_every`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EOS_TOLERANCE = 0.10
"""A run is at the edge of stability when its late top eigenvalue is within this fraction of 2 / lr."""
LATE_FRACTION = 0.25
"""The late value: the median over the measurements in the last quarter of the measured epochs (the eigenvalue
oscillates around 2 / lr at the edge, so a single last measurement can sit anywhere in that oscillation)."""


@dataclass(frozen=True)
class EdgeOfStability:
    """One run's sharpness over training, as ratios to the threshold 2 / lr (1 = the edge of stability)."""

    run_id: str
    batch_size: int
    lr: float
    threshold: float
    """2 / lr."""
    epochs: int
    """Epochs measured."""
    first_ratio: float
    """lambda_max / (2 / lr) at the first measurement (epoch 0 when measured there)."""
    late_ratio: float
    """Median lambda_max / (2 / lr) over the last LATE_FRACTION of the measured epochs."""
    peak_ratio: float
    late_batch_ratio: float
    """The same for the batch sharpness (NaN where not measured)."""
    sharpened: bool
    """The first ratio was below 1/2 and the late one above it: progressive sharpening."""
    reached: bool
    """|late ratio - 1| <= EOS_TOLERANCE: the run trained at the edge of stability."""

    def __repr__(self) -> str:
        return (f"EdgeOfStability({self.run_id!r}, lr={self.lr:g}, lambda_max x lr / 2: {self.first_ratio:.3f} -> "
                f"{self.late_ratio:.3f}, reached={self.reached})")


def edge_of_stability(run_id: str, *, batch_size: int, lr: float, epochs: np.ndarray, top_eigenvalue: np.ndarray,
                      batch_sharpness: np.ndarray | None = None) -> EdgeOfStability | None:
    """The run's :class:`EdgeOfStability` from its per-epoch top eigenvalue (NaN where not measured); None when
    fewer than two epochs were measured."""
    top = np.asarray(top_eigenvalue, float)
    measured = np.isfinite(top)
    if measured.sum() < 2 or not lr > 0:
        return None
    ep = np.asarray(epochs)[measured]
    ratio = top[measured] * lr / 2.0
    late = ep >= ep[0] + (1.0 - LATE_FRACTION) * (ep[-1] - ep[0])
    late_ratio = float(np.median(ratio[late]))
    batch_ratio = math.nan
    if batch_sharpness is not None:
        bs = np.asarray(batch_sharpness, float)[measured] * lr / 2.0
        if np.isfinite(bs[late]).any():
            batch_ratio = float(np.nanmedian(bs[late]))
    first = float(ratio[0])
    return EdgeOfStability(run_id, batch_size, lr, 2.0 / lr, int(measured.sum()), first, late_ratio,
                           float(np.max(ratio)), batch_ratio, first < 0.5 < late_ratio,
                           abs(late_ratio - 1.0) <= EOS_TOLERANCE)


def edges_of_stability(runs: list, curves: dict[str, dict[str, np.ndarray]]) -> list[EdgeOfStability]:
    """:func:`edge_of_stability` of every run (RunSummary-like: run_id, batch_size, lr) whose curves hold
    sharpness measured during training, by batch size then rate."""
    out = []
    for s in sorted(runs, key=lambda s: (s.batch_size, s.lr, s.run_id)):
        e = curves.get(s.run_id, {})
        if "hessian_top_eigenvalue" not in e:
            continue
        eos = edge_of_stability(s.run_id, batch_size=s.batch_size, lr=s.lr, epochs=e["epoch"],
                                top_eigenvalue=e["hessian_top_eigenvalue"], batch_sharpness=e.get("batch_sharpness"))
        if eos is not None:
            out.append(eos)
    return out


def edge_of_stability_dict(rows: list[EdgeOfStability]) -> list[dict[str, object]]:
    """JSON-ready rows (NaN as None)."""
    def clean(v: object) -> object:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return [{k: clean(v) for k, v in vars(r).items()} for r in rows]
