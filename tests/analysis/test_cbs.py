"""CBS(t) by Merrill et al.'s rule: the rule itself, and a noisy linear regression whose branches' expected
losses are known in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from batchlab.analysis.cbs import (
    critical_batch_size_json,
    critical_batch_sizes,
    critical_multiplier,
    smoothed,
)


def test_smoothed_is_an_ema_of_the_window():
    assert smoothed([4.0]) == 4.0
    assert smoothed([4.0, 2.0, 1.0]) == pytest.approx(0.5 * 1 + 0.5 * (0.5 * 2 + 0.5 * 4))


def test_the_rule_takes_the_last_multiplier_before_the_first_that_falls_behind():
    assert critical_multiplier({1: 1.0, 2: 1.005, 4: 1.011, 8: 1.0}) == 2  # 4 falls behind; 8 never counts
    assert critical_multiplier({1: 1.0, 2: 0.9, 4: 0.905, 8: 0.95}) == 4  # compared with the best smaller one
    assert critical_multiplier({1: 1.0, 2: 1.02}, tolerance=0.05) == 2
    assert critical_multiplier({1: 1.0, 2: float("nan")}) == 1  # a diverged branch falls behind
    assert critical_multiplier({2: 1.0, 4: 1.0}) is None  # no x1 reference


def expected_losses(*, d: int, sigma2: float, m0: float, lr: float, base: int, k: int, n_train: int,
                    epochs: int) -> np.ndarray:
    """Exact expected loss after each epoch of SGD (rate `lr`, batch k x base) on noisy linear regression
    y = x.w* + noise, x ~ N(0, I_d), noise variance sigma2, from E|w - w*|^2 = m0. With d_t = w_t - w*:
    the loss is (|d|^2 + sigma2) / 2, the gradient G = d, and the per-example gradient covariance
    Sigma = (|d|^2 + sigma2) I + d d^T, so tr(Sigma) = (d + 1)|d|^2 + d sigma2 and one step at batch b gives
    E|d'|^2 = (1 - lr)^2 |d|^2 + lr^2 tr(Sigma) / b: linear in |d|^2, so the expectation closes."""
    b = k * base
    a = (1 - lr) ** 2 + lr ** 2 * (d + 1) / b
    c = lr ** 2 * d * sigma2 / b
    steps = n_train // b
    out, m = [], m0
    for _ in range(epochs):
        for _ in range(steps):
            m = a * m + c
        out.append(0.5 * (m + sigma2))
    return np.array(out)


def _branches(sigma2: float, *, multipliers=(1, 2, 4, 8, 16, 32, 64), base=4, window=2, epoch=3, m0=1.0):
    branches, epochs = [], {}
    for k in multipliers:
        rid = f"k{k}"
        loss = expected_losses(d=10, sigma2=sigma2, m0=m0, lr=0.05, base=base, k=k, n_train=1024, epochs=window)
        branches.append({"run_id": rid, "parent_run_id": "p", "branch_epoch": epoch, "multiplier": float(k),
                         "batch_size": k * base, "seed": 0})
        epochs[rid] = {"epoch": np.arange(epoch + 1, epoch + 1 + window), "train_loss": loss}
    return branches, epochs


def _closed_form_cbs(sigma2: float, tolerance: float, multipliers=(1, 2, 4, 8, 16, 32, 64), base=4) -> int:
    """The same rule solved directly on the closed-form losses (vectorised, independent of the module)."""
    final = np.array([smoothed(expected_losses(d=10, sigma2=sigma2, m0=1.0, lr=0.05, base=base, k=k, n_train=1024,
                                               epochs=2)) for k in multipliers])
    ok = final <= np.minimum.accumulate(np.concatenate([[np.inf], final[:-1]])) + tolerance
    ok[0] = True
    first_bad = int(np.argmin(ok)) if not ok.all() else len(ok)
    return multipliers[first_bad - 1] * base


@pytest.mark.parametrize("sigma2", [0.0, 0.5, 2.0, 8.0])
def test_cbs_of_noisy_linear_regression_matches_its_closed_form(sigma2):
    branches, epochs = _branches(sigma2)
    (row,) = critical_batch_sizes(branches, epochs, tolerance=0.01)
    assert row["cbs"] == _closed_form_cbs(sigma2, 0.01)
    assert (row["epoch"], row["base_batch_size"], row["window_epochs"]) == (3, 4, 2)


def test_more_gradient_noise_per_unit_signal_allows_a_larger_critical_batch():
    # B_simple = tr(Sigma) / |G|^2 = (d + 1) + d sigma2 / |d|^2 grows with sigma2 at fixed |d|^2: the measured
    # CBS must not fall, and it must rise over the range (McCandlish et al. 2018; Merrill et al. 2025).
    cbs = [critical_batch_sizes(*_branches(s), tolerance=0.01)[0]["cbs"] for s in (0.0, 0.5, 2.0, 8.0, 32.0)]
    assert cbs == sorted(cbs) and cbs[-1] > cbs[0]


def test_seeds_give_an_interval_and_the_json_list_has_the_interface_keys():
    b0, e0 = _branches(0.0)
    b1, e1 = _branches(32.0)
    for b in b1:
        b["seed"], b["run_id"] = 1, b["run_id"] + "s1"
    e1 = {k + "s1": v for k, v in e1.items()}
    (row,) = critical_batch_sizes(b0 + b1, {**e0, **e1})
    assert row["seeds"] == 2 and row["cbs_low"] <= row["cbs"] <= row["cbs_high"] and row["cbs_low"] < row["cbs_high"]
    (item,) = critical_batch_size_json([row])
    assert set(item) >= {"epoch", "cbs", "base_batch_size"} and item["epoch"] == 3
    assert critical_batch_size_json([]) == []


def test_the_warmup_doubles_while_cbs_is_at_least_twice_the_batch():
    from batchlab.analysis.cbs import warmup_schedule

    rows = [{"epoch": 0, "cbs": 12}, {"epoch": 2, "cbs": None}, {"epoch": 5, "cbs": 40}, {"epoch": 9, "cbs": 47},
            {"epoch": 12, "cbs": 300}]
    # 8 -> (12 < 16) stays; epoch 5: 16, 32 (40 < 64); epoch 9: 47 < 64 stays; epoch 12: 64, 128, 256
    assert warmup_schedule(rows, 8) == ([5, 12], [32, 256])
    assert warmup_schedule([{"epoch": 0, "cbs": 64}], 8) == ([1], [64])  # from initialisation: after epoch 1
    assert warmup_schedule([], 8) == ([], [])


def test_the_emitted_schedule_is_a_valid_study_file(tmp_path):
    from batchlab.analysis.cbs import schedule_study
    from batchlab.spec import build_spec, read_toml

    path = tmp_path / "warmup.toml"
    path.write_text(schedule_study({"dataset": "digits", "model": "mlp", "hidden": [64], "epochs": 12}, [1, 5],
                                   [64, 128], base_batch_size=8, lr=0.03, lr_rule="linear"))
    spec = build_spec(read_toml(path))
    assert (spec.batch_sizes, spec.batch_size_milestones, spec.batch_size_schedule) == ((8,), (1, 5), (64, 128))
    assert (spec.lr_scaling, spec.base_batch_size, spec.hidden, spec.epochs) == ("linear", 8, (64,), 12)
    schedule = spec.schedule_for(8, 1437)
    assert [schedule.batch_size_at(e) for e in (1, 2, 6)] == [8, 64, 128]
