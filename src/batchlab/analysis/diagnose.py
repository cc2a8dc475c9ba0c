"""The puzzle in reverse: given loss curves from unknown batch sizes, which one most likely came from the smallest?

Sampling noise in a minibatch loss scales as 1/sqrt(B) (:func:`batchlab.analysis.curves.sampling_noise_factor`),
so, other things equal, the noisiest curve came from the smallest batch. Each curve gets the four noise metrics
of :mod:`batchlab.analysis.noise` and :mod:`batchlab.analysis.curves`, all with the same running-median window
`DIAGNOSE_WINDOW`, and the curves are ranked by the primary one, the residual std of log-loss (1 = noisiest).

Ties. Curves whose residual stds are equal (to `TIE_TOLERANCE`) share a rank (1, 1, 3), and a tie for the top is
too close to call: the order they were given in decides nothing. The common case is exactly 0: a strictly
monotone curve (a per-epoch average, a full-batch run, any smooth decay) equals its running median at every
point. No secondary metric breaks such ties, because none measures batch noise there: on a smooth curve the mean
absolute change and the fraction rising measure the trend's steepness (the learning rate, the loss scale, the
number of points) and the lag-1 autocorrelation is undefined, so a tie-break on them would be as arbitrary as the
argument order.

The call. The noisiest curve is named the most likely smallest batch only when its residual std is clearly
above the runner-up's: their `CONFIDENCE` block-bootstrap intervals (:func:`residual_std_interval`) must not
overlap. Otherwise the two are "too close to call". Non-overlap of two 95% intervals is a conservative test,
chosen because a wrong call is worse than none, and unlike a fixed relative margin it adapts to the curve's
length: 10% more noise is decisive over 20,000 steps, 2x is not always enough over 30 epochs.

How often it calls two curves of the same batch size (every such call is wrong):

- synthetic pairs with equal noise around the same trend (10 to 1,000 points, flat to steep trends, 200 pairs
  each): at most 2% of pairs called; with 1.2x the noise at 1,000 points, 95% were called correctly;
- pairs that differ only by seed, from real (numpy) SGD with momentum on a logistic regression at batch sizes 1,
  4 and 16 over 60 and 250 steps (``tests/analysis/test_diagnose_calibration.py``, 100 pairs each): 20 of 600
  called (3.3%): 11% at B = 1 over 60 steps, 2% at B = 1 over 250, at most 3% in the other cells. 1,800 more
  pairs (other seeds) give 2.6%, at most 5.3% in a cell (again B = 1 over 60 steps);
- batchlab's own runs (wine, MLP, 60 seeds, 3 epochs, all 1,770 pairs): none at B = 1 (426 steps), 0.3% at
  B = 8 (54 steps).

So expect about 3% of same-batch-size pairs to be called, more on short curves and at batch size 1. The reason:
the bootstrap resamples one curve's residuals, so its interval holds the noise of that trajectory but not the
spread between trajectories. Two seeds start from different losses and fall at different paces; on a short
curve still falling from its start, or at B = 1, where the log of one example's loss swings with how confident
the model has become, their noise differs for reasons other than the batch size. (Calling on non-overlapping
99% intervals instead cuts the seed pairs' rate to 0.6%, at most 1.5% in a cell, but roughly halves the correct
calls between B and 2B over 60 steps.)

The confound. The metrics measure a curve as it was logged, so curves of different resolutions are not
comparable. A per-epoch curve, or a loss averaged over a logging interval, has averaged away most of the
step-to-step noise: a per-step curve of a large batch can look noisier than a per-epoch curve of a small one.
A short curve is measured with less certainty and, where its trend falls steeply across the window, with less
noise (the running median then follows the points themselves). The ranking does not correct for any of this;
the caller is told (`batchlab diagnose` warns in one line when resolutions differ).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from batchlab.analysis.curves import fraction_rising, mean_abs_first_difference, residual_lag1_autocorrelation
from batchlab.analysis.noise import residual_std_log, resolvable_log_loss, running_median, window_medians

DIAGNOSE_WINDOW = 7
"""Running-median window (points) for every metric. Small, so that curves as short as a few dozen epochs keep a
trend the median can follow, and the same for every curve, so their metrics are comparable. 4m + 3, so that a loss
alternating every point counts as noise (see :func:`batchlab.analysis.curves.residual_lag1_autocorrelation`).
For white noise of std sigma around a smooth trend, the residual std is about 0.96 sigma with this window."""
CONFIDENCE = 0.95
"""Coverage of each bootstrap interval of the residual std."""
BOOTSTRAP_RESAMPLES = 1000
TIE_TOLERANCE = 1e-9
"""Residual stds that differ by less than this fraction of the larger are a tie (the same curve at another loss
scale differs in the last bits)."""
REFIT_MAX_POINTS = 5_000
"""Up to this many points the bootstrap recomputes the running median on every resample (see
:func:`residual_std_interval`)."""


@dataclass(frozen=True)
class CurveNoise:
    """The noise metrics of one curve (log units; see each function's docstring)."""

    n_points: int
    """Finite values the metrics used."""
    residual_std_log: float
    """:func:`batchlab.analysis.noise.residual_std_log` with window DIAGNOSE_WINDOW: the ranking metric."""
    residual_std_log_low: float
    """Lower end of its CONFIDENCE block-bootstrap interval."""
    residual_std_log_high: float
    """Upper end of that interval."""
    mean_abs_first_difference: float
    fraction_rising: float
    residual_lag1_autocorrelation: float
    """NaN for a curve with no residuals at all (perfectly smooth)."""

    def __repr__(self) -> str:
        return (f"CurveNoise(n_points={self.n_points}, residual_std_log={self.residual_std_log:.4g} "
                f"[{self.residual_std_log_low:.4g}, {self.residual_std_log_high:.4g}])")


@dataclass(frozen=True)
class Diagnosis:
    """Curves' metrics (in the order given), their noise ranks and the call."""

    noise: tuple[CurveNoise, ...]
    ranks: tuple[int, ...]
    """Rank of each curve by residual std of log-loss, 1 = noisiest; tied curves share a rank (:func:`noise_ranks`)."""
    smallest_batch: int | None
    """Index of the curve that most likely came from the smallest batch; None with one curve or too close to call."""

    @property
    def too_close_to_call(self) -> bool:
        """Two or more curves, and the top two tie or their intervals overlap."""
        return len(self.noise) > 1 and self.smallest_batch is None

    @property
    def order(self) -> list[int]:
        """Curve indices from noisiest to smoothest (tied curves in the order given)."""
        return sorted(range(len(self.ranks)), key=lambda i: self.ranks[i])

    @property
    def tied_for_noisiest(self) -> list[int]:
        """Indices of the curves sharing rank 1 when two or more do; [] otherwise."""
        top = [i for i in self.order if self.ranks[i] == 1]
        return top if len(top) > 1 else []

    def __repr__(self) -> str:
        return f"Diagnosis(ranks={self.ranks}, smallest_batch={self.smallest_batch})"


def diagnose(losses: Sequence[np.ndarray], *, window: int = DIAGNOSE_WINDOW, seed: int = 0) -> Diagnosis:
    """Metrics of each curve, ranks by residual std of log-loss, and the call (module docstring). `seed` makes
    the bootstrap intervals reproducible; curve i uses the stream (seed, i)."""
    noise = tuple(curve_noise(loss, window=window, seed=(seed, i)) for i, loss in enumerate(losses))
    ranks = noise_ranks([n.residual_std_log for n in noise])
    order = sorted(range(len(noise)), key=lambda i: ranks[i])
    clear = (len(order) > 1 and ranks[order[1]] > 1
             and noise[order[0]].residual_std_log_low > noise[order[1]].residual_std_log_high)
    return Diagnosis(noise, ranks, order[0] if clear else None)


def noise_ranks(values: Sequence[float]) -> tuple[int, ...]:
    """Competition ranks of `values`, largest first (1 = noisiest): values equal to TIE_TOLERANCE share the best
    rank of their group, and the next rank skips (0.3, 0, 0 -> 1, 2, 2; 0, 0, 0 -> 1, 1, 1). NaN ranks last."""
    order = sorted(range(len(values)), key=lambda i: (np.isnan(values[i]), -np.nan_to_num(values[i])))
    ranks = [0] * len(values)
    for position, i in enumerate(order):
        previous = order[position - 1] if position else None
        ranks[i] = ranks[previous] if previous is not None and _tied(values[previous], values[i]) else position + 1
    return tuple(ranks)


def _tied(a: float, b: float) -> bool:
    if np.isnan(a) or np.isnan(b):
        return bool(np.isnan(a) and np.isnan(b))
    return abs(a - b) <= TIE_TOLERANCE * max(abs(a), abs(b))


def curve_noise(loss: np.ndarray, *, window: int = DIAGNOSE_WINDOW, seed: int | tuple[int, ...] = 0) -> CurveNoise:
    """All noise metrics of one raw curve (non-finite values dropped), and the bootstrap interval of the first."""
    loss = np.asarray(loss, float)
    finite = loss[np.isfinite(loss)]
    low, high = residual_std_interval(finite, window=window, seed=seed)
    return CurveNoise(n_points=len(finite), residual_std_log=residual_std_log(finite, window),
                      residual_std_log_low=low, residual_std_log_high=high,
                      mean_abs_first_difference=mean_abs_first_difference(finite),
                      fraction_rising=fraction_rising(finite),
                      residual_lag1_autocorrelation=residual_lag1_autocorrelation(finite, window))


def residual_std_interval(loss: np.ndarray, *, window: int = DIAGNOSE_WINDOW, seed: int | tuple[int, ...] = 0,
                          resamples: int = BOOTSTRAP_RESAMPLES, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Bootstrap interval of residual_std_log(loss, window): a moving-block bootstrap of the residuals
    r_t = log L_t - trend_t (trend = the running median; Kuensch 1989).

    A resample is ceil(n / b) blocks of b = min(window, max(1, n // 10)) consecutive residuals, started at
    uniformly drawn positions (at least ten blocks, so a short curve still mixes; blocks as long as the window
    keep the dependence the median puts between neighbours). Up to `REFIT_MAX_POINTS` points the whole metric is
    recomputed on trend + resampled residuals (the median absorbs part of the noise, more so on a short or steep
    curve, and that variability belongs in the interval), and the percentile interval is rescaled by
    estimate / median(draws), since the re-applied median absorbs a little more and would shift it below the
    estimate. Longer curves use the std of the resampled residuals directly: there the median's share is
    negligible, and recomputing it would cost a second or more per curve. (NaN, NaN) for fewer than 3 points."""
    loss = np.asarray(loss, float)
    log_loss = resolvable_log_loss(loss)  # the points residual_std_log uses
    n = len(log_loss)
    if n < 3:
        return float("nan"), float("nan")
    window = min(window, n if n % 2 else n - 1)
    trend = running_median(log_loss, window)
    residuals = log_loss - trend
    block = min(window, max(1, n // 10))
    n_blocks = -(-n // block)
    rng = np.random.default_rng(seed)
    draws = np.empty(resamples)
    chunk = max(1, 2_000_000 // (n_blocks * block))  # bounds memory for long curves
    for start in range(0, resamples, chunk):
        starts = rng.integers(0, n - block + 1, size=(min(chunk, resamples - start), n_blocks))
        resampled = residuals[(starts[:, :, None] + np.arange(block)).reshape(len(starts), -1)]
        if n <= REFIT_MAX_POINTS:
            curves = trend + resampled[:, :n]
            draws[start:start + len(starts)] = (curves - _running_median_rows(curves, window)).std(axis=1)
        else:
            draws[start:start + len(starts)] = resampled.std(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    centre = float(np.median(draws))
    if n <= REFIT_MAX_POINTS and centre > 0:
        scale = residual_std_log(loss, window) / centre
        low, high = low * scale, high * scale
    return float(low), float(high)


def _running_median_rows(x: np.ndarray, window: int) -> np.ndarray:
    """:func:`batchlab.analysis.noise.running_median` of each row of a 2-D array (window odd, <= the row length)."""
    n, half = x.shape[1], window // 2
    out = np.empty_like(x)
    out[:, half:n - half] = window_medians(x, window)
    for i in range(half):
        out[:, i] = np.median(x[:, :2 * i + 1], axis=1)
        out[:, n - 1 - i] = np.median(x[:, n - 1 - 2 * i:], axis=1)
    return out
