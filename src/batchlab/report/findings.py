"""Paragraphs on scaling, noise scale, generalization and sharpness, each claim carrying its measured number
and the caveats the literature attaches to it."""

from __future__ import annotations

import numpy as np

from batchlab.analysis.curves import noise_ratio_vs_sqrt_prediction
from batchlab.analysis.runs import RunSummary
from batchlab.analysis.scaling import StepsToTarget
from batchlab.analysis.study import StudyAnalysis

METRIC_NAMES = {"train_loss": "train loss", "test_loss": "test loss", "test_error": "test error"}


def scaling_paragraph(a: StudyAnalysis, *, tokens_per_example: int = 1) -> str:
    """Steps-to-target per batch size, the S(B) fit with its interval and regimes, the fastest batch size. Text
    (`tokens_per_example` > 1, the context): batch sizes count sequences and each is also given in tokens."""
    name = METRIC_NAMES[a.target_metric]
    reached = [st for st in a.steps_to_target.values() if st.feasible]
    missed = [b for b, st in a.steps_to_target.items() if not st.feasible]
    if not reached:
        return f"Steps to target: no batch size reached {name} < {a.target:.4g}."
    if tokens_per_example > 1:
        steps = ", ".join(f"B = {st.batch_size:,} sequences: {st.steps:,} steps ({st.examples:,} sequences, "
                          f"{(st.examples or 0) * tokens_per_example:,} tokens)" for st in reached)
    else:
        steps = ", ".join(f"B = {st.batch_size:,}: {st.steps:,} steps ({st.examples:,} examples)" for st in reached)
    budget = _budget(a, tokens_per_example)
    text = (f"Steps to target ({name} < {a.target:.4g}, first epoch-end evaluation below it"
            f"{f' within {budget}' if budget else ''}, best over learning rates and seeds; Shallue et al. 2018): "
            f"{steps}.")
    if missed:
        where = f"within {budget} (later evaluations do not count)" if budget else "by the end of training"
        text += f" Not reached {where}: B = {', '.join(_missed(a.steps_to_target[b]) for b in missed)}."
    if a.fit is not None:
        f = a.fit
        regimes = ", ".join(f"{b:,}: {r}" for b, r in a.regimes.items())
        text += (f" Fitting S(B) = S_min (1 + B_crit / B) (McCandlish et al. 2018) gives S_min = {f.s_min:,.0f} steps "
                 f"[{f.s_min_low:,.0f}, {f.s_min_high:,.0f}] and B_crit = {f.b_crit:,.1f} "
                 f"[{f.b_crit_low:,.1f}, {f.b_crit_high:,.1f}] ({f.confidence:.0%} intervals, {f.n} batch sizes). "
                 f"Regimes: {regimes}.")
    else:
        text += f" No S(B) fit: {a.fit_note}."
    if a.fit is not None and a.fit_note:
        text += f" Note: {a.fit_note}"
    if a.coarse:
        bounds = ", ".join(f"B = {b:,} ({a.steps_to_target[b].steps:,} steps; the evaluation before was "
                           f"{a.steps_to_target[b].previous_evaluation:,})" for b in a.coarse)
        text += (f" Upper bounds, not measurements: {bounds}. The target was crossed somewhere between the two "
                 "evaluations, and the fit above takes the later one; evaluate every K updates "
                 "(--eval-every-steps K) to resolve them.")
    if a.fastest is not None and a.fastest.batch_size is not None:
        times = ", ".join(f"B = {r.batch_size:,}: {r.wall_time_s:.3g} s" for r in a.fastest.table
                          if np.isfinite(r.wall_time_s))
        text += (f" Time to target (the training clock, compile time excluded, at that evaluation): {times}; the "
                 f"fastest batch size to the target on this machine is {a.fastest.batch_size:,}.")
    return text


def _budget(a: StudyAnalysis, tokens_per_example: int = 1) -> str:
    """'the budget of 3,000 updates per run' (or examples; for text sequences and tokens), '' for a study
    trained for a number of epochs."""
    if getattr(a, "budget_steps", None) is not None:
        return f"the budget of {a.budget_steps:,} updates per run"
    examples = getattr(a, "budget_examples", None)
    if examples is not None and tokens_per_example > 1:
        return f"the budget of {examples:,} sequences ({examples * tokens_per_example:,} tokens) per run"
    if examples is not None:
        return f"the budget of {examples:,} examples per run"
    return ""


def _missed(st: StepsToTarget) -> str:
    """A batch size that did not reach the target, and why when every one of its runs diverged."""
    if st.n_trials and st.n_diverged == st.n_trials:
        return f"{st.batch_size:,} (" + (f"all {st.n_trials} runs" if st.n_trials > 1 else "its run") + " diverged)"
    return f"{st.batch_size:,}"


