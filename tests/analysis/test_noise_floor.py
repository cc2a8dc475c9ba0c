"""Noise metrics do not depend on the display floor (issue 11): exact zeros of a float32 cross-entropy are counted,
and the noise is measured on the resolvable losses.

Before the fix, on the curve below (14% exact zeros), the residual std of log-loss was 3.26, 3.84 and 6.01 for
LOSS_FLOOR = 1e-6, 1e-8 and 1e-12, and the mean absolute first difference 3.34, 4.18 and 5.74 (on digits at batch
size 1 the issue measured 2.77, 3.69, 6.10). Now they are 3.41 and 3.79 whatever the floor.
"""

from __future__ import annotations

import numpy as np
import pytest

from batchlab.analysis import curves, diagnose, noise, runs
from batchlab.analysis.curves import fraction_rising, mean_abs_first_difference, residual_lag1_autocorrelation
from batchlab.analysis.noise import UNRESOLVED_LOSS, residual_std_log, unresolved_fraction
from batchlab.analysis.runs import STEP_NOISE_WINDOW, summarize_run


def float32_step_losses(n_steps: int = 4000, *, seed: int = 0, margin_growth: float = 18.0) -> np.ndarray:
    """Batch size 1's minibatch losses as float32 training computes them: the cross-entropy -log_softmax(z)_y of
    10 logits (z_y - max z - log sum exp(z - max z), as jax.nn.log_softmax), whose correct-class margin grows during
    training with a wide spread between examples. Once exp(-margin) is below float32 rounding of 1, the loss is 0."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n_steps, 10)).astype(np.float32)
    logits[:, 0] += (2 + margin_growth * np.arange(n_steps) / n_steps + 4 * rng.normal(size=n_steps)).astype(np.float32)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return (np.log(np.sum(np.exp(shifted), axis=1)) - shifted[:, 0]).astype(np.float32)


def all_metrics(loss: np.ndarray) -> dict[str, float]:
    """Every per-curve noise metric a report or `batchlab diagnose` quotes."""
    run = {"run_id": "bs1", "batch_size": 1, "lr": 0.1, "seed": 0, "status": "completed", "diverged_epoch": None,
           "updates_per_epoch": len(loss), "epochs_done": 1, "total_updates": len(loss), "examples_seen": len(loss),
           "wall_time_s": 1.0, "compile_time_s": 0.0}
    epochs = {"epoch": np.arange(2), "train_loss": np.array([2.3, 0.1]), "test_loss": np.array([2.3, 0.2]),
              "train_acc": np.array([0.1, 0.9]), "test_acc": np.array([0.1, 0.9])}
    noise_of_curve = diagnose.curve_noise(loss)
    return {"residual_std_log": residual_std_log(loss, STEP_NOISE_WINDOW),
            "mean_abs_first_difference": mean_abs_first_difference(loss),
            "fraction_rising": fraction_rising(loss),
            "residual_lag1_autocorrelation": residual_lag1_autocorrelation(loss, STEP_NOISE_WINDOW),
            "step_noise": summarize_run(run, epochs, loss).step_noise,
            "diagnose_low": noise_of_curve.residual_std_log_low, "diagnose_high": noise_of_curve.residual_std_log_high}


def with_floor(monkeypatch: pytest.MonkeyPatch, floor: float, loss: np.ndarray) -> dict[str, float]:
    for module in (noise, curves, runs, diagnose):
        monkeypatch.setattr(module, "LOSS_FLOOR", floor, raising=False)
    return all_metrics(loss)


def test_the_realistic_curve_has_many_exact_zeros():
    loss = float32_step_losses()
    assert 0.10 < np.mean(loss == 0) < 0.16  # as batch size 1 on digits (13%)
    assert np.isfinite(loss).all() and loss.min() == 0.0


def test_a_floor_change_from_1e6_to_1e12_moves_no_metric_by_more_than_5_percent(monkeypatch):
    loss = float32_step_losses()
    high, low = with_floor(monkeypatch, 1e-6, loss), with_floor(monkeypatch, 1e-12, loss)
    for name in high:
        assert np.isfinite(high[name]), name
        assert low[name] == pytest.approx(high[name], rel=0.05), name


def test_unresolved_values_are_counted_and_left_out():
    loss = float32_step_losses()
    unresolved = loss < UNRESOLVED_LOSS
    assert unresolved_fraction(loss) == pytest.approx(unresolved.mean())
    assert unresolved.mean() > np.mean(loss == 0)  # the smallest nonzero float32 value, one rounding step, too
    # any value below float32 resolution stands for the same unknown: 0, 1e-9, 1e-30 and -1 give the same metrics
    for stand_in in (1e-9, 1e-30, -1.0):
        other = np.where(unresolved, stand_in, loss)
        assert all_metrics(other) | {"fraction_rising": 0} == all_metrics(loss) | {"fraction_rising": 0}
    # and the log metrics are those of the resolvable sub-curve
    kept = loss[~unresolved]
    assert residual_std_log(loss, 51) == residual_std_log(kept, 51)
    assert mean_abs_first_difference(loss) == mean_abs_first_difference(kept)
    # a loss just above the threshold still counts: log metrics see it
    assert residual_std_log(np.array([2e-7, 1.0, 2e-7, 1.0]), 3) > 0


def test_the_run_summary_counts_the_zero_steps():
    loss = float32_step_losses(1000, margin_growth=30.0)
    run = {"run_id": "bs1", "batch_size": 1, "lr": 0.1, "seed": 0, "status": "completed", "diverged_epoch": None,
           "updates_per_epoch": 1000, "epochs_done": 1, "total_updates": 1000, "examples_seen": 1000,
           "wall_time_s": 1.0, "compile_time_s": 0.0}
    epochs = {"epoch": np.arange(2), "train_loss": np.array([2.3, 0.1]), "test_loss": np.array([2.3, 0.2]),
              "train_acc": np.array([0.1, 0.9]), "test_acc": np.array([0.1, 0.9])}
    s = summarize_run(run, epochs, np.append(loss, np.nan))  # a NaN (diverged) step is neither counted nor measured
    assert s.n_zero_steps == int(np.sum(loss < UNRESOLVED_LOSS)) > 100
    assert s.step_zero_fraction == pytest.approx(s.n_zero_steps / 1000)
    assert s.step_noise == residual_std_log(loss[loss >= UNRESOLVED_LOSS], STEP_NOISE_WINDOW)


def test_the_noise_of_the_resolvable_losses_does_not_drift_with_the_share_of_zeros():
    # the same jitter, with 5% to 35% of the steps rounded to 0: the old floored metric rose with the share of zeros
    values = [residual_std_log(float32_step_losses(margin_growth=g), STEP_NOISE_WINDOW) for g in (14.0, 20.0, 26.0)]
    assert max(values) / min(values) < 1.1
