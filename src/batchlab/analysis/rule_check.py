"""Does a learning-rate scaling rule hold here? For runs at several batch sizes trained under one rule (linear,
sqrt, adam-sde, ...), the rule's promise is that the loss follows the same curve against examples seen at every
batch size (Goyal et al. 2017; Malladi et al. 2022). Per pair of neighbouring batch sizes (B, kB) this compares
the mean training loss at equal examples seen, relative to the seed-to-seed spread, early (first half of the
epochs) and late (second half), and checks whether the step-to-step loss noise falls as 1/sqrt(B), the sampling
noise the rules assume (Cov[G_B] = Sigma / B). Fast-LLM's replication of Malladi's rule found it matching only
late in training, in the noise-dominated phase; the early/late split is there to show such a thing.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from batchlab.analysis.curves import noise_ratio_vs_sqrt_prediction

HOLDS_Z = 2.0
"""The rule holds in a phase when the mean loss gap is within this many seed spreads."""
NOISE_TOLERANCE = 0.25
"""The noise follows 1/sqrt(B) when the measured ratio is within this fraction of the predicted one."""


@dataclass(frozen=True)
class PhaseGap:
    """Mean over a phase's epochs of the gap log L(kB) - log L(B) at equal examples seen, and of its ratio to the
    seed spread (NaN with one seed)."""

    phase: str
    epochs: tuple[int, int]
    """First and last epoch of the phase."""
    log_gap: float
    z: float
    holds: bool | None
    """|z| <= HOLDS_Z; None without a seed spread."""


@dataclass(frozen=True)
class RulePair:
    """One pair (B, kB): the loss gap by phase and the noise ratio against 1/sqrt(B)."""

    batch_size: int
    larger: int
    early: PhaseGap
    late: PhaseGap
    noise_measured: float
    noise_predicted: float
    noise_follows: bool | None


def _log_losses(runs: Sequence[Any], curves: dict[str, dict[str, np.ndarray]], epochs: np.ndarray) -> np.ndarray:
    """(seeds, epochs) log training loss of each run at the given epochs (NaN where missing or diverged)."""
    out = np.full((len(runs), len(epochs)), np.nan)
    for i, s in enumerate(runs):
        e = curves[s.run_id]
        loss = dict(zip(np.asarray(e["epoch"]).tolist(), np.asarray(e["train_loss"], float)))
        out[i] = [math.log(loss[ep]) if ep in loss and loss[ep] > 0 and math.isfinite(loss[ep]) else np.nan
                  for ep in epochs]
    return out


def _phase(name: str, epochs: np.ndarray, small: np.ndarray, large: np.ndarray) -> PhaseGap:
    with np.errstate(all="ignore"), warnings.catch_warnings():  # all-NaN columns (one seed, diverged runs)
        warnings.simplefilter("ignore", RuntimeWarning)
        gap = np.nanmean(large, axis=0) - np.nanmean(small, axis=0)
        spread = np.sqrt((np.nanvar(small, axis=0, ddof=1) + np.nanvar(large, axis=0, ddof=1)) / 2)
    log_gap = float(np.nanmean(gap)) if np.isfinite(gap).any() else math.nan
    ok = np.isfinite(gap) & np.isfinite(spread) & (spread > 0)
    z = float(np.mean(gap[ok] / spread[ok])) if ok.any() else math.nan
    return PhaseGap(name, (int(epochs[0]), int(epochs[-1])), log_gap, z, None if math.isnan(z) else abs(z) <= HOLDS_Z)


def rule_check(runs: Sequence[Any], curves: dict[str, dict[str, np.ndarray]], *, n_train: int) -> list[RulePair]:
    """Per neighbouring pair of batch sizes (one rate each: pass each batch size's runs under the rule, e.g. its
    best rate's seeds), the loss gap at equal examples (every batch size trains whole epochs, so epoch e is
    e * N examples for all) early and late, and the step-noise ratio against sqrt(kB / B) (with the
    finite-population factor of :func:`batchlab.analysis.curves.noise_ratio_vs_sqrt_prediction`)."""
    by_b: dict[int, list[Any]] = defaultdict(list)
    for s in runs:
        by_b[s.batch_size].append(s)
    sizes = sorted(by_b)
    out = []
    for b, kb in itertools.pairwise(sizes):
        common = sorted(set.intersection(*(set(np.asarray(curves[s.run_id]["epoch"]).tolist())
                                           for s in by_b[b] + by_b[kb])) - {0})
        if len(common) < 2:
            continue
        epochs = np.array(common)
        small, large = _log_losses(by_b[b], curves, epochs), _log_losses(by_b[kb], curves, epochs)
        half = len(epochs) // 2
        early = _phase("early", epochs[:half], small[:, :half], large[:, :half])
        late = _phase("late", epochs[half:], small[:, half:], large[:, half:])
        noise_b = [s.step_noise for s in by_b[b] if s.status != "diverged" and math.isfinite(s.step_noise)]
        noise_kb = [s.step_noise for s in by_b[kb] if s.status != "diverged" and math.isfinite(s.step_noise)]
        measured = predicted = math.nan
        follows = None
        if noise_b and noise_kb and kb < n_train:
            r = noise_ratio_vs_sqrt_prediction(float(np.mean(noise_b)), b, float(np.mean(noise_kb)), kb,
                                               n_train=n_train)
            measured, predicted = r.measured, r.predicted
            follows = bool(abs(measured / predicted - 1) <= NOISE_TOLERANCE) if math.isfinite(measured) else None
        out.append(RulePair(b, kb, early, late, measured, predicted, follows))
    return out


def rule_check_dict(pairs: Sequence[RulePair]) -> list[dict[str, Any]]:
    """JSON-ready rows (NaN as null)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, PhaseGap):
            return {k: clean(x) for k, x in vars(v).items()}
        if isinstance(v, tuple):
            return list(v)
        return v

    return [{k: clean(v) for k, v in vars(p).items()} for p in pairs]
