"""The explanation's rules, each on a constructed study (no training): StudyData built by hand from curves, the
way `batchlab.study_data.StudyData.load` builds it from a store (issue 10, "An explanation that is right in every
case")."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from batchlab.analysis.runs import summarize_run
from batchlab.report.answer import curve_kind, epoch_curve_noise
from batchlab.report.explain import explanation
from batchlab.report.summary import study_document
from batchlab.study_data import StudyData

EPOCHS = 100
RNG = np.random.default_rng(0)
NOISY = 0.3 + 0.5 * np.exp(-np.arange(EPOCHS + 1) / 3) * 1.0 + np.r_[0, 0.03 * RNG.standard_normal(EPOCHS)]
"""A curve that falls and then jitters around 0.3: it rises on about half of its epochs."""
SMOOTH = 0.3 + 0.6 * np.exp(-np.arange(EPOCHS + 1) / 40)
"""Gradient descent's steady decay: it falls at every epoch (and is still falling at the end)."""


def run(b: int, train: np.ndarray, test: np.ndarray | None = None, *, time_s: float, n_train: int = 100,
        lr: float = 0.1, seed: int = 0, status: str = "completed", diverged_epoch: int | None = None,
        replicas: int = 1, trace_sigma: np.ndarray | None = None, acc: float = 0.9):
    """(row, epochs) of one run as the store gives them: per-epoch arrays, epoch 0 first."""
    train = np.asarray(train, float)
    test = train + 0.05 if test is None else np.asarray(test, float)
    n = len(train) - 1
    upe = math.ceil(n_train / b)
    epochs = {"epoch": np.arange(n + 1), "updates": np.arange(n + 1) * upe, "examples_seen": np.arange(n + 1) * n_train,
              "wall_time_s": np.linspace(0, time_s, n + 1), "train_loss": train, "test_loss": test,
              "train_acc": np.full(n + 1, acc), "test_acc": np.full(n + 1, acc - 0.05),
              "trace_sigma": np.full(n + 1, np.nan) if trace_sigma is None else np.asarray(trace_sigma, float)}
    for k in ("b_simple", "b_simple_low", "b_simple_high", "grad_sq_norm"):
        epochs[k] = np.full(n + 1, np.nan)
    row = {"run_id": f"bs{b}-lr{lr:g}-seed{seed}", "batch_size": b, "lr": lr, "seed": seed, "status": status,
           "diverged_epoch": diverged_epoch, "updates_per_epoch": upe, "epochs_done": n, "total_updates": n * upe,
           "examples_seen": n * n_train, "wall_time_s": time_s, "compile_time_s": 0.5, "group_replicas": replicas}
    return row, epochs


def study(*runs, n_train: int = 100) -> StudyData:
    summaries = [summarize_run(row, epochs, np.ones(row["total_updates"], np.float32)) for row, epochs in runs]
    meta = {"spec": {}, "dataset": {"name": "made", "n_train": n_train, "n_test": 25, "task": "classification"},
            "model": "made", "device": "cpu"}
    return StudyData(Path("made"), meta, summaries, {row["run_id"]: e for row, e in runs},
                     {row["run_id"]: (np.zeros(0), np.zeros(0)) for row, _ in runs}, {})


def words(data: StudyData) -> str:
    return re.sub(r"\s+", " ", explanation(data))


def test_the_puzzle_batch_size_1_noisy_and_slower():
    text = words(study(run(1, NOISY, NOISY + 0.02, time_s=2.0), run(100, SMOOTH, time_s=0.5)))
    first = text.split("Why:")[0]
    assert "Batch size 1's curves are the noisy ones. After epoch 10, batch size 1's train loss went up on 52% of " \
           "the epochs, jittering by 8.5% around its trend, and its test loss went up on 52% of the epochs, jittering " \
           "by 7.9% around its trend; the full batch's train and test losses fell at every epoch." in first
    assert "Batch size 1 took longer: 2 s of training against 0.5 s" in first
    # time = updates x cost: 100x the updates (10,000 against 100), each 25x cheaper (200 µs against 5 ms)
    assert "It made 100x as many updates (10,000 against 100); each was cheaper (200.0 µs against 5.00 ms), but " \
           "only 25.0x cheaper, so the number of updates won." in first
    assert "It stays because batch size 1 did not fit its training set (train loss 0.258 at the end, 32% of its " \
           "initial 0.8): its examples keep pulling in different directions" in text


