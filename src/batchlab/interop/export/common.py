"""One module per export format (csv, parquet, tensorboard, mlflow); `batchlab.interop.export` is the front door.

What the formats share lives here: a readable, unique name per run, a run's hyperparameters as flat scalars
(TensorBoard's hparams, MLflow's params), the training time at each step, and the step-decimation setting.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from batchlab.analysis.decimate import minmax_indices
from batchlab.errors import invalid

STUDY_LEVEL = ("batch_sizes", "seeds")
"""Config fields that describe the whole study, not one run (each run has its own batch_size and seed)."""
RUN_LEVEL = ("batch_size", "lr", "seed", "init_seed", "order_seed")
"""Run-row fields that override the config: a run's config holds the study's first `seed`, the row its own."""


def run_params(run: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """A run's hyperparameters as flat scalars: its config (lists joined with commas, unset fields left out)
    with its own batch size, learning rate and seeds."""
    params: dict[str, bool | int | float | str] = {}
    for key, value in sorted(run["config"].items()):
        if key in STUDY_LEVEL or value is None:
            continue
        params[key] = ",".join(map(str, value)) if isinstance(value, list | tuple) else value
    params.update({key: run[key] for key in RUN_LEVEL})
    return params


def run_names(runs: list[dict[str, Any]]) -> dict[str, str]:
    """run_id -> a readable name, unique within the study: ``bs32_lr0.03_seed1``, plus ``_<field>-<value>`` for
    every other hyperparameter that differs between runs (a sweep over optimizers: ``..._optimizer-adam``)."""
    params = {r["run_id"]: run_params(r) for r in runs}
    keys = sorted({k for p in params.values() for k in p} - set(RUN_LEVEL))
    varying = [k for k in keys if len({repr(p.get(k)) for p in params.values()}) > 1]
    names = {}
    for r in runs:
        p = params[r["run_id"]]
        name = f"bs{r['batch_size']}_lr{r['lr']:g}_seed{r['seed']}" + "".join(f"_{k}-{p.get(k)}" for k in varying)
        names[r["run_id"]] = re.sub(r"[^A-Za-z0-9._,=+-]", "-", name)
    if len(set(names.values())) < len(names):  # not expected: runs differ in some hyperparameter
        names = {rid: f"{name}_{rid}" for rid, name in names.items()}
    return names


def step_wall_times(step_epoch: np.ndarray, epochs: np.ndarray, wall_time_s: np.ndarray) -> np.ndarray:
    """Training time (s) at each step: the steps of epoch e spread evenly over (time at e - 1, time at e]."""
    if not len(step_epoch):
        return np.zeros(0)
    at = dict(zip(epochs.tolist(), wall_time_s.tolist()))
    ends = np.array([at.get(e, np.nan) for e in step_epoch.tolist()])
    starts = np.array([at.get(e - 1, 0.0) for e in step_epoch.tolist()])
    first = np.r_[True, step_epoch[1:] != step_epoch[:-1]]
    group = np.cumsum(first) - 1
    position = np.arange(len(step_epoch)) - np.flatnonzero(first)[group]
    counts = np.bincount(group)[group]
    return np.nan_to_num(starts + (position + 1) / counts * (ends - starts))


def kept_steps(losses: np.ndarray, max_step_points: int | None) -> np.ndarray:
    """Indices of the per-step losses to export: all, or at most `max_step_points` chosen by min/max decimation
    (`batchlab.analysis.decimate`), so every kept point is a real step and no spike is lost."""
    return minmax_indices(losses, max_step_points) if max_step_points else np.arange(len(losses))


def check_max_step_points(max_step_points: int | None) -> None:
    """None (the format's default), 0 (every step), or at least 4: the first and last step and one bucket's
    minimum and maximum."""
    if max_step_points is not None and (isinstance(max_step_points, bool) or not isinstance(max_step_points, int)
                                        or not (max_step_points == 0 or max_step_points >= 4)):
        raise invalid("max_step_points", max_step_points, "0 (keep every step) or an integer >= 4")


def refuse_overwrite(out: Path, names: list[str]) -> None:
    """An export never replaces files: refuse a directory already holding one of the files it would write (as the
    TensorBoard export refuses earlier event files)."""
    found = [n for n in names if (out / n).exists()]
    if found:
        raise invalid("to", str(out), f"a directory without the files this export writes ({out / found[0]} exists, "
                      "perhaps from an earlier export): a new or empty directory, or remove them first")
