"""Diagnosing curves of unknown batch size: synthetic curves of known noise, the ranking, the call, its error rate."""

from __future__ import annotations

import numpy as np
import pytest

from batchlab.analysis.diagnose import (
    DIAGNOSE_WINDOW,
    REFIT_MAX_POINTS,
    curve_noise,
    diagnose,
    noise_ranks,
    residual_std_interval,
)
from batchlab.analysis.noise import residual_std_log, running_median


def noisy_curve(sigma: float, n: int, *, seed: int, tau: float | None = None) -> np.ndarray:
    """log-loss = log(0.05 + 2 exp(-t / tau)) + N(0, sigma^2): a smooth decay (tau = n / 2 by default) with
    Gaussian noise of known std in log units."""
    t = np.arange(n)
    trend = np.log(0.05 + 2 * np.exp(-t / (tau or n / 2)))
    return np.exp(trend + np.random.default_rng(seed).normal(0.0, sigma, n))


@pytest.mark.parametrize("sigma", [0.03, 0.1, 0.3])
def test_residual_std_recovers_the_known_sigma(sigma):
    # With window 7 a residual is x_t minus the median of 7 draws: Var = sigma^2 (1 + Var(median) - 2 Cov)
    # ~ sigma^2 (1 + 0.21 - 2/7), so the metric reads ~0.96 sigma (module docstring); within 10% of sigma.
    noise = curve_noise(noisy_curve(sigma, 3000, seed=1))
    assert noise.residual_std_log == pytest.approx(sigma, rel=0.1)
    assert noise.residual_std_log == pytest.approx(0.96 * sigma, rel=0.04)
    assert noise.residual_std_log_low < noise.residual_std_log < noise.residual_std_log_high
    assert noise.residual_std_log_high - noise.residual_std_log_low < 0.1 * sigma  # 3,000 points pin it down
    assert noise.n_points == 3000
    assert noise.fraction_rising == pytest.approx(0.5, abs=0.05)  # the trend is small next to the noise
    assert abs(noise.residual_lag1_autocorrelation) < 0.2


def test_three_curves_rank_by_noise_in_either_order():
    curves = [noisy_curve(s, 500, seed=i) for i, s in enumerate((0.3, 0.1, 0.03))]
    d = diagnose(curves)
    assert d.ranks == (1, 2, 3) and d.order == [0, 1, 2] and d.smallest_batch == 0 and not d.too_close_to_call
    reversed_ = diagnose(curves[::-1])
    assert reversed_.ranks == (3, 2, 1) and reversed_.smallest_batch == 2


@pytest.mark.parametrize("seed", range(5))
def test_equal_noise_is_too_close_to_call(seed):
    d = diagnose([noisy_curve(0.1, 400, seed=2 * seed), noisy_curve(0.1, 400, seed=2 * seed + 1)])
    assert d.too_close_to_call and d.smallest_batch is None
    assert sorted(d.ranks) == [1, 2]  # still ranked, just not called


def test_false_calls_are_rare_and_real_differences_are_called():
    # 100 pairs of equal-noise 50-point curves: non-overlapping 95% intervals should almost never happen
    false_calls = sum(diagnose([noisy_curve(0.1, 50, seed=2 * s), noisy_curve(0.1, 50, seed=2 * s + 1)],
                               seed=s).smallest_batch is not None for s in range(100))
    assert false_calls <= 5
    # 1.6x the noise over 1,000 points is called, for the right curve, every time
    calls = [diagnose([noisy_curve(0.1, 1000, seed=2 * s), noisy_curve(0.16, 1000, seed=2 * s + 1)],
                      seed=s).smallest_batch for s in range(5)]
    assert calls == [1] * 5


def test_smooth_curves_have_zero_noise_and_cannot_be_called():
    smooth = np.exp(-np.linspace(0, 3, 40))
    d = diagnose([smooth, 2 * smooth])
    assert d.noise[0].residual_std_log == 0.0
    assert (d.noise[0].residual_std_log_low, d.noise[0].residual_std_log_high) == (0.0, 0.0)
    assert np.isnan(d.noise[0].residual_lag1_autocorrelation)
    assert d.too_close_to_call and d.ranks == (1, 1)  # a tie shares its rank (issue 11)


