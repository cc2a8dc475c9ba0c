"""Min/max decimation keeps every bucket's extremes and both endpoints, and never more than max_points."""

from __future__ import annotations

import numpy as np
import pytest

from batchlab.analysis.decimate import minmax_decimate, minmax_indices


def test_hand_worked_example():
    # 11 points, max_points 8: 3 buckets of the 9 interior points, 3 each.
    y = np.array([0, 5, 1, 3, 2, 9, 4, 7, 6, 8, 0.0])
    # bucket (1, 2, 3) = (5, 1, 3): max at 1, min at 2; (4, 5, 6) = (2, 9, 4): min 4, max 5; (7, 8, 9) = (7, 6, 8):
    # min 8, max 9; plus the endpoints 0 and 10.
    assert minmax_indices(y, 8).tolist() == [0, 1, 2, 4, 5, 8, 9, 10]


def test_every_bucket_keeps_its_min_and_max_exactly():
    rng = np.random.default_rng(0)
    n_buckets, size = 499, 200
    y = rng.standard_normal(2 + n_buckets * size)  # interior splits into equal buckets of `size`
    x = np.arange(len(y)) * 0.5
    xd, yd = minmax_decimate(x, y, max_points=2 + 2 * n_buckets)
    assert len(yd) == 2 + 2 * n_buckets
    assert (xd[0], yd[0], xd[-1], yd[-1]) == (x[0], y[0], x[-1], y[-1])
    for k, bucket in enumerate(y[1:-1].reshape(n_buckets, size)):
        kept = yd[1 + 2 * k: 3 + 2 * k]
        assert sorted(kept) == [bucket.min(), bucket.max()]
    assert np.all(np.diff(xd) > 0)  # original order
    assert np.array_equal(y[(xd / 0.5).astype(int)], yd)  # points of the curve, not new values


@pytest.mark.parametrize("n", [4001, 4002, 10_007, 143_700])
@pytest.mark.parametrize("max_points", [4, 5, 1000, 4000])
def test_length_bound_endpoints_and_global_extremes(n, max_points):
    y = np.random.default_rng(n).lognormal(size=n)
    keep = minmax_indices(y, max_points)
    assert len(keep) <= max_points
    assert keep[0] == 0 and keep[-1] == n - 1
    assert np.all(np.diff(keep) > 0)
    assert y[keep].min() == y.min() and y[keep].max() == y.max()


def test_short_curves_are_returned_whole():
    y = np.arange(10.0)
    assert minmax_indices(y, 10).tolist() == list(range(10))
    xd, yd = minmax_decimate(y * 2, y, 4000)
    assert np.array_equal(xd, y * 2) and np.array_equal(yd, y)


def test_nan_is_skipped_unless_a_bucket_holds_nothing_else():
    # max_points 6: 2 buckets of the 7 interior points, indices 1..4 and 5..7 (interior i in bucket i * 2 // 7)
    y = np.array([1.0, np.nan, 5.0, 2.0, np.nan, np.nan, np.nan, 3.0, 0.0])
    assert minmax_indices(y, 6).tolist() == [0, 2, 3, 7, 8]
    # indices 1..3 (all NaN: first and last kept, a gap) and 4..6
    y = np.array([1.0, np.nan, np.nan, np.nan, 2.0, 3.0, 4.0, 0.0])
    assert minmax_indices(y, 6).tolist() == [0, 1, 3, 4, 6, 7]


def test_rejects_fewer_than_four_points():
    with pytest.raises(ValueError, match="max_points"):
        minmax_indices(np.arange(10.0), 3)