def test_a_full_batch_that_took_longer_is_named_and_explained_by_its_cost_per_update():
    """Fixed step budgets: batch size 1 trains 2 epochs (200 updates), the full batch 100 (100 updates)."""
    text = words(study(run(1, NOISY[:3], time_s=0.004), run(100, SMOOTH, time_s=0.5)))
    assert "The full batch took longer: 0.5 s of training against 0.004 s" in text
    assert "It made fewer updates (100 against 200), but each cost 250x as much (5.00 ms against 20.0 µs: an " \
           "update at batch size 100 processes 100 examples), so the cost per update won." in text
    assert "cheaper" not in text.split("Why:")[0]  # nothing says the longer run's updates were cheap


def test_equal_update_counts():
    text = words(study(run(1, NOISY[:101], time_s=0.02, n_train=100), run(2, SMOOTH, time_s=0.5, n_train=100)))
    assert "Batch size 2 took longer" in text and "Both made" not in text  # 10,000 against 5,000 updates
    same = words(study(run(50, NOISY[:51], time_s=0.2, n_train=100), run(100, SMOOTH, time_s=0.4, n_train=100)))
    assert "The full batch took longer" in same
    assert "Both made 100 updates; each of its updates cost 2.0x as much (4.00 ms against 2.00 ms)." in same


def test_a_run_that_blew_up_is_named_with_its_numbers_and_left_out():
    blown = np.r_[2.3, np.linspace(1.0, 0.5, 29), 1.35e6]
    text = words(study(run(1, blown, time_s=0.3, status="diverged", diverged_epoch=30), run(100, SMOOTH, time_s=0.5)))
    assert "One run blew up: batch size 1 at lr 0.1 (seed 0, epoch 30)." in text
    assert "1.35e6 from 2.3 at batch size 1, lr 0.1, epoch 30" in text and "diverged from that epoch" in text
    assert "Only the full batch (B = N = 100) trained without diverging (batch size 1 diverged), so there is no " \
           "other batch size to compare it with." in text
    assert "1350000" not in text and "1,350,000" not in text


def test_a_non_finite_divergence():
    nan = np.r_[2.3, 1.0, 0.8, np.nan]
    text = words(study(run(1, nan, time_s=0.1, status="diverged", diverged_epoch=3), run(10, NOISY, time_s=0.4),
                       run(100, SMOOTH, time_s=0.5)))
    assert "One run diverged: batch size 1 at lr 0.1 (seed 0, epoch 3): the loss became non-finite" in text
    assert "blew up" not in text
    assert "Batch size 10's curves are the noisy ones" in text  # the comparison goes on without it


def test_every_run_diverged():
    nan = np.r_[2.3, np.nan]
    text = words(study(run(1, nan, time_s=0.1, status="diverged", diverged_epoch=1),
                       run(100, nan, time_s=0.1, status="diverged", diverged_epoch=1)))
    assert "2 runs diverged" in text and "No run trained without diverging, so there is nothing to compare." in text


def test_interrupted_study_says_none_trained_to_the_end():
    text = words(study(run(1, NOISY[:31], time_s=0.6, status="interrupted"),
                       run(100, SMOOTH[:31], time_s=0.2, status="interrupted")))
    assert "None of the 2 runs trained to the end (2 interrupted; they reached epoch 30)" in text
    assert "batchlab resume DIR" in text and "Only one batch size trained to the end" not in text
    partly = words(study(run(1, NOISY, time_s=0.6), run(100, SMOOTH[:31], time_s=0.2, status="interrupted")))
    assert "One run did not train to the end (1 interrupted; epoch 30)" in partly


