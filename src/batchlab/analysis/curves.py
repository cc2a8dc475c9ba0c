"""More loss-noise metrics on raw curves, and the 1/sqrt(B) sampling-noise prediction they are compared with.

Like :mod:`batchlab.analysis.noise`, every metric works on the raw curve and states the trend it removes (if
any). Non-finite values (a diverged tail) are dropped before a metric is computed, and the log-loss metrics use
only the resolvable values (L >= UNRESOLVED_LOSS, :func:`batchlab.analysis.noise.resolvable_log_loss`): a float32
cross-entropy that rounded to 0 has no log, and no floor stands in for it. Their "consecutive" points are
consecutive resolvable points.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from batchlab.analysis.noise import residual_std_log, resolvable_log_loss, running_median
from batchlab.errors import invalid

PUZZLE_FROM_EPOCH = 10
"""The per-epoch noise that the puzzle's plot shows is read after this epoch: the first epochs fall steeply at
every batch size, and a rise there would say little."""
PUZZLE_WINDOW = 5
"""Running-median window (epochs) of :func:`epoch_curve_noise`'s residual."""


def mean_abs_first_difference(loss: np.ndarray) -> float:
    """mean_t |log L_{t+1} - log L_t| over consecutive resolvable values: the typical step-to-step change of a
    curve in log units (0.05 means the loss moves by about 5% from one point to the next), trend included. NaN for
    fewer than 2 resolvable points."""
    log_loss = resolvable_log_loss(loss)
    return float(np.mean(np.abs(np.diff(log_loss)))) if len(log_loss) >= 2 else float("nan")


def fraction_rising(loss: np.ndarray) -> float:
    """(1 / (T - 1)) * #{t : L_{t+1} > L_t}: the fraction of consecutive pairs in which the loss rises (strictly;
    ties count as not rising). Near 0 for a steadily falling curve, near 0.5 for noise around a flat trend.
    NaN for fewer than 2 points. It needs only the order of the values, so unresolved ones keep their place: a 0 is
    below every resolvable loss (the true value is under 1.2e-7), and two zeros tie (their order is unknown)."""
    loss = np.asarray(loss, float)
    loss = loss[np.isfinite(loss)]
    return float(np.mean(np.diff(loss) > 0)) if len(loss) >= 2 else float("nan")


class EpochCurveNoise(NamedTuple):
    """How noisy a per-epoch loss curve looks: the two numbers issue 10 states the puzzle's plot by."""

    rising: float
    """Fraction of the epochs after `start` at which the loss rose over the epoch before (:func:`fraction_rising`
    of L_start, ..., L_T). A steadily falling curve gives 0; noise around a slowly falling trend gives about 0.5."""
    residual: float
    """std of log L_t around its centred running median (:func:`batchlab.analysis.noise.residual_std_log`) over
    the same epochs: how far, in log units, the curve jitters about its own trend (0.05: about 5%)."""


def epoch_curve_noise(loss: np.ndarray, *, start: int = PUZZLE_FROM_EPOCH, window: int = PUZZLE_WINDOW) -> EpochCurveNoise:
    """(fraction of epochs after `start` where the loss rises, residual std of log-loss around a `window`-epoch
    running median there) for a per-epoch curve whose first value is epoch 0. The puzzle's batch size 1 curve is
    noisy by both (issue 10 asks for rising >= 0.25 and residual >= 0.02); a full batch's gradient-descent curve
    falls at every epoch (rising 0, residual near 0). NaN for curves too short to have epochs after `start`."""
    tail = np.asarray(loss, float)[start:]
    return EpochCurveNoise(fraction_rising(tail), residual_std_log(tail, window))


def residual_lag1_autocorrelation(loss: np.ndarray, window: int) -> float:
    """Lag-1 autocorrelation of the residuals r_t = log L_t - running_median(log L, window)_t (the residuals of
    :func:`batchlab.analysis.noise.residual_std_log`)::

        rho_1 = sum_t (r_t - rbar)(r_{t+1} - rbar) / sum_t (r_t - rbar)^2

    (the usual sample autocorrelation, Box & Jenkins). Independent jitter gives about 0 (slightly negative for a
    short window, since the median borrows from the neighbours); slow wandering around the trend gives values
    towards +1; a loss that alternates up and down (an oscillation, e.g. a step size near its stability limit)
    gives values towards -1, provided the window is 4m + 3 (3, 7, 51, ...): a window of 4m + 1 (5, 9, ...) holds
    more points of the same parity than of the other, so its median follows a period-2 oscillation and removes it
    along with the trend (residual_std_log has the same blind spot). Like residual_std_log it uses the resolvable
    values only, consecutive among themselves. The window shrinks to the largest odd number <= the number of
    points. NaN for fewer than 3 points or residuals that are all equal (a smooth curve)."""
    log_loss = resolvable_log_loss(loss)
    n = len(log_loss)
    if n < 3:
        return float("nan")
    window = min(window, n if n % 2 else n - 1)
    centred = log_loss - running_median(log_loss, window)
    centred = centred - centred.mean()
    denominator = float(np.sum(centred**2))
    if denominator <= 0.0:
        return float("nan")
    return float(np.sum(centred[:-1] * centred[1:]) / denominator)


def sampling_noise_factor(batch_size: int, *, n_train: int | None = None) -> float:
    """The standard deviation of a minibatch mean relative to that of one example: sqrt(1 / B) when examples are
    drawn with replacement (or from an unlimited stream), and sqrt((1 / B) (N - B) / (N - 1)) when a batch holds
    B distinct examples of a training set of N (the finite-population correction; REFERENCES.md, "Counting").
    Without replacement the factor is 0 at B = N: full-batch gradient descent has no sampling noise."""
    if batch_size < 1:
        raise invalid("batch_size", batch_size, "an integer >= 1")
    if n_train is None:
        return float(np.sqrt(1.0 / batch_size))
    if n_train < batch_size or n_train < 2:
        raise invalid("n_train", n_train, f"an integer >= max(2, batch_size={batch_size})")
    return float(np.sqrt((n_train - batch_size) / (batch_size * (n_train - 1))))


class NoiseRatio(NamedTuple):
    """A measured noise ratio beside the sampling-noise prediction for it (both small batch over large batch)."""

    measured: float
    predicted: float


def noise_ratio_vs_sqrt_prediction(noise_small: float, b_small: int, noise_large: float, b_large: int, *,
                                   n_train: int | None = None) -> NoiseRatio:
    """(noise_small / noise_large, predicted ratio) for two batch sizes b_small < b_large.

    If the noise is minibatch sampling noise, its standard deviation scales as :func:`sampling_noise_factor`, so
    the predicted ratio is sqrt(b_large / b_small) (McCandlish et al. 2018: Cov[G_B] = Sigma / B), or with
    `n_train` = N and batches of distinct examples::

        sqrt(b_large / b_small) * sqrt((N - b_small) / (N - b_large))

    which is inf at b_large = N (the predicted noise of a full batch is 0). The prediction is exact for the
    spread of minibatch losses or gradients at fixed parameters; for noise measured along a training curve it is
    a yardstick, since the parameters themselves move differently at the two batch sizes.
    """
    if not 1 <= b_small < b_large:
        raise invalid("(b_small, b_large)", (b_small, b_large), "integers with 1 <= b_small < b_large")
    measured = noise_small / noise_large if noise_large != 0 else float("inf") if noise_small > 0 else float("nan")
    large = sampling_noise_factor(b_large, n_train=n_train)
    small = sampling_noise_factor(b_small, n_train=n_train)
    return NoiseRatio(float(measured), small / large if large > 0 else float("inf"))
