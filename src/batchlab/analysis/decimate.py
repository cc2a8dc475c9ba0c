"""Min/max decimation: thin a long curve for drawing without hiding its extremes.

A browser draws a 100k-point line slowly and no screen has 100k columns. Instead of smoothing (which would hide
the very noise the report is about), the points between the two endpoints are cut into equal runs of
consecutive indices ("buckets") and only each bucket's lowest and highest point are kept, in their original
order. The envelope of the curve, every spike included, survives exactly; figures that use it say so.
"""

from __future__ import annotations

import numpy as np

MAX_POINTS = 4000
"""Points kept per decimated trace: a few per horizontal pixel of a wide figure."""


def minmax_indices(y: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """Sorted indices of the points of `y` to keep: the first and last point, and the minimum and maximum of
    each of (max_points - 2) // 2 buckets of consecutive interior points (bucket k holds interior points i with
    i * n_buckets // (n - 2) == k). All indices when len(y) <= max_points. At most `max_points` indices.

    NaN is skipped when choosing a bucket's minimum and maximum; a bucket holding only NaN keeps its first and
    last point (a gap in the drawn line). Ties keep the first minimum and the last maximum.
    """
    y = np.asarray(y, float)
    n = len(y)
    if max_points < 4:
        raise ValueError(f"max_points: got {max_points}; allowed: an integer >= 4")
    if n <= max_points:
        return np.arange(n)
    n_buckets = (max_points - 2) // 2
    interior = y[1:-1]
    bucket = np.arange(n - 2) * n_buckets // (n - 2)
    starts = np.searchsorted(bucket, np.arange(n_buckets))
    ends = np.append(starts[1:], n - 2)
    by_low = np.lexsort((np.where(np.isnan(interior), np.inf, interior), bucket))
    by_high = np.lexsort((np.where(np.isnan(interior), -np.inf, interior), bucket))
    keep = np.concatenate(([0], by_low[starts] + 1, by_high[ends - 1] + 1, [n - 1]))
    return np.unique(keep)


def minmax_decimate(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """`x` and `y` at the indices :func:`minmax_indices` keeps (unchanged when already short enough)."""
    keep = minmax_indices(y, max_points)
    return np.asarray(x)[keep], np.asarray(y)[keep]
