"""Steps to target, the S(B) fit, regimes and the fastest batch size against hand-made trials and known curves."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from batchlab.analysis.scaling import (
    FitWarning,
    StepsToTarget,
    Trial,
    fastest_batch_size,
    fit_critical_batch,
    measured_time_to_target,
    scaling_regime,
    steps_to_target,
)
from batchlab.errors import BatchlabError


def trial(b, lr, seed, values, *, every=10, diverged=False, seconds_per_step=0.01):
    steps = np.arange(len(values)) * every
    return Trial(b, lr, seed, steps, np.asarray(values, float), steps * seconds_per_step, diverged)


TRIALS = [
    trial(8, 0.1, 0, [1.0, 0.6, 0.3, 0.09, 0.05]),  # < 0.1 first at step 30
    trial(8, 0.3, 0, [1.0, 0.4, 0.08, 0.05, 0.04]),  # step 20: the winner for B = 8
    trial(8, 1.0, 0, [1.0, 0.05, np.nan, np.nan, np.nan], diverged=True),  # step 10, but diverged: infeasible
    trial(32, 0.3, 0, [1.0, 0.5, 0.2, 0.1, 0.1]),  # reaches 0.1 but never goes below it
    trial(32, 0.3, 1, [1.0, 0.2, 0.15, 0.12, 0.11]),  # never
    trial(64, 0.1, 0, [1.0, 0.5, 0.09, 0.01, 0.01], seconds_per_step=0.02),  # step 20
    trial(64, 0.1, 1, [1.0, 0.5, 0.05, 0.01, 0.01], seconds_per_step=0.03),  # step 20 too: the earlier trial wins
]


def test_steps_to_target_hand_made_trials():
    result = steps_to_target(TRIALS, 0.1)
    assert list(result) == [8, 32, 64]
    r8 = result[8]
    assert (r8.steps, r8.examples, r8.lr, r8.seed, r8.n_trials, r8.n_diverged) == (20, 160, 0.3, 0, 3, 1)
    assert r8.wall_time_s == pytest.approx(0.2)
    assert not result[32].feasible and result[32].steps is None and np.isnan(result[32].wall_time_s)
    r64 = result[64]
    assert (r64.steps, r64.seed, r64.examples) == (20, 0, 1280) and r64.wall_time_s == pytest.approx(0.4)
    # a tie in steps goes to the earlier trial: reversed order, the other seed wins
    assert steps_to_target(TRIALS[::-1], 0.1)[64].seed == 1


def test_the_target_is_strict_and_an_initial_evaluation_can_reach_it():
    assert steps_to_target(TRIALS, 0.100001)[32].steps == 30
    assert steps_to_target(TRIALS, 1.5)[8].steps == 0


def test_budgets_in_steps_and_examples():
    assert steps_to_target(TRIALS, 0.1, max_steps=20)[8].steps == 20
    assert not steps_to_target(TRIALS, 0.1, max_steps=19)[8].feasible
    assert steps_to_target(TRIALS, 0.1, max_examples=20 * 64)[64].steps == 20
    by_examples = steps_to_target(TRIALS, 0.1, max_examples=20 * 64 - 1)
    assert not by_examples[64].feasible and by_examples[8].steps == 20  # 160 examples is within the budget


def synthetic_steps(b, s_min=1000.0, b_crit=64.0):
    return s_min * (1.0 + b_crit / np.asarray(b, float))


BATCH_SIZES = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024])


def test_fit_recovers_a_noise_free_curve_exactly():
    fit = fit_critical_batch(BATCH_SIZES, synthetic_steps(BATCH_SIZES))
    assert fit.s_min == pytest.approx(1000.0, rel=1e-8) and fit.b_crit == pytest.approx(64.0, rel=1e-8)
    assert fit.e_min == pytest.approx(64_000.0, rel=1e-8)
    assert fit.log_se_b_crit == pytest.approx(0.0, abs=1e-6) and fit.n == len(BATCH_SIZES)
    assert fit.b_crit_low <= 64.0 <= fit.b_crit_high
    np.testing.assert_allclose(fit.predict_steps(BATCH_SIZES), synthetic_steps(BATCH_SIZES), rtol=1e-8)
    # three points are enough, and S_min = E_min / B_crit holds whatever the data
    three = fit_critical_batch([8, 64, 512], synthetic_steps([8, 64, 512]))
    assert three.b_crit == pytest.approx(64.0, rel=1e-8) and three.e_min == pytest.approx(three.s_min * three.b_crit)


def test_fit_intervals_cover_the_truth_on_noisy_points():
    rng = np.random.default_rng(0)
    hits_b, hits_s, widths = 0, 0, []
    repeats = 300
    for _ in range(repeats):
        noisy = synthetic_steps(BATCH_SIZES) * np.exp(rng.normal(scale=0.1, size=len(BATCH_SIZES)))
        fit = fit_critical_batch(BATCH_SIZES, noisy)
        hits_b += fit.b_crit_low <= 64.0 <= fit.b_crit_high
        hits_s += fit.s_min_low <= 1000.0 <= fit.s_min_high
        widths.append(fit.log_se_b_crit)
    # the 95% intervals cover the truth about 95% of the time (binomial sd ~1.3%)
    assert 0.90 <= hits_b / repeats <= 0.99 and 0.90 <= hits_s / repeats <= 0.99
    # the standard error matches the spread of the estimates it describes, roughly
    assert 0.03 < np.median(widths) < 0.3


def test_fit_needs_three_batch_sizes():
    with pytest.raises(BatchlabError, match="at least 3 distinct batch sizes"):
        fit_critical_batch([8, 64], synthetic_steps([8, 64]))
    with pytest.raises(BatchlabError):
        fit_critical_batch([8, 8, 64, np.nan], [10.0, 11.0, 5.0, 3.0])  # NaN steps (infeasible) are dropped


def test_fit_warns_when_b_crit_is_not_identified():
    with pytest.warns(FitWarning, match="only S_min"):
        fit_critical_batch([8, 64, 512], [100.0, 100.0, 100.0])  # flat: B_crit -> 0
    with pytest.warns(FitWarning, match="only E_min"):
        fit = fit_critical_batch([8, 64, 512], [800.0, 100.0, 12.5])  # S = 6400 / B: B_crit -> inf
    assert fit.e_min == pytest.approx(6400.0, rel=1e-3)
    with pytest.warns(FitWarning):
        fit_critical_batch([8, 64, 512], [100.0, 110.0, 120.0])  # steps rise with B: not this model at all
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_critical_batch([8, 64, 512], synthetic_steps([8, 64, 512]))


def test_scaling_regimes():
    assert scaling_regime(16, 64) == "perfect scaling"
    assert scaling_regime(17, 64) == "diminishing returns"
    assert scaling_regime(64, 64) == "diminishing returns"
    assert scaling_regime(255, 64) == "diminishing returns"
    assert scaling_regime(256, 64) == "maximal data parallelism"
    assert scaling_regime(32, 64, factor=2) == "perfect scaling"
    # the thresholds mean what the docstring says: E within 25% of E_min, S within 25% of S_min
    s = synthetic_steps(np.array([16.0, 256.0]))
    assert 16 * s[0] == pytest.approx(1.25 * 64_000) and s[1] == pytest.approx(1.25 * 1000)
    with pytest.raises(BatchlabError):
        scaling_regime(16, float("nan"))


def test_fastest_batch_size_from_made_up_timings():
    steps = {8: 1000, 64: 200, 512: 150, 4096: None}
    per_update = {8: 0.001, 64: 0.002, 512: 0.004, 4096: 0.01}  # wall: 1.0, 0.4, 0.6, infeasible
    fastest = fastest_batch_size(steps, per_update)
    assert fastest.batch_size == 64
    assert [r.wall_time_s for r in fastest.table] == pytest.approx([1.0, 0.4, 0.6, np.inf])
    # it takes steps_to_target's output directly
    result = steps_to_target(TRIALS, 0.1)
    assert isinstance(result[8], StepsToTarget)
    fastest = fastest_batch_size(result, {8: 0.05, 32: 1.0, 64: 0.01})  # 20 * 0.05 = 1.0 vs 20 * 0.01 = 0.2
    assert fastest.batch_size == 64 and fastest.table[1].wall_time_s == np.inf
    assert fastest_batch_size({8: None}, {}).batch_size is None
    with pytest.raises(BatchlabError):
        fastest_batch_size({8: 10, 64: 5}, {8: 0.1})


def test_a_target_reached_at_initialization_has_exact_resolution():
    # steps 0 (the initial evaluation already beats the target): seen in CI as a ZeroDivisionError in the analysis
    st = StepsToTarget(batch_size=8, steps=0, examples=0, wall_time_s=0.0, lr=0.1, seed=0, n_trials=1, n_diverged=0,
                       previous_evaluation=0)
    assert st.resolution == 0.0


def test_measured_time_to_target_is_the_clock_at_the_reaching_evaluation():
    """Issue 10: one time to target everywhere, the winning trial's training clock at the evaluation that reached
    the target (not steps x a time per update measured over the whole run, which counts the evaluations)."""
    reached = steps_to_target([trial(1, 0.1, 0, [1.0, 0.6, 0.4], seconds_per_step=0.002),
                               trial(10, 0.1, 0, [1.0, 0.45, 0.3], every=2, seconds_per_step=0.5),
                               trial(100, 0.1, 0, [1.0, 0.9, 0.8])], 0.5)
    fastest = measured_time_to_target(reached)
    rows = {r.batch_size: r for r in fastest.table}
    assert rows[1].wall_time_s == pytest.approx(0.04) and rows[1].steps == 20  # 20 steps x 0.002 s on its clock
    assert rows[10].wall_time_s == pytest.approx(1.0) and rows[10].time_per_update_s == pytest.approx(0.5)
    assert rows[100].wall_time_s == np.inf and np.isnan(rows[100].steps)
    assert fastest.batch_size == 1
    assert measured_time_to_target({100: reached[100]}).batch_size is None
