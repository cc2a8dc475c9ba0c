"""Loss-noise metrics on raw curves. Nothing is smoothed silently: the trend a metric removes is defined here.

The residual standard deviation of log-loss around a centred running median measures how much a curve jitters
around its own trend, independent of the loss scale (a ratio on the log scale).

Losses the log cannot resolve. A float32 cross-entropy rounds to exactly 0 once the correct class's probability
is within float32 rounding of 1 (13% of batch size 1's step losses on digits, issue 11): the smallest nonzero per-example
value is log(1 + 2^-23) ~ 1.19e-7, and a minibatch mean below that holds examples that rounded to 0. Such a value
only says "somewhere between 0 and about 1e-7": its log is unknown, and any floor put under it (1e-6, 1e-8,
1e-12) would decide the metric (the residual std of one digits curve was 2.77, 3.69 or 6.10 for those three).
So every metric here and in :mod:`batchlab.analysis.curves` uses only the resolvable values, L >= UNRESOLVED_LOSS,
and the caller counts the rest (:func:`unresolved_fraction`; `RunSummary.step_zero_fraction`). `LOSS_FLOOR` is
for drawing a log axis only; no metric reads it.
"""

from __future__ import annotations

import numpy as np

LOSS_FLOOR = 1e-8
"""For figures only: losses are drawn no lower than this on a log axis. No metric depends on it."""
UNRESOLVED_LOSS = float(np.finfo(np.float32).eps)
"""2^-23 ~ 1.19e-7, one float32 rounding step of a cross-entropy near 0: losses below it are counted, not measured.
They are 0, negative, or the smallest nonzero float32 cross-entropy log(1 + 2^-23) (which rounds to just under
2^-23, and stands for a true value known only to within a factor of about 3), or minibatch means holding such."""


def resolvable_log_loss(loss: np.ndarray) -> np.ndarray:
    """log L_t for the finite L_t >= UNRESOLVED_LOSS, in their original order (the others are dropped)."""
    loss = np.asarray(loss, float)
    return np.log(loss[np.isfinite(loss) & (loss >= UNRESOLVED_LOSS)])


def unresolved_fraction(loss: np.ndarray) -> float:
    """#{t : L_t < UNRESOLVED_LOSS} / #{t : L_t finite}: the share of a curve's finite values that no log-loss metric
    sees (exact zeros of a float32 cross-entropy, mostly). NaN when no value is finite."""
    loss = np.asarray(loss, float)
    finite = loss[np.isfinite(loss)]
    return float(np.mean(finite < UNRESOLVED_LOSS)) if len(finite) else float("nan")


def running_median(x: np.ndarray, window: int) -> np.ndarray:
    """Centred running median with an odd `window`; near the ends the window shrinks symmetrically.

    The interior is scipy's rank filter (a running selection, O(n log window)): the same values as the median of
    each window (an odd window's median is one of its elements), ~30x faster than sorting each window of a
    143,700-step curve (0.18 s -> 0.005 s at window 51), which made `batchlab show` on a 704-run sweep spend 9 of
    its 11.1 s here (3.8 s after)."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd integer, got {window}")
    x = np.asarray(x, float)
    n, half = len(x), window // 2
    if n == 0:
        return x.copy()
    out = np.empty(n)
    if n > 2 * half:
        out[half:n - half] = window_medians(x, window)
    for i in list(range(min(half, n))) + list(range(max(n - half, half), n)):
        h = min(i, n - 1 - i, half)
        out[i] = np.median(x[i - h:i + h + 1])
    return out


def window_medians(x: np.ndarray, window: int) -> np.ndarray:
    """The median of each full window of `window` (odd) consecutive values along the last axis: shape
    (..., n - window + 1)."""
    if not np.isfinite(x).all():  # the rank filter orders NaN arbitrarily; np.median propagates it
        return np.median(np.lib.stride_tricks.sliding_window_view(x, window, axis=-1), axis=-1)
    from scipy.ndimage import median_filter

    half = window // 2
    size = (1,) * (x.ndim - 1) + (window,)
    return median_filter(x, size=size, mode="nearest")[..., half:x.shape[-1] - half]


def residual_std_log(loss: np.ndarray, window: int) -> float:
    """std(log L_t - running_median(log L, window)_t) over the resolvable values (:func:`resolvable_log_loss`): the
    jitter of a loss curve around its centred robust trend, in log units (0.1 means typical deviations of about
    10%). NaN for fewer than 3 resolvable points.

    Unresolved values (below UNRESOLVED_LOSS) are dropped before the median, not after: the trend and the residuals
    come from the same points, so the metric is that of the resolvable sub-curve, and the window spans `window`
    resolvable points (a little more time where zeros are frequent). Keeping the zeros in the median as the lowest
    values instead would pull the trend down by an amount set by how many there are, and leave it undefined (a
    zero median) where more than half a window is unresolved, as late in training at batch size 1. The price: where
    many values are unresolved, the metric describes the jitter of the losses that are not, which is smaller than
    that of the true losses; read it with the count of the others (`RunSummary.step_zero_fraction`)."""
    log_loss = resolvable_log_loss(loss)
    if len(log_loss) < 3:
        return float("nan")
    return float(np.std(log_loss - running_median(log_loss, min(window, _odd_below(len(log_loss))))))


def _odd_below(n: int) -> int:
    return n if n % 2 else n - 1
