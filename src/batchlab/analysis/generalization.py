"""The generalization gap, at the end of training and at a train loss every run reaches.

Comparing final gaps mixes two effects: a run that trained further has a lower train loss and usually a larger
gap. Reading every run at the same train loss (Keskar et al. 2017 compare minima of similar train loss) separates
how well a batch size generalizes from how far it got.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from batchlab.errors import invalid


@dataclass(frozen=True)
class GeneralizationGap:
    """Test minus train loss, and train minus test accuracy (both positive when the model overfits)."""

    loss_gap: float
    acc_gap: float
    index: int
    """The evaluation (epoch index) they were read at: the last one with a finite train loss."""


def generalization_gap(train_loss: np.ndarray | float, test_loss: np.ndarray | float, train_acc: np.ndarray | float,
                       test_acc: np.ndarray | float) -> GeneralizationGap:
    """At the end of training: test_loss - train_loss and train_acc - test_acc at the last evaluation whose train
    loss is finite (a diverged run is read before its divergence). Accepts per-epoch curves or final scalars."""
    curves = [np.atleast_1d(np.asarray(c, float)) for c in (train_loss, test_loss, train_acc, test_acc)]
    if len({len(c) for c in curves}) != 1 or len(curves[0]) == 0:
        raise invalid("curves", [len(c) for c in curves], "four non-empty curves of equal length")
    finite = np.flatnonzero(np.isfinite(curves[0]))
    last = int(finite[-1]) if len(finite) else len(curves[0]) - 1
    tr_loss, te_loss, tr_acc, te_acc = (float(c[last]) for c in curves)
    return GeneralizationGap(te_loss - tr_loss, tr_acc - te_acc, last)


@dataclass(frozen=True)
class MatchedGap:
    """One run read where its train loss first falls to the target."""

    epoch: float
    """Fractional epoch, interpolated between the two evaluations that bracket the target."""
    train_loss: float
    test_loss: float
    train_acc: float
    test_acc: float
    loss_gap: float
    """test_loss - train_loss (= test_loss - target, unless the run starts below the target)."""
    acc_gap: float
    """train_acc - test_acc."""


def gap_at_matched_train_loss(curves_by_run: Mapping[str, Mapping[str, np.ndarray]],
                              target_train_loss: float) -> dict[str, MatchedGap | None]:
    """Each run's test loss and accuracy where its train loss first reaches `target_train_loss` (<=).

    `curves_by_run` maps a run id to its per-epoch arrays "epoch", "train_loss", "test_loss", "train_acc" and
    "test_acc" (the form of `Store.epochs`). With i the first evaluation where train_loss[i] <= target: at i = 0
    the values at evaluation 0; otherwise linear interpolation between evaluations i - 1 and i at
    t = (train_loss[i-1] - target) / (train_loss[i-1] - train_loss[i]) in (0, 1], applied alike to the epoch and
    every curve (so the interpolated train loss equals the target). A run that never reaches it maps to None.
    """
    out: dict[str, MatchedGap | None] = {}
    for run_id, curves in curves_by_run.items():
        train = np.asarray(curves["train_loss"], float)
        hits = np.flatnonzero(train <= target_train_loss)
        if not len(hits):
            out[run_id] = None
            continue
        i = int(hits[0])
        t = 1.0 if i == 0 else (train[i - 1] - target_train_loss) / (train[i - 1] - train[i])
        epoch, tr_loss, te_loss, tr_acc, te_acc = (
            _interpolate(curves[name], i, t) for name in ("epoch", "train_loss", "test_loss", "train_acc", "test_acc"))
        out[run_id] = MatchedGap(epoch, tr_loss, te_loss, tr_acc, te_acc, te_loss - tr_loss, tr_acc - te_acc)
    return out


def _interpolate(curve: np.ndarray, i: int, t: float) -> float:
    """curve[i - 1] + t (curve[i] - curve[i - 1]); curve[0] at i = 0."""
    values = np.asarray(curve, float)
    return float(values[0]) if i == 0 else float(values[i - 1] + t * (values[i] - values[i - 1]))


def matched_train_loss_target(curves_by_run: Mapping[str, Mapping[str, np.ndarray]]) -> float:
    """The largest final train loss among the runs (final = last finite value), so every run reaches it.

    Runs with no finite train loss are skipped. A run that barely trained (or diverged early) sets a high target
    that the others pass early in training: pass only the runs you mean to compare.
    """
    finals = []
    for curves in curves_by_run.values():
        train = np.asarray(curves["train_loss"], float)
        finite = train[np.isfinite(train)]
        if len(finite):
            finals.append(float(finite[-1]))
    if not finals:
        raise invalid("curves_by_run", f"{len(curves_by_run)} runs", "at least one run with a finite train loss")
    return max(finals)
