"""Does a scaling rule hold: planted curves where it holds throughout, and where it breaks only early."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from batchlab.analysis.rule_check import rule_check, rule_check_dict

N = 1000


def study(gap_early: float, gap_late: float, noise_large: float):
    rng = np.random.default_rng(0)
    epochs = np.arange(0, 21)
    runs, curves = [], {}
    for b, noise in ((10, 1.0), (40, noise_large)):
        for seed in range(4):
            log_loss = -0.1 * epochs + rng.normal(0, 0.01, len(epochs))
            if b == 40:
                log_loss = log_loss + np.where(epochs <= 10, gap_early, gap_late)
            s = SimpleNamespace(run_id=f"{b}-{seed}", batch_size=b, lr=0.1, seed=seed, status="completed",
                                step_noise=noise)
            runs.append(s)
            curves[s.run_id] = {"epoch": epochs, "train_loss": np.exp(log_loss)}
    return runs, curves


def test_a_rule_that_holds_and_noise_that_follows_one_over_sqrt_b():
    predicted = math.sqrt(40 / 10) * math.sqrt((N - 10) / (N - 40))
    runs, curves = study(0.0, 0.0, noise_large=1 / predicted)
    (pair,) = rule_check(runs, curves, n_train=N)
    assert (pair.batch_size, pair.larger) == (10, 40)
    assert pair.early.holds and pair.late.holds
    assert abs(pair.early.log_gap) < 0.02 and pair.early.epochs == (1, 10) and pair.late.epochs == (11, 20)
    assert pair.noise_predicted == pytest.approx(predicted) and pair.noise_measured == pytest.approx(predicted)
    assert pair.noise_follows


def test_a_rule_that_breaks_early_only_and_noise_that_does_not_follow():
    runs, curves = study(0.2, 0.0, noise_large=1.0)
    (pair,) = rule_check(runs, curves, n_train=N)
    assert pair.early.holds is False and pair.early.log_gap == pytest.approx(0.2, abs=0.01)
    assert pair.early.z > 10
    assert pair.late.holds
    assert pair.noise_follows is False
    doc = rule_check_dict([pair])[0]
    assert doc["early"]["holds"] is False and doc["late"]["epochs"] == [11, 20]


def test_one_seed_has_no_spread_to_judge_by():
    runs, curves = study(0.0, 0.0, noise_large=0.5)
    runs = [s for s in runs if s.seed == 0]
    (pair,) = rule_check(runs, curves, n_train=N)
    assert pair.early.holds is None and math.isnan(pair.early.z)
