"""A study as three tables, runs, epochs and steps, as plain columns read from the store.

Every tabular view of a study is built here, so they all agree: the CSV and Parquet exports, and the pandas and
polars DataFrames of :class:`batchlab.results.StudyResults`.

- runs: one row per run (``RUN_FIELDS``, the branch columns ``parent_run_id``, ``branch_epoch``, ``multiplier``
  (missing for runs that are not branches of ``batchlab branch``), then ``CURVATURE_FIELDS``, then
  ``SUMMARY_FIELDS``: the run keys of ``batchlab show --json``, from the same per-run summary); ``versions`` and
  ``config`` are JSON strings (keys sorted); ``wall_time_s`` (= ``train_time_s``) is training time without
  compilation, the clock of the run's group, shared by its ``group_replicas`` replicas
  (``train_time_per_replica_s`` is its share); the curvature at the end of training
  (``hessian_top_eigenvalue``, ``hessian_trace``, ``hessian_trace_stderr``, ``hessian_converged`` (1 or 0: did the
  Lanczos estimate meet its convergence test), ``hessian_iterations``, ``hessian_trace_samples`` (the Hutchinson
  vectors its convergence test used)) is missing where it was not measured.
- epochs: one row per run and epoch (``run_id`` + ``EPOCH_FIELDS``), epoch 0 being the evaluation before
  training; the noise-scale columns (``b_simple``, ...) are missing where they were not measured; ``batch_size``
  and ``lr`` are those in force that epoch (they change under schedules). Text studies (and their evals) add
  ``tokens_seen`` = ``examples_seen`` x the context after ``examples_seen``.
- steps: one row per optimizer update (``run_id``, ``step``, ``epoch``, ``batch_loss``): ``step`` counts
  updates from 1 within a run, ``batch_loss`` is that update's minibatch loss, measured before the update.
- critical_batch_size: CBS(t) per branch point of ``batchlab branch`` (empty without branches; the file exports
  then leave it out).
- evals: the evaluations between epoch ends (``run_id`` + ``EVAL_FIELDS``: ``step``, ``examples_seen``, train
  and test loss and metric), when the study asked for them (``eval_every_steps``); empty otherwise, and the
  file exports then leave it out.

A missing value is NaN in a float column and None in ``diverged_epoch``. The pandas and polars converters import
their library only when called.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from batchlab._optional import import_extra
from batchlab.analysis.runs import group_sizes, summarize_run
from batchlab.errors import invalid
from batchlab.spec import StudySpec
from batchlab.store.db import EPOCH_FIELDS, EVAL_FIELDS, SHARPNESS_FIELDS, Store

RUN_FIELDS = ("run_id", "batch_size", "lr", "seed", "init_seed", "order_seed", "status", "diverged_epoch",
              "updates_per_epoch", "epochs_planned", "epochs_done", "total_updates", "examples_seen", "wall_time_s",
              "compile_time_s", "n_train", "device", "versions", "config")
BRANCH_FIELDS = ("parent_run_id", "branch_epoch", "multiplier")
"""Runs columns of branches (`batchlab branch`), after RUN_FIELDS; missing for runs that are not branches."""
TABLE_NAMES = ("runs", "epochs", "steps", "evals", "critical_batch_size")
OPTIONAL_TABLES = ("evals", "critical_batch_size")
"""Tables the file exports leave out when they are empty (no evaluations between epoch ends; no branches)."""
DATAFRAME_LIBRARIES = {"pandas": "pandas", "polars": "polars"}
"""DataFrame library -> the batchlab extra that installs it."""

CURVATURE_FIELDS = {"hessian_top_eigenvalue": "top_eigenvalue", "hessian_trace": "hessian_trace",
                    "hessian_trace_stderr": "hessian_trace_stderr", "hessian_converged": "top_eigenvalue_converged",
                    "hessian_iterations": "top_eigenvalue_iterations", "hessian_trace_samples": "hessian_trace_samples"}
"""Runs-table column -> the end-of-training measurement (`Store.run_metrics` name) it holds."""

SUMMARY_FIELDS = {"updates": "total_updates", "train_time_s": "wall_time_s", "final_train_loss": "final_train_loss",
                  "final_test_loss": "final_test_loss", "final_train_acc": "final_train_acc",
                  "final_test_acc": "final_test_acc", "noise_step": "step_noise", "noise_train": "epoch_noise",
                  "noise_test": "test_epoch_noise", "group_replicas": "group_replicas",
                  "train_time_per_replica_s": "time_per_replica_s"}
"""Runs-table column -> the `batchlab.analysis.runs.RunSummary` attribute it holds (the names of show --json)."""

NULLABLE_INTEGERS = ("diverged_epoch", "branch_epoch")
"""Integer columns that may be missing: lists of int or None (pandas Int64, Arrow int64 with nulls)."""
_RUN_FLOATS = ("lr", "wall_time_s", "compile_time_s")
_RUN_STRINGS = ("run_id", "status", "device", "versions", "config")
_INTEGER_FIELDS = ("epoch", "updates", "examples_seen", "batch_size")

ADAM_COLUMNS = ("beta1", "beta2", "adam_eps")
"""Runs-table columns: Adam's coefficients in force at the run's batch size (NaN for other optimizers)."""


def _adam_in_force(config: dict[str, Any], batch_size: int) -> tuple[float, float, float]:
    """(beta1, beta2, eps) a run trained with, from its stored config (studies written before the betas were
    fields hold the defaults) and its batch size, by the spec's rules."""
    if config.get("optimizer") != "adam":
        return (math.nan,) * 3
    spec = StudySpec(**{f: config[f] for f in ("beta1", "beta2", "lr_scaling", "base_batch_size") if f in config})
    h = spec.adam_for(batch_size)
    return h.beta1, h.beta2, h.eps


