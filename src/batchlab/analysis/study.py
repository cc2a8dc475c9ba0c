"""A study's scaling analysis: steps-to-target per batch size, the S(B) fit, the fastest batch size in wall
time, the gradient noise scale beside the measured B_crit, generalization gaps and curvature.

Works on plain arrays (the form `Store.epochs` returns) and run summaries, so it can analyse any store.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from batchlab.analysis.generalization import (
    GeneralizationGap,
    MatchedGap,
    gap_at_matched_train_loss,
    generalization_gap,
    matched_train_loss_target,
)
from batchlab.analysis.runs import RunSummary
from batchlab.analysis.scaling import (
    CriticalBatchFit,
    FastestBatchSize,
    FitWarning,
    StepsToTarget,
    Trial,
    fit_critical_batch,
    measured_time_to_target,
    scaling_regime,
    steps_to_target,
    within_budget,
)
from batchlab.errors import BatchlabError

TARGET_METRICS = ("train_loss", "test_loss", "test_error")
TARGET_SLACK = 1.01
"""The default target is 1% above the worst batch size's best value, so every batch size that trained reaches it."""


@dataclass(frozen=True)
class StudyAnalysis:
    """Everything the explanation and the report quote about scaling, noise scale and generalization."""

    target_metric: str
    target: float
    steps_to_target: dict[int, StepsToTarget]
    fit: CriticalBatchFit | None
    fit_note: str
    """Why there is no fit, or what the fit warned about; empty when it is clean."""
    regimes: dict[int, str]
    time_per_update_s: dict[int, float]
    fastest: FastestBatchSize | None
    """Measured time to target per batch size and the least (`batchlab.analysis.scaling.measured_time_to_target`)."""
    b_simple_initial: float
    """Seed-mean B_simple at initialization (identical for every batch size of a seed)."""
    b_simple_final: dict[int, float]
    """Per batch size, seed-mean B_simple at the last epoch where it was measured."""
    gaps: dict[str, GeneralizationGap]
    matched_target: float
    matched: dict[str, MatchedGap | None]
    end_metrics: dict[str, dict[str, float]]
    budget_steps: int | None = None
    """The study's budget in updates per run: evaluations after it do not count towards steps-to-target."""
    budget_examples: int | None = None
    """The study's budget in examples per run (batch size x updates), likewise."""
    coarse: dict[int, float] = field(default_factory=dict)
    """Batch sizes whose steps-to-target is an upper bound coarser than COARSE_RESOLUTION: steps and resolution
    ((steps - previous evaluation) / steps). Evaluating every K updates (`eval_every_steps`) resolves them."""


COARSE_RESOLUTION = 0.1
"""A steps-to-target whose previous evaluation lies more than this fraction below it is reported as an upper
bound (at epoch-end evaluations only, a batch size reaching the target within a few epochs is)."""


def metric_curve(epochs: Mapping[str, np.ndarray], metric: str) -> np.ndarray:
    if metric == "test_error":
        return 1.0 - np.asarray(epochs["test_acc"], float)
    return np.asarray(epochs[metric], float)


