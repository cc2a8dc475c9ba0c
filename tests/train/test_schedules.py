"""Rate and batch-size schedules (issue 14): the arithmetic, the door, the records, and Smith et al.'s
equivalence ("Don't decay the learning rate, increase the batch size", 2018) measured on digits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from batchlab.errors import BatchlabError
from batchlab.runner.driver import run_study
from batchlab.spec import Schedule, StudySpec, build_spec, run_id
from batchlab.store.db import Store
from batchlab.store.tables import read_tables
from batchlab.sweep import build_sweep


def test_step_schedule_is_pytorchs_multisteplr_stepped_once_per_epoch():
    # MultiStepLR(milestones=[2, 4], gamma=0.5), scheduler.step() after each epoch: epochs 0-1 at lr, 2-3 at
    # lr/2, 4 on at lr/4 (0-based), i.e. epochs 1-2, 3-4, 5+ here (1-based).
    s = Schedule(32, 1000, "step", (2, 4), 0.5)
    assert [s.lr_factor(e, 6) for e in range(1, 7)] == [1, 1, 0.5, 0.5, 0.25, 0.25]


def test_cosine_and_linear_decay_over_the_run():
    cosine, linear = Schedule(8, 100, "cosine"), Schedule(8, 100, "linear")
    assert cosine.lr_factor(1, 4) == 1.0 and cosine.lr_factor(3, 4) == pytest.approx(0.5)
    assert cosine.lr_factor(4, 4) == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 4)))
    assert [linear.lr_factor(e, 4) for e in range(1, 5)] == [1.0, 0.75, 0.5, 0.25]


def test_batch_size_schedule_multiplies_rounds_clips_and_counts_the_real_updates():
    s = Schedule(32, 1437, batch_size_milestones=(10, 20), batch_size_gamma=5.0)
    assert [s.batch_size_at(e) for e in (1, 10, 11, 20, 21, 30)] == [32, 32, 160, 160, 800, 800]
    assert s.updates_through(30) == 10 * 45 + 10 * 9 + 10 * 2
    explicit = Schedule(32, 100, batch_size_milestones=(1, 2), batch_size_schedule=(64, 500))
    assert [explicit.batch_size_at(e) for e in (1, 2, 3)] == [32, 64, 100]  # clipped to N
    assert explicit.batch_sizes_from(1, 3) == [32, 64, 100] and explicit.batch_sizes_from(3, 5) == [100]


def test_a_step_budget_counts_updates_at_the_batch_sizes_in_force():
    spec = build_spec({"budget_steps": 100, "batch_size_milestones": "2", "batch_size_gamma": 10})
    # N = 100, B = 10: 10 updates per epoch for 2 epochs, then 1 per epoch: 20 + 80 = 100 after 82 epochs
    assert spec.epochs_for(10, 100) == 82


def test_new_fields_at_their_defaults_keep_every_run_id():
    spec = StudySpec(dataset="wine", batch_sizes=(1, 16, "full"), epochs=3, seeds=2, hidden=(32,), gns_every=3,
                     n_samples=1000, noise=0.2)  # the defaults when the id was pinned (tests/test_golden.py)
    assert run_id(spec, batch_size=16, seed_index=0) == "bs16-seed0-d9bf715d"  # tests/test_golden.py
    assert run_id(build_spec({"lr_schedule": "cosine"}), batch_size=16, seed_index=0) != \
        run_id(build_spec({}), batch_size=16, seed_index=0)


@pytest.mark.parametrize("values,fragment", [
    ({"lr_schedule": "exp"}, "lr_schedule: got 'exp'; allowed: one of constant, step, cosine, linear"),
    ({"lr_schedule": "step"}, "lr_milestones"),
    ({"lr_milestones": "10"}, "unset unless lr_schedule is step"),
    ({"lr_schedule": "step", "lr_milestones": "10,5"}, "increasing epochs"),
    ({"batch_size_milestones": "0"}, "increasing epochs >= 1"),
    ({"batch_size_gamma": "0"}, "batch_size_gamma"),
    ({"batch_size_milestones": "3,6", "batch_size_schedule": "64"}, "one batch size per batch_size_milestones"),
])
def test_bad_schedules_are_one_line_at_the_door(values, fragment):
    with pytest.raises(BatchlabError) as e:
        build_spec(values)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_schedules_are_sweep_axes_and_milestone_lists_are_single_values():
    sweep = build_sweep({"batch_sizes": [32], "batch_size_milestones": [[5], [10]], "batch_size_gamma": [2, 5],
                         "lr_schedule": "step", "lr_milestones": [10, 20], "lr_gamma": [0.1, 0.5]})
    points = sweep.points()
    assert len(points) == 8 and {p.lr_milestones for p in points} == {(10, 20)}
    assert {(p.batch_size_milestones, p.batch_size_gamma) for p in points} == {((5,), 2), ((5,), 5), ((10,), 2),
                                                                               ((10,), 5)}


def _curves(directory):
    store = Store.open(directory)
    try:
        runs = sorted(store.runs(), key=lambda r: r["seed"])
        return runs, [store.epochs(r["run_id"]) for r in runs]
    finally:
        store.close()


def test_the_epochs_table_records_the_batch_size_and_rate_in_force(tmp_path):
    common = {"dataset": "iris", "batch_sizes": "8", "lr": 0.1, "epochs": 4, "gns": "off", "sharpness": False,
              "device": "cpu", "lr_schedule": "step", "lr_milestones": "2", "lr_gamma": 0.5,
              "batch_size_milestones": "1,3", "batch_size_schedule": "16,120"}
    run_study(build_spec(common), tmp_path / "s")
    runs, (epochs,) = _curves(tmp_path / "s")
    assert list(epochs["batch_size"]) == [8, 8, 16, 16, 120]
    assert list(epochs["lr"]) == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05])
    assert list(epochs["updates"]) == [0, 15, 23, 31, 32]  # 120 training examples: 15, 8, 8, 1 updates
    assert runs[0]["total_updates"] == 32
    table = read_tables(tmp_path / "s", ("epochs",))["epochs"]
    assert list(table["batch_size"]) == [8, 8, 16, 16, 120] and table["batch_size"].dtype == np.int64


def test_a_constant_run_records_its_own_batch_size_and_rate(tmp_path):
    run_study(build_spec({"dataset": "iris", "batch_sizes": "8,full", "lr": 0.1, "epochs": 2, "gns": "off",
                          "sharpness": False, "device": "cpu"}), tmp_path / "s")
    runs, epochs = _curves(tmp_path / "s")
    for r, e in zip(runs, epochs):
        assert set(e["batch_size"]) == {r["batch_size"]} and set(e["lr"]) == {0.1}


def smith_equivalence(tmp_path, seeds: int = 2) -> tuple[float, int, int]:
    """Decay the rate by 5 at epoch 10 against multiplying the batch size by 5 at epoch 10 (digits, MLP, B = 32,
    lr 0.1, 30 epochs): (mean |log test-loss ratio| over epochs 11-30 and the seeds, updates of each)."""
    common = {"dataset": "digits", "batch_sizes": "32", "lr": 0.1, "epochs": 30, "seeds": seeds, "gns": "off",
              "sharpness": False, "device": "cpu"}
    run_study(build_spec({**common, "lr_schedule": "step", "lr_milestones": "10", "lr_gamma": 0.2}), tmp_path / "lr")
    run_study(build_spec({**common, "batch_size_milestones": "10", "batch_size_gamma": 5}), tmp_path / "bs")
    runs_lr, decay = _curves(tmp_path / "lr")
    runs_bs, grow = _curves(tmp_path / "bs")
    ratios = [np.abs(np.log(a["test_loss"][11:] / b["test_loss"][11:])) for a, b in zip(decay, grow)]
    return float(np.mean(ratios)), int(runs_lr[0]["total_updates"]), int(runs_bs[0]["total_updates"])


@pytest.mark.slow
def test_increasing_the_batch_size_matches_decaying_the_rate_with_fewer_updates(tmp_path):
    mean_log_ratio, updates_lr, updates_bs = smith_equivalence(tmp_path)
    assert mean_log_ratio < 0.05
    assert (updates_lr, updates_bs) == (30 * 45, 10 * 45 + 20 * 9)  # 1,350 against 630 (47%)
    assert updates_bs <= 0.6 * updates_lr