def noise_scale_paragraph(a: StudyAnalysis) -> str:
    """B_simple next to the measured B_crit, never instead of it."""
    if not a.b_simple_final:
        return ""
    finals = ", ".join(f"{v:,.1f} at B = {b:,}" for b, v in a.b_simple_final.items())
    text = (f"Gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018), measured at fixed "
            f"parameters: {a.b_simple_initial:,.1f} at initialization; at the last measurement {finals}. It grows as "
            "the loss falls (the gradient shrinks faster than its per-example spread).")
    if a.fit is not None:
        text += (f" Beside it, the measured critical batch size is B_crit = {a.fit.b_crit:,.1f} "
                 f"[{a.fit.b_crit_low:,.1f}, {a.fit.b_crit_high:,.1f}].")
    text += (" It is a proxy (it assumes a Hessian proportional to the identity; measured critical batch sizes "
             "often disagree with it, Merrill et al. 2025): an order of magnitude, not a prediction.")
    return text


def generalization_paragraph(a: StudyAnalysis, runs: list[RunSummary], *, task: str = "classification") -> str:
    """Gaps at the end and at matched train loss (the metric gap is accuracy's or R²'s); curvature with Dinh et
    al.'s caveat."""
    parts = []
    by_b: dict[int, list[str]] = {}
    for s in runs:
        by_b.setdefault(s.batch_size, []).append(s.run_id)
    ends = []
    for b, ids in sorted(by_b.items()):
        gaps = [a.gaps[i] for i in ids if i in a.gaps]
        if gaps:
            acc_gap = float(np.mean([g.acc_gap for g in gaps]))
            metric_gap = f"R² gap {acc_gap:.4f}" if task == "regression" else f"accuracy gap {acc_gap:.1%}"
            ends.append(f"B = {b:,}: test - train loss {np.mean([g.loss_gap for g in gaps]):.4f}, {metric_gap}")
    if ends:
        parts.append("Generalization gap at the end: " + "; ".join(ends) + ".")
    matched = []
    for b, ids in sorted(by_b.items()):
        gaps_at = [g for g in (a.matched.get(i) for i in ids) if g is not None]
        if gaps_at:
            matched.append(f"B = {b:,}: test loss {np.mean([x.test_loss for x in gaps_at]):.4f} (epoch "
                           f"{np.mean([x.epoch for x in gaps_at]):.1f})")
    if matched:
        parts.append(f"At matched train loss ({a.matched_target:.4f}, the highest final train loss of any run): "
                     + "; ".join(matched) + ". Comparing there removes the effect of one run simply having trained "
                     "longer.")
    curv = []
    for b, ids in sorted(by_b.items()):
        m = [a.end_metrics[i] for i in ids if a.end_metrics.get(i)]
        if m:
            curv.append(f"B = {b:,}: top Hessian eigenvalue {np.mean([x['top_eigenvalue'] for x in m]):.4g}, trace "
                        f"{np.mean([x['hessian_trace'] for x in m]):.4g}"
                        + (f", epsilon-sharpness {np.mean([x['eps_sharpness'] for x in m]):.3g}"
                           if all('eps_sharpness' in x for x in m) else ""))
    if curv:
        parts.append("Sharpness at the end of training: " + "; ".join(curv) + ". Sharpness depends on the parametrization "
                     "(Dinh et al. 2017) and these runs ended at different losses: a correlate of the batch size, "
                     "not a cause.")
    return " ".join(parts)


def noise_ratio_paragraph(runs: list[RunSummary], *, n_train: int) -> str:
    """Step-to-step noise of the smallest batch against each larger one (below N), beside the sampling-noise
    prediction sqrt((N - B)/(B (N - 1))) for the standard deviation of a minibatch mean (without replacement)."""
    by_b: dict[int, list[float]] = {}
    for s in runs:
        if s.status != "diverged" and np.isfinite(s.step_noise):
            by_b.setdefault(s.batch_size, []).append(s.step_noise)
    sizes = sorted(b for b in by_b if b < n_train)
    if len(sizes) < 2:
        return ""
    small = sizes[0]
    pairs = []
    for b in sizes[1:]:
        r = noise_ratio_vs_sqrt_prediction(float(np.mean(by_b[small])), small, float(np.mean(by_b[b])), b,
                                           n_train=n_train)
        pairs.append(f"{small:,} vs {b:,}: measured {r.measured:.2f}x, predicted {r.predicted:.2f}x")
    text = ("Step noise against the sampling prediction (ratio of minibatch-loss noise, smaller batch over larger; "
            "predicted from the spread of a minibatch mean, sqrt((N - B) / (B (N - 1)))): " + "; ".join(pairs)
            + ". The metric is taken on log-loss and over the whole run, so it carries the spread of per-example losses "
            "and the course of training too; it need not follow the prediction exactly.")
    zeros: dict[int, list[float]] = {}
    for s in runs:
        if s.status != "diverged" and s.batch_size in by_b:
            zeros.setdefault(s.batch_size, []).append(getattr(s, "step_zero_fraction", 0.0))
    shown = [f"{np.mean(v):.0%} at B = {b:,}" for b, v in sorted(zeros.items()) if np.mean(v) >= 0.01]
    if shown:
        text += (" Step losses that are 0 in float32 (below ~1.2e-7, where the log is unknown) are counted and left "
                 "out of the metric: " + ", ".join(shown) + ".")
    return text