def test_converged_and_not():
    still = words(study(run(1, NOISY, time_s=2.0), run(100, SMOOTH, time_s=0.5)))
    assert "It had not converged: it was still falling, by 3.9% over its last 10 epochs" in still
    flat = 0.3 + 0.6 * np.exp(-np.arange(EPOCHS + 1) / 5)
    levelled = words(study(run(1, NOISY - 0.1, time_s=2.0), run(100, flat, time_s=0.5)))
    assert "It had levelled off: it changed by less than 0.1% over its last 10 epochs, at a loss 1.9x batch size " \
        "1's final 0.158: a plateau, not the bottom." \
        in levelled and "not converged" not in levelled


def test_adam_unstable_is_not_called_overfitting():
    """Test loss lowest at epoch 0 and rising, train loss rising with it (Adam at too high a rate)."""
    rising = np.r_[2.3, np.linspace(0.5, 60.0, EPOCHS)]
    text = words(study(run(1, rising, rising + 7, time_s=2.0), run(100, SMOOTH, time_s=0.5)))
    assert "Batch size 1's test loss was lowest at epoch 1 (7.5) and ended at 67" in text
    assert "its train loss rose too (from 0.5 at its lowest to 60): the training is unstable at this learning rate, " \
           "not overfitting." in text
    assert "overfitting," not in text


def test_overfitting_when_the_train_loss_keeps_falling():
    train = 0.5 * np.exp(-np.arange(EPOCHS + 1) / 10)
    test = 0.5 - 0.3 * np.minimum(np.arange(EPOCHS + 1), 20) / 20 + 0.01 * np.maximum(np.arange(EPOCHS + 1) - 20, 0)
    text = words(study(run(1, train, test, time_s=2.0), run(100, SMOOTH, time_s=0.5)))
    assert "Batch size 1's test loss was lowest at epoch 20 (0.2) and ended at 1" in text
    assert "while its train loss kept falling (to 2.27e-5): overfitting" in text


def test_one_batch_size():
    text = words(study(run(1, NOISY, time_s=2.0), run(1, NOISY + 0.01, time_s=2.0, seed=1)))
    assert "Only batch size 1 trained, so there is no other batch size to compare it with. After epoch 10, its " \
           "train loss went up on 52% of the epochs" in text
    assert "took 2 s for 10,000 updates (200.0 µs each)" in text


def test_many_batch_sizes_and_shared_clocks():
    text = words(study(run(1, NOISY, time_s=2.0, replicas=2), run(1, NOISY, time_s=2.0, seed=1, replicas=2),
                       run(10, NOISY, time_s=0.8, replicas=2), run(10, NOISY, time_s=0.8, seed=1, replicas=2),
                       run(100, SMOOTH, time_s=0.6, replicas=2), run(100, SMOOTH, time_s=0.6, seed=1, replicas=2)))
    assert "(means over 2 seeds)" in text
    assert "Batch size 1 took longer: 1 s of training per run against 0.3 s" in text  # group time / 2 replicas
    assert "All batch sizes (time per run: a group's runs train together and share its clock): B = 1: 1 s for " \
           "10,000 updates (100.0 µs each), per-epoch train loss noisy; B = 10: 0.4 s for 1,000 updates" in text
    assert "B = 100: 0.3 s for 100 updates (3.00 ms each), per-epoch train loss smooth." in text


def test_a_fitted_training_set_explains_a_smooth_batch_size_1_curve():
    """Digits: batch size 1 interpolates its training set; per-example gradients vanish and SGD's noise fades."""
    fitted = 2.3 * np.exp(-np.arange(EPOCHS + 1) / 8)
    sigma = np.full(EPOCHS + 1, np.nan)
    sigma[::10] = 40.0 * np.exp(-np.arange(0, EPOCHS + 1, 10) / 10)
    text = words(study(run(1, fitted, fitted + 0.1, time_s=2.0, trace_sigma=sigma), run(100, SMOOTH, time_s=0.5)))
    assert "Neither run's per-epoch curves are noisy here. After epoch 10, batch size 1's train and test losses fell " \
           "at every epoch; the full batch's train and test losses fell at every epoch." in text
    assert "tr(Sigma), the measured variance of per-example gradients, went from 40 at the start to 0.001816 at " \
           "epoch 100, so the random part of an update at batch size 1 was 0.004261 at the end (lr 0.1)" in text
    assert "It faded because batch size 1 fitted the training set (train loss 8.57e-6, from 2.3)" in text


