"""A study as three tables, runs, epochs and steps, as plain columns read from the store.

Every tabular view of a study is built here, so they all agree: the CSV and Parquet exports, and the pandas and
polars DataFrames of :class:`batchlab.results.StudyResults`.

- runs: one row per run (``RUN_FIELDS``, then ``CURVATURE_FIELDS``); ``versions`` and ``config`` are JSON strings
  (keys sorted); ``wall_time_s`` is training time without compilation; the curvature at the end of training
  (``hessian_top_eigenvalue``, ``hessian_trace``, ``hessian_trace_stderr``, ``hessian_converged`` (1 or 0: did the
  Lanczos estimate meet its convergence test), ``hessian_iterations``) is missing where it was not measured.
- epochs: one row per run and epoch (``run_id`` + ``EPOCH_FIELDS``), epoch 0 being the evaluation before
  training; the noise-scale columns (``b_simple``, ...) are missing where they were not measured. Text studies
  (and their evals) add ``tokens_seen`` = ``examples_seen`` x the context after ``examples_seen``.
- steps: one row per optimizer update (``run_id``, ``step``, ``epoch``, ``batch_loss``): ``step`` counts
  updates from 1 within a run, ``batch_loss`` is that update's minibatch loss, measured before the update.
- evals: the evaluations between epoch ends (``run_id`` + ``EVAL_FIELDS``: ``step``, ``examples_seen``, train
  and test loss and metric), when the study asked for them (``eval_every_steps``); empty otherwise, and the
  file exports then leave it out.

A missing value is NaN in a float column and None in ``diverged_epoch``. The pandas and polars converters import
their library only when called.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from batchlab._optional import import_extra
from batchlab.errors import invalid
from batchlab.store.db import EPOCH_FIELDS, EVAL_FIELDS, Store

RUN_FIELDS = ("run_id", "batch_size", "lr", "seed", "init_seed", "order_seed", "status", "diverged_epoch",
              "updates_per_epoch", "epochs_planned", "epochs_done", "total_updates", "examples_seen", "wall_time_s",
              "compile_time_s", "n_train", "device", "versions", "config")
TABLE_NAMES = ("runs", "epochs", "steps", "evals")
DATAFRAME_LIBRARIES = {"pandas": "pandas", "polars": "polars"}
"""DataFrame library -> the batchlab extra that installs it."""

CURVATURE_FIELDS = {"hessian_top_eigenvalue": "top_eigenvalue", "hessian_trace": "hessian_trace",
                    "hessian_trace_stderr": "hessian_trace_stderr", "hessian_converged": "top_eigenvalue_converged",
                    "hessian_iterations": "top_eigenvalue_iterations"}
"""Runs-table column -> the end-of-training measurement (`Store.run_metrics` name) it holds."""

NULLABLE_INTEGERS = ("diverged_epoch",)
"""Integer columns that may be missing: lists of int or None (pandas Int64, Arrow int64 with nulls)."""
_RUN_FLOATS = ("lr", "wall_time_s", "compile_time_s")
_RUN_STRINGS = ("run_id", "status", "device", "versions", "config")
_INTEGER_FIELDS = ("epoch", "updates", "examples_seen")

Columns = dict[str, Any]
"""Column name -> NumPy array (numbers) or list (strings, nullable integers), all of one length."""


def runs_table(runs: list[dict[str, Any]], metrics: dict[str, dict[str, float]] | None = None) -> Columns:
    """The runs table from :meth:`Store.runs` rows and :meth:`Store.run_metrics` (end-of-training curvature)."""
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
    metrics = metrics or {}
    for column, name in CURVATURE_FIELDS.items():
        columns[column] = np.array([metrics.get(r["run_id"], {}).get(name, np.nan) for r in runs], float)
    return columns


def epochs_table(store: Store, run_ids: list[str]) -> Columns:
    """Per-epoch records of the given runs, one block of rows per run in the order given."""
    per_run = [store.epochs(rid) for rid in run_ids]
    columns: Columns = {"run_id": [rid for rid, e in zip(run_ids, per_run) for _ in e["epoch"]]}
    for field in EPOCH_FIELDS:
        columns[field] = _concat([e[field] for e in per_run], np.int64 if field in _INTEGER_FIELDS else np.float64)
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
        build = {"runs": lambda: runs_table(runs, store.run_metrics()), "epochs": lambda: epochs_table(store, run_ids),
                 "steps": lambda: steps_table(store, run_ids), "evals": lambda: evals_table(store, run_ids)}
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

