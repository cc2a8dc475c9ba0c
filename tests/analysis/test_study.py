"""The study-level analysis on constructed curves with a known answer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from batchlab.analysis.runs import summarize_run
from batchlab.analysis.study import analyze
from batchlab.report.findings import (
    generalization_paragraph,
    noise_ratio_paragraph,
    noise_scale_paragraph,
    scaling_paragraph,
)
from batchlab.results import StudyResults

S_MIN, B_CRIT = 200.0, 50.0


def constructed(batch_size: int, *, diverged: bool = False, lr: float = 0.1):
    """A run evaluated after every update whose train loss first falls below 0.5 at exactly
    S(B) = S_MIN (1 + B_CRIT / B) updates, with a noise scale measured at updates 0 and 100."""
    steps = int(S_MIN * (1 + B_CRIT / batch_size))
    updates = np.arange(0, 2 * steps + 1)
    train = np.maximum(1.0 - 0.5 * updates / steps - 1e-9, 0.2)
    epochs = {"epoch": updates, "updates": updates, "examples_seen": updates * batch_size,
              "wall_time_s": updates * 1e-3 * (1 + batch_size / 100), "train_loss": train, "test_loss": train + 0.1,
              "train_acc": np.full(len(updates), 0.9), "test_acc": np.full(len(updates), 0.8),
              "b_simple": np.full(len(updates), np.nan), "b_simple_low": np.full(len(updates), np.nan),
              "b_simple_high": np.full(len(updates), np.nan), "grad_sq_norm": np.full(len(updates), np.nan),
              "trace_sigma": np.full(len(updates), np.nan)}
    epochs["b_simple"][0], epochs["b_simple"][100] = 10.0, 40.0 + batch_size
    run = {"run_id": f"bs{batch_size}-{lr}", "batch_size": batch_size, "lr": lr, "seed": 0,
           "status": "diverged" if diverged else "completed", "diverged_epoch": None, "updates_per_epoch": 1,
           "epochs_done": len(updates) - 1, "total_updates": len(updates) - 1, "examples_seen": 0,
           "wall_time_s": float(epochs["wall_time_s"][-1]), "compile_time_s": 0.1}
    return summarize_run(run, epochs, train), epochs


def study(batch_sizes=(5, 25, 100, 500, 1000)):  # S(B) is a whole number of steps for these
    pairs = [constructed(b) for b in batch_sizes]
    return [p[0] for p in pairs], {p[0].run_id: p[1] for p in pairs}


def test_steps_to_target_and_the_critical_batch_size_are_recovered():
    summaries, epochs = study()
    a = analyze(summaries, epochs, {}, target=0.5)
    for b, st in a.steps_to_target.items():
        assert st.steps == pytest.approx(S_MIN * (1 + B_CRIT / b))
    assert a.fit is not None
    assert a.fit.b_crit == pytest.approx(B_CRIT, rel=1e-6) and a.fit.s_min == pytest.approx(S_MIN, rel=1e-6)
    assert a.fit.b_crit_low <= B_CRIT * (1 + 1e-6) and a.fit.b_crit_high >= B_CRIT * (1 - 1e-6)
    assert a.regimes[5] == "perfect scaling" and a.regimes[1000] == "maximal data parallelism"
    assert a.b_simple_initial == 10.0 and a.b_simple_final == {b: 40.0 + b for b in (5, 25, 100, 500, 1000)}


def test_the_default_target_is_reached_by_every_batch_size_and_a_diverged_run_is_infeasible():
    summaries, epochs = study((5, 25))
    bad, bad_epochs = constructed(100, diverged=True)
    a = analyze([*summaries, bad], {**epochs, bad.run_id: bad_epochs}, {})
    assert a.steps_to_target[5].feasible and a.steps_to_target[25].feasible
    assert not a.steps_to_target[100].feasible
    assert a.fit is None and "only 2 batch size(s) reached the target" in a.fit_note


def test_findings_quote_the_measured_numbers():
    summaries, epochs = study()
    metrics = {s.run_id: {"top_eigenvalue": 2.5, "hessian_trace": 30.0} for s in summaries}
    a = analyze(summaries, epochs, metrics, target=0.5)
    text = scaling_paragraph(a)
    assert f"B_crit = {a.fit.b_crit:,.1f} [{a.fit.b_crit_low:,.1f}, {a.fit.b_crit_high:,.1f}]" in text
    assert "B = 5: 2,200 steps (11,000 examples)" in text
    noise = noise_scale_paragraph(a)
    assert "10.0 at initialization" in noise and "1,040.0 at B = 1,000" in noise and "proxy" in noise
    gen = generalization_paragraph(a, summaries)
    assert "test - train loss 0.1000" in gen and "top Hessian eigenvalue 2.5" in gen and "Dinh et al. 2017" in gen


def test_the_step_budget_drops_later_evaluations_and_the_batch_sizes_that_need_them():
    # steps to 0.5: B = 5: 2,200, 25: 600, 100: 300, 500: 220, 1,000: 210; a budget of 1,000 updates leaves B = 5
    # without a qualifying evaluation (its runs trained past the budget, as whole epochs do)
    summaries, epochs = study()
    a = analyze(summaries, epochs, {}, target=0.5, budget_steps=1000)
    assert not a.steps_to_target[5].feasible and a.steps_to_target[5].n_trials == 1
    assert {b: st.steps for b, st in a.steps_to_target.items() if st.feasible} == {25: 600, 100: 300, 500: 220,
                                                                                   1000: 210}
    assert a.fit is not None and a.fit.n == 4 and a.fit.b_crit == pytest.approx(B_CRIT, rel=1e-6)
    assert a.budget_steps == 1000 and a.budget_examples is None
    assert analyze(summaries, epochs, {}, target=0.5, budget_steps=2200).steps_to_target[5].steps == 2200
    text = scaling_paragraph(a)
    assert "Not reached within the budget of 1,000 updates per run (later evaluations do not count): B = 5." in text
    assert "first epoch-end evaluation below it within the budget of 1,000 updates per run" in text


def test_the_example_budget_counts_batch_size_times_steps():
    summaries, epochs = study()
    a = analyze(summaries, epochs, {}, target=0.5, budget_examples=20_000)  # B * S(B): 11,000, 15,000, 30,000, ...
    assert [b for b, st in a.steps_to_target.items() if st.feasible] == [5, 25]
    assert a.fit is None and "only 2 batch size(s)" in a.fit_note
    assert "Not reached within the budget of 20,000 examples per run (later evaluations do not count): B = 100, " \
           "500, 1,000." in scaling_paragraph(a)


def test_the_default_target_is_set_within_the_budget():
    # within 1,000 updates B = 5 gets down to 1 - 0.5 * 1000 / 2200 only; the default target is 1% above that, so
    # every batch size reaches it within the budget
    summaries, epochs = study()
    a = analyze(summaries, epochs, {}, budget_steps=1000)
    assert a.target == pytest.approx(1.01 * (1 - 0.5 * 1000 / 2200 - 1e-9))
    assert all(st.feasible and st.steps <= 1000 for st in a.steps_to_target.values())


def test_without_a_budget_a_missed_batch_size_is_said_to_miss_by_the_end_of_training():
    summaries, epochs = study((5, 25))
    bad, bad_epochs = constructed(100, diverged=True)
    text = scaling_paragraph(analyze([*summaries, bad], {**epochs, bad.run_id: bad_epochs}, {}))
    assert "Not reached by the end of training: B = 100 (its run diverged)." in text and "budget" not in text


def test_study_results_apply_the_budget_of_their_spec():
    summaries, epochs = study()
    meta = {"spec": {"budget_steps": 1000, "budget_examples": None}}
    results = StudyResults(Path("."), meta, summaries, epochs, {}, {})
    a = results.analysis(target=0.5)
    assert a.budget_steps == 1000 and not a.steps_to_target[5].feasible and a.steps_to_target[25].steps == 600


def test_the_noise_paragraph_names_the_share_of_zero_step_losses():
    summaries, _ = study((5, 25))
    summaries = [dataclasses.replace(s, step_noise=0.5 if s.batch_size == 5 else 0.2,
                                     step_zero_fraction=0.13 if s.batch_size == 5 else 0.0) for s in summaries]
    text = noise_ratio_paragraph(summaries, n_train=10_000)
    assert "5 vs 25: measured 2.50x" in text and "left out of the metric: 13% at B = 5." in text
    assert "float32" not in noise_ratio_paragraph([dataclasses.replace(s, step_zero_fraction=0.0) for s in summaries],
                                                  n_train=10_000)


def test_evaluations_between_epoch_ends_count_and_epoch_rounded_steps_are_named_upper_bounds():
    """Issue 11: with evaluations at epoch ends only, steps-to-target is rounded up to an epoch and named an upper
    bound; the evaluations between epoch ends (`evals`) give the update at which the target was first met."""
    # 1 epoch = 100 updates; the train loss falls linearly by 0.002 per update from 1.0: below 0.5 from update 250
    updates = np.arange(0, 601, 100)
    loss = lambda s: 1.0 - 0.002 * np.asarray(s, float) - 1e-9
    nan = np.full(len(updates), np.nan)
    epochs = {"epoch": np.arange(len(updates)), "updates": updates, "examples_seen": updates * 10,
              "wall_time_s": updates * 1e-3, "train_loss": loss(updates), "test_loss": loss(updates) + 0.1,
              "train_acc": nan + 1, "test_acc": nan + 1, "b_simple": nan, "b_simple_low": nan,
              "b_simple_high": nan, "grad_sq_norm": nan, "trace_sigma": nan}
    run = {"run_id": "r", "batch_size": 10, "lr": 0.1, "seed": 0, "status": "completed", "diverged_epoch": None,
           "updates_per_epoch": 100, "epochs_done": 6, "total_updates": 600, "examples_seen": 6000,
           "wall_time_s": 0.6, "compile_time_s": 0.1}
    summary = summarize_run(run, epochs, np.zeros(600))
    coarse = analyze([summary], {"r": epochs}, {}, target=0.5)
    assert coarse.steps_to_target[10].steps == 300 and coarse.steps_to_target[10].previous_evaluation == 200
    assert coarse.coarse == {10: pytest.approx(1 / 3)}
    assert "Upper bounds, not measurements: B = 10 (300 steps; the evaluation before was 200)" in \
        scaling_paragraph(coarse)
    mid = np.array([s for s in range(25, 600, 25) if s % 100])
    evals = {"step": mid, "examples_seen": mid * 10, "train_loss": loss(mid), "test_loss": loss(mid) + 0.1,
             "train_acc": np.ones(len(mid)), "test_acc": np.ones(len(mid))}
    fine = analyze([summary], {"r": epochs}, {}, target=0.5, evals={"r": evals})
    assert fine.steps_to_target[10].steps == 250 and fine.steps_to_target[10].previous_evaluation == 225
    assert fine.steps_to_target[10].wall_time_s == pytest.approx(0.25)  # interpolated between epoch ends
    assert fine.coarse == {} and "Upper bounds" not in scaling_paragraph(fine)