def test_a_steadily_rising_test_loss_is_smooth_not_noisy():
    """Digits at batch size 1: the train loss falls at every epoch and the test loss rises at 96% of them, each
    within 0.03% of its trend (this linear one: exactly on it): smooth curves, one of them rising (overfitting), not noise."""
    train = 2.3 * np.exp(-np.arange(EPOCHS + 1) / 8)
    test = 0.1 + 0.0007 * np.arange(EPOCHS + 1)
    text = words(study(run(1, train, test, time_s=2.0), run(100, SMOOTH, time_s=0.5)))
    assert "Neither run's per-epoch curves are noisy here. After epoch 10, batch size 1's train loss fell at every " \
           "epoch, and its test loss rose steadily (up on 100% of the epochs, within 0.00% of its trend)" in text
    assert curve_kind(epoch_curve_noise(test)) == "smooth"


def test_numbers_are_compact():
    from batchlab.report.answer import _g

    assert [_g(x) for x in (1.35e6, 1175007600291453975134208.0, 0.000999, 0.00099996, 2.1e-5, 0.2005, 626.63, 1e5)] \
        == ["1.35e6", "1.18e24", "9.99e-4", "1e-3", "2.1e-5", "0.2005", "626.6", "1e5"]


def test_curve_kind_thresholds():
    assert curve_kind(epoch_curve_noise(NOISY)) == "noisy"
    assert curve_kind(epoch_curve_noise(SMOOTH)) == "smooth"
    assert curve_kind(epoch_curve_noise(np.ones(5))) == "unmeasured"


def test_the_json_document_agrees_with_the_words():
    """One definition of time to target and of the longest run: the document's numbers are the text's."""
    data = study(run(1, NOISY, time_s=2.0), run(100, SMOOTH, time_s=0.5))
    doc = study_document(data)
    text = words(data)
    assert doc["findings"]["longest_run"] == "bs1-lr0.1-seed0" and doc["findings"]["noisiest_run"] == "bs1-lr0.1-seed0"
    for row in doc["steps_to_target"]["per_batch_size"]:
        assert f"B = {row['batch_size']:,}: {row['time_s']:.3g} s" in text
    assert doc["critical_batch_size"] == [] and doc["fit"] is None
    assert [r["train_time_s"] for r in doc["runs"]] == [2.0, 0.5]
    assert {"parent_run_id", "branch_epoch", "hessian_trace"} <= set(doc["runs"][0])
    with pytest.raises(ValueError):  # NaN would be refused: the document holds none
        import json

        json.dumps({"x": float("nan")}, allow_nan=False)
    import json

    json.dumps(doc, allow_nan=False)


def test_adam_spikes_above_its_start_while_ending_at_zero_are_instability():
    """Digits with Adam at lr 0.03, batch size 1 (measured): train loss 2.37 -> spikes to 20.3 -> 0 at the end;
    test loss 2.37 at epoch 0, 67.7 at the end. Not overfitting, and SGD's noise formula is not quoted."""
    train = np.r_[2.375, 2.87, 7.2, 4.3, 20.32, 2.8, np.geomspace(1.0, 1e-9, EPOCHS - 5)]
    test = np.r_[2.372, np.linspace(10.3, 67.7, EPOCHS)]
    data = study(run(1, train, test, time_s=7.5), run(100, SMOOTH, time_s=1.6))
    data.meta["spec"]["optimizer"] = "adam"
    text = words(data)
    assert "Batch size 1's test loss was lowest at epoch 0 (2.372) and ended at 67.7, and its train loss rose above " \
           "its starting value (2.375) to 20.32 at epoch 4: the training is unstable at this learning rate, not " \
           "overfitting." in text
    assert "With Adam the size of a step does not shrink with the gradient" in text and "tr(Sigma) / B" not in text
    assert "overfitting," not in text
