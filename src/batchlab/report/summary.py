"""`batchlab show DIR --json`: a study as one JSON document (the keys of ../shared/INTERFACES.md), built from
:class:`batchlab.study_data.StudyData` by a pure function, so the API and tests get the same object as the CLI.

Every float is a plain JSON number or null (NaN and infinities become null). Times are training time without
compilation; `train_time_s` is the run's group clock, shared by the group's replicas (`group_replicas` of them;
`train_time_per_replica_s` is the group's time divided by them). Time to target is one number everywhere: the
training clock of the fastest trial at the first evaluation at or below the target
(`batchlab.analysis.scaling.StepsToTarget.wall_time_s`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from batchlab.analysis.cbs import critical_batch_size_json, critical_batch_sizes
from batchlab.analysis.curves import epoch_curve_noise
from batchlab.analysis.optimal_lr import optimal_lr_dict
from batchlab.analysis.rule_check import rule_check_dict
from batchlab.analysis.runs import RunSummary
from batchlab.analysis.sharpness import edge_of_stability_dict
from batchlab.study_data import StudyData

JSON_RUN_KEYS = ("run_id", "batch_size", "lr", "seed", "status", "updates", "examples_seen", "train_time_s",
                 "final_train_loss", "final_test_loss", "final_train_acc", "final_test_acc", "noise_step",
                 "noise_train", "noise_test", "hessian_top_eigenvalue", "hessian_trace", "parent_run_id",
                 "branch_epoch")
"""The run keys INTERFACES.md names (more follow them in each record)."""


def number(x: Any) -> float | int | None:
    """A JSON-safe number: None for None, NaN and infinities; ints stay ints."""
    if x is None:
        return None
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, int | np.integer):
        return int(x)
    x = float(x)
    return x if math.isfinite(x) else None


def run_record(s: RunSummary, end_metrics: dict[str, float], epochs: dict[str, np.ndarray]) -> dict[str, Any]:
    """One run as INTERFACES.md's record, plus the diverged epoch, the group's replica count and per-epoch
    noise as the puzzle reads it (`batchlab.analysis.curves.epoch_curve_noise`)."""
    train = epoch_curve_noise(epochs["train_loss"])
    test = epoch_curve_noise(epochs["test_loss"])
    return {
        "run_id": s.run_id, "batch_size": s.batch_size, "lr": number(s.lr), "seed": s.seed, "status": s.status,
        "updates": s.total_updates, "examples_seen": s.examples_seen, "train_time_s": number(s.wall_time_s),
        "final_train_loss": number(s.final_train_loss), "final_test_loss": number(s.final_test_loss),
        "final_train_acc": number(s.final_train_acc), "final_test_acc": number(s.final_test_acc),
        "noise_step": number(s.step_noise), "noise_train": number(s.epoch_noise),
        "noise_test": number(s.test_epoch_noise),
        "hessian_top_eigenvalue": number(end_metrics.get("top_eigenvalue")),
        "hessian_trace": number(end_metrics.get("hessian_trace")),
        "parent_run_id": None, "branch_epoch": None,
        "diverged_epoch": s.diverged_epoch, "blown_up": s.blown_up, "updates_per_epoch": s.updates_per_epoch,
        "epochs_done": s.epochs_done, "initial_train_loss": number(s.initial_train_loss),
        "compile_time_s": number(s.compile_time_s), "group_replicas": s.group_replicas,
        "train_time_per_replica_s": number(s.time_per_replica_s),
        "time_per_update_s": number(s.time_per_update_s),
        "epoch_rising_train": number(train.rising), "epoch_rising_test": number(test.rising),
        "epoch_residual_train": number(train.residual), "epoch_residual_test": number(test.residual),
        "step_zero_fraction": number(s.step_zero_fraction),
    }


def branch_record(row: dict[str, Any], epochs: dict[str, np.ndarray]) -> dict[str, Any]:
    """A branch of `batchlab branch` (a runs-table row and its epochs) as a run record: the same keys, final
    metrics from its last recorded epoch, noise and curvature null (not measured on branches)."""
    def last(name: str) -> float | None:
        values = epochs.get(name)
        return number(values[-1]) if values is not None and len(values) else None

    record: dict[str, Any] = {key: None for key in JSON_RUN_KEYS}
    record.update({
        "run_id": row["run_id"], "batch_size": row["batch_size"], "lr": number(row["lr"]), "seed": row["seed"],
        "status": row["status"], "updates": row.get("total_updates"), "examples_seen": row.get("examples_seen"),
        "train_time_s": number(row.get("wall_time_s")), "final_train_loss": last("train_loss"),
        "final_test_loss": last("test_loss"), "final_train_acc": last("train_acc"), "final_test_acc": last("test_acc"),
        "parent_run_id": row.get("parent_run_id"), "branch_epoch": row.get("branch_epoch"),
        "multiplier": number(row.get("multiplier")),
    })
    return record


def _json_safe(value: Any) -> Any:
    """`value` with every float JSON-safe (NaN and infinities as None), through lists, tuples and dicts."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float | np.floating | np.integer) and not isinstance(value, bool):
        return number(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def noisiest_run(summaries: list[RunSummary]) -> str | None:
    """The run whose per-epoch train and test losses jitter most (sum of their residual std of log-loss; the
    step noise breaks ties, as between smooth curves), among runs that did not diverge."""
    def key(s: RunSummary) -> tuple[float, float]:
        epoch = np.nansum([s.epoch_noise, s.test_epoch_noise])
        return float(epoch), float(s.step_noise) if np.isfinite(s.step_noise) else -math.inf

    ok = [s for s in summaries if s.status != "diverged"]
    return max(ok, key=key).run_id if ok else None


def longest_run(summaries: list[RunSummary]) -> str | None:
    """The run with the most training time: its group's time per replica (a group's replicas share one clock),
    ties to the smaller batch size."""
    timed = [s for s in summaries if np.isfinite(s.time_per_replica_s)]
    return max(timed, key=lambda s: (s.time_per_replica_s, -s.batch_size)).run_id if timed else None


def study_document(data: StudyData, *, target_metric: str = "train_loss", target: float | None = None) -> dict:
    """The whole `show --json` document (see the module docstring)."""
    a = data.analysis(target_metric=target_metric, target=target)
    ds = data.meta["dataset"]
    per_b = [{"batch_size": st.batch_size, "steps": st.steps, "examples": st.examples, "lr": number(st.lr),
              "seed": st.seed, "time_s": number(st.wall_time_s), "n_trials": st.n_trials,
              "n_diverged": st.n_diverged, "previous_evaluation": st.previous_evaluation}
             for _, st in sorted(a.steps_to_target.items())]
    fit = None if a.fit is None else {k: number(getattr(a.fit, k)) for k in
                                      ("s_min", "s_min_low", "s_min_high", "b_crit", "b_crit_low", "b_crit_high")}
    counts: dict[str, int] = {}
    for s in data.summaries:
        counts[s.status] = counts.get(s.status, 0) + 1
    return {
        "study": {"dir": str(data.directory), "dataset": ds.get("name"), "n_train": data.n_train,
                  "n_test": ds.get("n_test"), "task": data.task, "model": data.meta.get("model")},
        "runs": [run_record(s, data.end_metrics.get(s.run_id, {}), data.epochs[s.run_id]) for s in data.summaries]
        + [branch_record(r, data.epochs.get(r["run_id"], {})) for r in data.branches],
        "steps_to_target": {"metric": a.target_metric, "target": number(a.target), "per_batch_size": per_b},
        "fit": fit,
        "findings": {"noisiest_run": noisiest_run(data.summaries), "longest_run": longest_run(data.summaries),
                     "fastest_to_target_batch_size": None if a.fastest is None else a.fastest.batch_size,
                     "status_counts": counts,
                     "diverged_runs": [s.run_id for s in data.summaries if s.status == "diverged"],
                     "best_lr": {str(s.batch_size): number(s.lr) for s in data.best_runs()}},
        "optimal_lr": _json_safe(optimal_lr_dict(data.optimal_lr())),
        "edge_of_stability": _json_safe(edge_of_stability_dict(data.edges_of_stability())),
        "rule_check": _json_safe(rule_check_dict(data.rule_check())),
        "critical_batch_size": [{k: number(v) if isinstance(v, float) else v for k, v in row.items()} for row in
                                critical_batch_size_json(critical_batch_sizes(data.branches, data.epochs))],
    }