Columns = dict[str, Any]
"""Column name -> NumPy array (numbers) or list (strings, nullable integers), all of one length."""


def runs_table(runs: list[dict[str, Any]], metrics: dict[str, dict[str, float]] | None = None,
               summaries: dict[str, Any] | None = None) -> Columns:
    """The runs table from :meth:`Store.runs` rows, :meth:`Store.run_metrics` (end-of-training curvature) and
    run_id -> `RunSummary` (the SUMMARY_FIELDS; missing for a run without one, e.g. one that never started)."""
    columns: Columns = {}
    for field in RUN_FIELDS:
        values = [r[field] for r in runs]
        if field in ("versions", "config"):
            columns[field] = [json.dumps(v, sort_keys=True) for v in values]
        elif field in _RUN_STRINGS:
            columns[field] = [str(v) for v in values]
        elif field in _RUN_FLOATS:
            columns[field] = np.array([np.nan if v is None else v for v in values], float)
        elif field in NULLABLE_INTEGERS:
            columns[field] = [None if v is None else int(v) for v in values]
        else:
            columns[field] = np.array(values, np.int64)
    columns["parent_run_id"] = [r.get("parent_run_id") for r in runs]
    columns["branch_epoch"] = [None if r.get("branch_epoch") is None else int(r["branch_epoch"]) for r in runs]
    columns["multiplier"] = np.array([np.nan if r.get("multiplier") is None else r["multiplier"] for r in runs], float)
    metrics = metrics or {}
    for column, name in CURVATURE_FIELDS.items():
        columns[column] = np.array([metrics.get(r["run_id"], {}).get(name, np.nan) for r in runs], float)
    summaries = summaries or {}
    for column, attr in SUMMARY_FIELDS.items():
        integer = column in ("updates", "group_replicas")
        values = [getattr(summaries[r["run_id"]], attr) if r["run_id"] in summaries else
                  (r["total_updates"] if column == "updates" else 1 if integer else np.nan) for r in runs]
        columns[column] = np.array(values, np.int64 if integer else float)
    adam = np.array([_adam_in_force(r["config"], r["batch_size"]) for r in runs], float).reshape(len(runs), 3)
    columns.update({column: adam[:, j] for j, column in enumerate(ADAM_COLUMNS)})
    return columns


