"""Curve noise metrics and the sampling-noise prediction against hand-worked values and simulation."""

from __future__ import annotations

import numpy as np
import pytest

from batchlab.analysis.curves import (
    epoch_curve_noise,
    fraction_rising,
    mean_abs_first_difference,
    noise_ratio_vs_sqrt_prediction,
    residual_lag1_autocorrelation,
    sampling_noise_factor,
)
from batchlab.errors import BatchlabError


def test_mean_abs_first_difference_hand_worked():
    # log-loss 0, ln 2, 0, ln 4: steps ln 2, ln 2, ln 4 -> mean (4 ln 2) / 3
    loss = np.array([1.0, 2.0, 1.0, 4.0])
    assert mean_abs_first_difference(loss) == pytest.approx(4 * np.log(2) / 3)
    assert mean_abs_first_difference(10 * loss) == pytest.approx(mean_abs_first_difference(loss))
    # a pure exponential decay e^{-0.1 t} moves by exactly 0.1 per step; the NaN tail is dropped
    assert mean_abs_first_difference(np.append(np.exp(-0.1 * np.arange(20)), np.nan)) == pytest.approx(0.1)
    assert np.isnan(mean_abs_first_difference(np.array([1.0])))


def test_mean_abs_first_difference_skips_unresolved_losses():
    # Issue 11: a float32 loss of exactly 0 used to be floored at 1e-8, which made the step 0 -> 1 worth
    # -ln(1e-8) = 18.4, a number set by the floor. Now unresolved values are left out: consecutive resolvable
    # points are compared (ln 2 and ln 4 here), and a curve with fewer than 2 of them has no value.
    assert np.isnan(mean_abs_first_difference(np.array([1.0, 0.0])))
    loss = np.array([1.0, 0.0, 2.0, 1e-9, 0.0, 8.0])
    assert mean_abs_first_difference(loss) == pytest.approx((np.log(2) + np.log(4)) / 2)
    assert fraction_rising(loss) == pytest.approx(2 / 5)  # order is known even for zeros: 0 -> 2 and 0 -> 8 rise


def test_fraction_rising_hand_worked():
    assert fraction_rising(np.array([3.0, 2.0, 2.5, 2.5, 1.0])) == pytest.approx(1 / 4)  # one strict rise, one tie
    assert fraction_rising(np.array([3.0, 2.0, 1.0])) == 0.0
    assert fraction_rising(np.array([1.0, 2.0, np.inf, 3.0])) == 1.0
    assert np.isnan(fraction_rising(np.array([np.nan, 1.0])))


def test_fraction_rising_of_white_noise_is_one_half():
    rng = np.random.default_rng(1)
    assert fraction_rising(np.exp(rng.normal(size=20_000))) == pytest.approx(0.5, abs=0.01)


def _acf1(r):
    r = r - r.mean()
    return np.correlate(r, r, "full")[len(r)] / np.dot(r, r)


def test_lag1_autocorrelation_of_alternating_jitter_hand_worked():
    # residuals around the window-3 running median are 0, -2a, 2a, -2a, 2a, -2a, 0 (see test_noise.py)
    a = 0.1
    loss = np.exp(a * np.array([1, -1, 1, -1, 1, -1, 1]))
    expected = _acf1(np.array([0, -2 * a, 2 * a, -2 * a, 2 * a, -2 * a, 0]))
    assert residual_lag1_autocorrelation(loss, 3) == pytest.approx(expected)
    assert expected < -0.6
    long = np.exp(-0.001 * np.arange(2001) + a * (-1.0) ** np.arange(2001))
    assert residual_lag1_autocorrelation(long, 7) < -0.99
    assert residual_lag1_autocorrelation(long, 51) < -0.95
    # a window of 4m + 1 holds more points of the same parity: its median follows the oscillation (documented)
    assert abs(residual_lag1_autocorrelation(long, 5)) < 0.2


def test_lag1_autocorrelation_separates_white_noise_from_slow_wandering():
    rng = np.random.default_rng(2)
    trend = -0.0005 * np.arange(4000)
    white = rng.normal(size=4000) * 0.05
    slow = np.convolve(rng.normal(size=4000 + 19), np.ones(20) / 20, "valid") * 0.3  # smooth over 20 steps
    assert abs(residual_lag1_autocorrelation(np.exp(trend + white), 51)) < 0.05
    assert residual_lag1_autocorrelation(np.exp(trend + slow), 51) > 0.8


def test_lag1_autocorrelation_undefined_for_smooth_or_short_curves():
    assert np.isnan(residual_lag1_autocorrelation(np.exp(-np.linspace(0, 3, 30)), 5))
    assert np.isnan(residual_lag1_autocorrelation(np.array([1.0, 2.0]), 5))


def test_sampling_noise_factor_matches_simulated_minibatch_means():
    rng = np.random.default_rng(3)
    population = rng.normal(size=40)
    sigma = population.std()  # 1/N population std: the with-replacement per-example std
    for b in (1, 4, 10):
        with_repl = population[rng.integers(0, 40, (20_000, b))].mean(axis=1)
        assert with_repl.std() / sigma == pytest.approx(sampling_noise_factor(b), rel=0.03)
        without = np.array([rng.permutation(40)[:b] for _ in range(20_000)])
        assert population[without].mean(axis=1).std() / sigma == pytest.approx(
            sampling_noise_factor(b, n_train=40), rel=0.03)
    assert sampling_noise_factor(40, n_train=40) == 0.0
    with pytest.raises(BatchlabError):
        sampling_noise_factor(41, n_train=40)


def test_noise_ratio_prediction():
    measured, predicted = noise_ratio_vs_sqrt_prediction(0.4, 4, 0.1, 64)
    assert (measured, predicted) == (pytest.approx(4.0), pytest.approx(4.0))
    # finite population N = 100: sqrt(64 / 4) * sqrt((100 - 4) / (100 - 64))
    ratio = noise_ratio_vs_sqrt_prediction(0.4, 4, 0.1, 64, n_train=100)
    assert ratio.predicted == pytest.approx(4 * np.sqrt(96 / 36))
    assert noise_ratio_vs_sqrt_prediction(0.4, 4, 0.1, 100, n_train=100).predicted == np.inf
    with pytest.raises(BatchlabError):
        noise_ratio_vs_sqrt_prediction(0.1, 64, 0.4, 4)


def test_epoch_curve_noise_hand_worked():
    """Issue 10: the puzzle's plot in two numbers, read after epoch 10. Epochs 0-9 are ignored (a rise there is
    not counted); then 1, 2, 1, 2, 1 rises at 2 of 4 steps. Its 3-epoch running median is 1, 1, 2, 1, 1 (the
    window shrinks to 1 at the ends), so the log-residuals are 0, ln 2, -ln 2, ln 2, 0."""
    loss = np.array([5.0, 9, 4, 3, 3, 3, 3, 3, 3, 3, 1, 2, 1, 2, 1])
    noise = epoch_curve_noise(loss, start=10, window=3)
    assert noise.rising == pytest.approx(0.5)
    assert noise.residual == pytest.approx(np.std(np.log(2) * np.array([0, 1, -1, 1, 0])))
    falling = np.exp(-0.05 * np.arange(101))  # gradient descent's smooth decay
    assert epoch_curve_noise(falling) == (0.0, pytest.approx(0.0, abs=1e-12))
    assert np.isnan(epoch_curve_noise(np.ones(5)).rising)