def evaluation_curve(epochs: Mapping[str, np.ndarray], evals: Mapping[str, np.ndarray] | None,
                     metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, metric values, training time) at every evaluation of one run, in step order: the epoch ends and
    the evaluations between them (`evals`, keyed by `step`; their training time is interpolated linearly in steps
    between the epoch ends around them)."""
    steps, values = np.asarray(epochs["updates"], float), metric_curve(epochs, metric)
    wall = np.asarray(epochs["wall_time_s"], float)
    if evals is None or not len(evals.get("step", ())):
        return steps, values, wall
    mid_steps = np.asarray(evals["step"], float)
    mid_wall = np.interp(mid_steps, steps, wall)
    all_steps = np.concatenate([steps, mid_steps])
    order = np.argsort(all_steps, kind="stable")
    return (all_steps[order], np.concatenate([values, metric_curve(evals, metric)])[order],
            np.concatenate([wall, mid_wall])[order])


def analyze(summaries: list[RunSummary], epochs: Mapping[str, Mapping[str, np.ndarray]],
            end_metrics: Mapping[str, Mapping[str, float]], *, compared: list[RunSummary] | None = None,
            target_metric: str = "train_loss", target: float | None = None, budget_steps: int | None = None,
            budget_examples: int | None = None,
            evals: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> StudyAnalysis:
    """Steps-to-target over all learning rates and seeds (Shallue et al. 2018), the S(B) fit (McCandlish et al.
    2018), and the rest. The default target is TARGET_SLACK times the largest, over batch sizes, of the best value
    any of its runs reached. Noise scale, gaps and curvature are read on the `compared` runs (default: all; a
    sweep passes each batch size's best learning rate, so a rate that blew up does not set the matched loss).

    `budget_steps` / `budget_examples` are the study's budget (its spec's fields of those names). Runs train whole
    epochs, so they overshoot it (batch size 1 on 1,437 examples takes 4,311 updates for a budget of 3,000); as in
    batch_science (`apply_step_budget`, `apply_example_budget`), only evaluations at steps <= budget_steps, or with
    B * steps <= budget_examples, count, for steps-to-target and for the default target alike. A batch size with no
    such evaluation below the target is not reached (`StepsToTarget.feasible` False) and is left out of the fit."""
    if target_metric not in TARGET_METRICS:
        raise BatchlabError(f"target_metric: got {target_metric!r}; allowed: {', '.join(TARGET_METRICS)}")
    trials = [Trial(s.batch_size, s.lr, s.seed, *evaluation_curve(epochs[s.run_id], (evals or {}).get(s.run_id),
                                                                  target_metric), s.status == "diverged")
              for s in summaries]
    budget = {"max_steps": budget_steps, "max_examples": budget_examples}
    if target is None:
        best: dict[int, float] = {}
        for t in trials:
            values = t.values[within_budget(t.batch_size, t.steps, **budget)]
            if not t.diverged and np.isfinite(values).any():
                best[t.batch_size] = min(best.get(t.batch_size, np.inf), float(np.nanmin(values)))
        target = TARGET_SLACK * max(best.values()) if best else float("nan")
    reached = steps_to_target(trials, target, **budget)
    fit, note = _fit(reached)
    time_per_update = {}
    for b in sorted({s.batch_size for s in summaries}):
        runs = [s for s in summaries if s.batch_size == b and s.total_updates > 0]
        if runs:
            time_per_update[b] = float(np.mean([s.time_per_update_s for s in runs]))
    fastest = measured_time_to_target(reached) if any(st.feasible for st in reached.values()) else None
    ok = [s for s in (summaries if compared is None else compared) if s.status != "diverged"]
    curves = {s.run_id: epochs[s.run_id] for s in ok}
    matched_target = matched_train_loss_target(curves) if curves else float("nan")
    return StudyAnalysis(
        target_metric, float(target), reached, fit, note,
        {b: scaling_regime(b, fit.b_crit) for b in reached} if fit else {}, time_per_update, fastest,
        _b_simple_initial(ok, epochs), _b_simple_final(ok, epochs),
        {s.run_id: generalization_gap(*(epochs[s.run_id][k] for k in ("train_loss", "test_loss", "train_acc",
                                                                         "test_acc"))) for s in ok},
        matched_target, gap_at_matched_train_loss(curves, matched_target) if curves else {},
        {k: dict(v) for k, v in end_metrics.items()}, budget_steps, budget_examples,
        {b: st.resolution for b, st in reached.items() if st.feasible and st.resolution > COARSE_RESOLUTION})


def _fit(reached: Mapping[int, StepsToTarget]) -> tuple[CriticalBatchFit | None, str]:
    feasible = {b: st.steps for b, st in reached.items() if st.feasible}
    if len(feasible) < 3:
        return None, f"only {len(feasible)} batch size(s) reached the target; the S(B) fit needs at least 3"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FitWarning)
        try:
            fit = fit_critical_batch(list(feasible), [float(s) for s in feasible.values() if s is not None])
        except BatchlabError as e:
            return None, str(e)
    return fit, " ".join(str(w.message) for w in caught if issubclass(w.category, FitWarning))


def _measured(epochs: Mapping[str, np.ndarray]) -> np.ndarray:
    b = np.asarray(epochs.get("b_simple", []), float)
    return np.flatnonzero(np.isfinite(b))


def _b_simple_initial(runs: list[RunSummary], epochs: Mapping[str, Mapping[str, np.ndarray]]) -> float:
    values = [float(epochs[s.run_id]["b_simple"][0]) for s in runs
              if len(_measured(epochs[s.run_id])) and _measured(epochs[s.run_id])[0] == 0]
    return float(np.mean(values)) if values else float("nan")


def _b_simple_final(runs: list[RunSummary], epochs: Mapping[str, Mapping[str, np.ndarray]]) -> dict[int, float]:
    by_b: dict[int, list[float]] = {}
    for s in runs:
        idx = _measured(epochs[s.run_id])
        if len(idx):
            by_b.setdefault(s.batch_size, []).append(float(epochs[s.run_id]["b_simple"][idx[-1]]))
    return {b: float(np.mean(v)) for b, v in sorted(by_b.items())}
