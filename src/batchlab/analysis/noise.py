"""Loss-noise metrics on raw curves. Nothing is smoothed silently: the trend a metric removes is defined here.

The residual standard deviation of log-loss around a centred running median measures how much a curve jitters
around its own trend, independent of the loss scale (a ratio on the log scale). Losses are floored at
`LOSS_FLOOR` before the log, because a float32 cross-entropy can round to exactly 0.
"""

from __future__ import annotations

import numpy as np

LOSS_FLOOR = 1e-8


def running_median(x: np.ndarray, window: int) -> np.ndarray:
    """Centred running median with an odd `window`; near the ends the window shrinks symmetrically."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd integer, got {window}")
    x = np.asarray(x, float)
    n, half = len(x), window // 2
    if n == 0:
        return x.copy()
    out = np.empty(n)
    if n > 2 * half:
        out[half:n - half] = np.median(np.lib.stride_tricks.sliding_window_view(x, window), axis=1)
    for i in list(range(min(half, n))) + list(range(max(n - half, half), n)):
        h = min(i, n - 1 - i, half)
        out[i] = np.median(x[i - h:i + h + 1])
    return out


def residual_std_log(loss: np.ndarray, window: int) -> float:
    """std(log L_t - running_median(log L, window)_t): the jitter of a loss curve around its centred robust
    trend, in log units (0.1 means typical deviations of about 10%). NaN for fewer than 3 points."""
    loss = np.asarray(loss, float)
    loss = loss[np.isfinite(loss)]
    if len(loss) < 3:
        return float("nan")
    log_loss = np.log(np.maximum(loss, LOSS_FLOOR))
    return float(np.std(log_loss - running_median(log_loss, min(window, _odd_below(len(loss))))))


def _odd_below(n: int) -> int:
    return n if n % 2 else n - 1