@pytest.mark.parametrize(("values", "ranks"), [
    ([0.3, 0.1, 0.2], (1, 3, 2)),
    ([0.0, 0.0, 0.0], (1, 1, 1)),
    ([0.0, 0.3, 0.0], (2, 1, 2)),
    ([0.2, 0.2 * (1 + 1e-12), 0.1], (1, 1, 3)),  # equal to rounding
    ([0.2, 0.2 * (1 + 1e-6), 0.1], (2, 1, 3)),  # a real (if tiny) difference
    ([float("nan"), 0.1, float("nan")], (2, 1, 2)),
    ([], ()),
])
def test_noise_ranks(values, ranks):
    assert noise_ranks(values) == ranks


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_smooth_monotone_curves_tie_whatever_the_argument_order(order):
    # issue 11: three strictly decreasing per-epoch curves all scored 0 and the ranks followed the argument order,
    # calling the first (the full batch) "most likely the smallest batch"
    epochs = np.arange(40)
    curves = [np.exp(-epochs / tau) + floor for tau, floor in ((5, 0.01), (10, 0.05), (20, 0.1))]
    d = diagnose([curves[i] for i in order])
    assert d.ranks == (1, 1, 1) and d.smallest_batch is None and d.too_close_to_call
    assert d.tied_for_noisiest == [0, 1, 2]
    noisy = diagnose([curves[0], noisy_curve(0.1, 40, seed=0), curves[1]])
    assert noisy.ranks == (2, 1, 2) and noisy.smallest_batch == 1 and noisy.tied_for_noisiest == []


def test_one_curve_is_ranked_but_not_called():
    d = diagnose([noisy_curve(0.1, 100, seed=0)])
    assert d.ranks == (1,) and d.smallest_batch is None and not d.too_close_to_call


def test_non_finite_values_are_dropped():
    loss = noisy_curve(0.1, 200, seed=3)
    with_nan = np.concatenate([loss, [np.nan, np.inf]])
    a, b = curve_noise(loss), curve_noise(with_nan)
    assert b.n_points == 200 and b.residual_std_log == a.residual_std_log
    assert (b.residual_std_log_low, b.residual_std_log_high) == (a.residual_std_log_low, a.residual_std_log_high)


def test_bootstrap_is_reproducible_from_its_seed():
    loss = noisy_curve(0.1, 300, seed=4)
    assert residual_std_interval(loss, seed=7) == residual_std_interval(loss, seed=7)
    assert residual_std_interval(loss, seed=7) != residual_std_interval(loss, seed=8)
    assert np.isnan(residual_std_interval(loss[:2])).all()


def test_interval_covers_the_true_value_at_about_its_nominal_rate():
    # The expected metric for sigma = 0.1 at 300 points (a mean over many curves) lies in about 95% of the
    # intervals (measured: 95% of 200); 40 intervals, at least 34 (85%) must cover it.
    expected = np.mean([residual_std_log(noisy_curve(0.1, 300, seed=1000 + s), DIAGNOSE_WINDOW) for s in range(200)])
    covered = [lo <= expected <= hi for lo, hi in
               (residual_std_interval(noisy_curve(0.1, 300, seed=s), seed=s) for s in range(40))]
    assert sum(covered) >= 34


def test_long_curves_switch_bootstrap_without_a_jump():
    # Above REFIT_MAX_POINTS the median is not refitted per resample; the interval must barely change there.
    n = REFIT_MAX_POINTS
    loss = noisy_curve(0.1, n + 1, seed=5)
    refit = residual_std_interval(loss[:n])
    direct = residual_std_interval(loss)
    assert refit[0] == pytest.approx(direct[0], rel=0.01) and refit[1] == pytest.approx(direct[1], rel=0.01)


def test_vectorised_running_median_matches_the_reference():
    from batchlab.analysis.diagnose import _running_median_rows

    rng = np.random.default_rng(0)
    for n, window in ((5, 5), (6, 5), (8, DIAGNOSE_WINDOW), (40, DIAGNOSE_WINDOW), (4, 3)):
        x = rng.normal(size=(3, n))
        np.testing.assert_array_equal(_running_median_rows(x, window), [running_median(row, window) for row in x])