def run_summaries(store: Store, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """run_id -> `RunSummary` for the runs with at least one recorded epoch (as `batchlab.study_data` builds them)."""
    sizes = group_sizes(runs)
    out = {}
    for r in runs:
        epochs = store.epochs(r["run_id"])
        if len(epochs["epoch"]):
            out[r["run_id"]] = summarize_run({**r, "group_replicas": sizes[r["run_id"]]}, epochs,
                                             store.step_losses(r["run_id"])[1])
    return out


def epochs_table(store: Store, run_ids: list[str]) -> Columns:
    """Per-epoch records of the given runs, one block of rows per run in the order given."""
    per_run = [store.epochs(rid) for rid in run_ids]
    columns: Columns = {"run_id": [rid for rid, e in zip(run_ids, per_run) for _ in e["epoch"]]}
    for field in EPOCH_FIELDS:
        columns[field] = _concat([e[field] for e in per_run], np.int64 if field in _INTEGER_FIELDS else np.float64)
    for field in SHARPNESS_FIELDS:  # curvature during training (sharpness_every); NaN where not measured
        columns[field] = _concat([e[field] for e in per_run], np.float64)
    return with_tokens(columns, tokens_per_example(store))


def evals_table(store: Store, run_ids: list[str]) -> Columns:
    """Evaluations between epoch ends of the given runs, one block of rows per run in the order given."""
    per_run = [store.evals(rid) for rid in run_ids]
    columns: Columns = {"run_id": [rid for rid, e in zip(run_ids, per_run) for _ in e["step"]]}
    for field in EVAL_FIELDS:
        columns[field] = _concat([e[field] for e in per_run], np.int64 if field in _INTEGER_FIELDS + ("step",)
                                 else np.float64)
    return with_tokens(columns, tokens_per_example(store))


def tokens_per_example(store: Store) -> int | None:
    """Text studies: the tokens in one example (the context; `meta["dataset"]["tokens_per_example"]`); None for
    the others, whose tables have no token column."""
    tokens = store.meta().get("dataset", {}).get("tokens_per_example")
    return None if tokens is None else int(tokens)


def with_tokens(columns: Columns, tokens: int | None) -> Columns:
    """`columns` with `tokens_seen` = examples_seen x tokens per example right after `examples_seen` (text only:
    every example is one sequence of `context` tokens, so the count is exact)."""
    if tokens is None:
        return columns
    out: Columns = {}
    for name, values in columns.items():
        out[name] = values
        if name == "examples_seen":
            out["tokens_seen"] = np.asarray(values, np.int64) * tokens
    return out


def steps_table(store: Store, run_ids: list[str]) -> Columns:
    """Per-step minibatch losses of the given runs (float32 as stored, widened to float64)."""
    per_run = [store.step_losses(rid) for rid in run_ids]
    return {"run_id": [rid for rid, (e, _) in zip(run_ids, per_run) for _ in range(len(e))],
            "step": _concat([np.arange(1, len(e) + 1) for e, _ in per_run], np.int64),
            "epoch": _concat([e for e, _ in per_run], np.int64),
            "batch_loss": _concat([losses for _, losses in per_run], np.float64)}


def critical_batch_size_table(store: Store, runs: list[dict[str, Any]]) -> Columns:
    """CBS(t) of the study's branches (`batchlab branch`; see :mod:`batchlab.analysis.cbs`): one row per branch
    point, columns epoch, base_batch_size, cbs, cbs_low, cbs_high (missing: NaN), seeds, window_epochs,
    tolerance; empty without branches."""
    from batchlab.analysis.cbs import critical_batch_sizes

    branches = [r for r in runs if r.get("parent_run_id") is not None]
    rows = critical_batch_sizes(branches, {b["run_id"]: store.epochs(b["run_id"]) for b in branches})
    ints, floats = ("epoch", "base_batch_size", "seeds", "window_epochs"), ("cbs", "cbs_low", "cbs_high", "tolerance")
    columns: Columns = {k: np.array([r[k] for r in rows], np.int64) for k in ints}
    columns.update({k: np.array([np.nan if r[k] is None else r[k] for r in rows], float) for k in floats})
    return columns


def _concat(arrays: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(0, dtype)


def read_tables(directory: str | Path, names: tuple[str, ...] = TABLE_NAMES) -> dict[str, Columns]:
    """The named tables of the study in `directory` (every run, in the store's order: batch size, lr, seed)."""
    unknown = [n for n in names if n not in TABLE_NAMES]
    if unknown:
        raise invalid("table", unknown[0], ", ".join(TABLE_NAMES))
    store = Store.open(directory)
    try:
        runs = store.runs()
        run_ids = [r["run_id"] for r in runs]
        build = {"runs": lambda: runs_table(runs, store.run_metrics(), run_summaries(store, runs)),
                 "epochs": lambda: epochs_table(store, run_ids), "steps": lambda: steps_table(store, run_ids),
                 "evals": lambda: evals_table(store, run_ids),
                 "critical_batch_size": lambda: critical_batch_size_table(store, runs)}
        return {name: build[name]() for name in names}
    finally:
        store.close()


def to_dataframe(columns: Columns, library: str = "pandas") -> Any:
    """A pandas or polars DataFrame of one table. Missing values: NaN in pandas float columns, null in polars
    (NaN becomes null, so polars' null handling and Parquet agree)."""
    if library not in DATAFRAME_LIBRARIES:
        raise invalid("format", library, ", ".join(DATAFRAME_LIBRARIES))
    module = import_extra(library, extra=DATAFRAME_LIBRARIES[library], purpose=f"a {library} DataFrame")
    if library == "pandas":
        return module.DataFrame({k: module.array(v, dtype="Int64") if k in NULLABLE_INTEGERS else v
                                 for k, v in columns.items()})
    return module.DataFrame(columns, nan_to_null=True)

