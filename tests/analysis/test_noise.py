"""Noise metrics against hand-worked values."""

from __future__ import annotations

import numpy as np
import pytest

from batchlab.analysis.noise import residual_std_log, running_median


def test_running_median_equals_the_median_of_each_shrinking_window():
    """The rank filter's interior and the shrinking ends against np.median of every window, NaN propagated."""
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 6, 7, 52, 301):
        for window in (1, 3, 7, 51):
            x = rng.normal(size=n)
            if n > 10:
                x[: n // 5] = x[0]  # ties
            half = window // 2
            expected = [np.median(x[i - min(i, n - 1 - i, half):i + min(i, n - 1 - i, half) + 1]) for i in range(n)]
            np.testing.assert_array_equal(running_median(x, window), expected)
    x = rng.normal(size=40)
    x[20] = np.nan
    assert np.isnan(running_median(x, 7)[17:24]).all() and np.isfinite(running_median(x, 7)[:17]).all()


def test_running_median_hand_worked():
    x = np.array([5.0, 1.0, 4.0, 2.0, 3.0])
    # window 3, ends shrink symmetrically to a window of 1
    np.testing.assert_array_equal(running_median(x, 3), [5.0, 4.0, 2.0, 3.0, 3.0])
    np.testing.assert_array_equal(running_median(x, 5), [5.0, 4.0, 3.0, 3.0, 3.0])
    np.testing.assert_array_equal(running_median(x, 1), x)
    with pytest.raises(ValueError):
        running_median(x, 4)


def test_a_smooth_monotone_curve_has_zero_noise():
    assert residual_std_log(np.exp(-np.linspace(0, 5, 50)), 5) == 0.0


def test_alternating_jitter_is_measured_in_log_units():
    # log-loss alternates +a, -a: in the interior each point's window-3 median is its neighbours' value (-+a),
    # so residuals are +-2a; the two end points have a window of 1 and residual 0.
    a = 0.1
    loss = np.exp(a * np.array([1, -1, 1, -1, 1, -1, 1]))
    residuals = np.array([0, -2 * a, 2 * a, -2 * a, 2 * a, -2 * a, 0])
    assert residual_std_log(loss, 3) == pytest.approx(np.std(residuals))


def test_noise_is_scale_free_and_ignores_non_finite_values():
    rng = np.random.default_rng(0)
    loss = np.exp(rng.normal(size=200) * 0.3)
    assert residual_std_log(loss, 11) == pytest.approx(residual_std_log(100 * loss, 11))
    assert residual_std_log(np.append(loss, np.nan), 11) == pytest.approx(residual_std_log(loss, 11))
    assert np.isnan(residual_std_log(np.array([1.0, 2.0]), 5))
