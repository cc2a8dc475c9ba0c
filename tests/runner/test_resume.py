"""Sweeps: axes from a study file, packing into groups, and resuming after kill -9 with identical results."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from batchlab.errors import BatchlabError
from batchlab.runner.driver import run_sweep
from batchlab.runner.plan import plan
from batchlab.spec import FULL
from batchlab.store.db import Store
from batchlab.sweep import build_sweep


def test_lists_become_axes_and_points_are_their_product():
    sweep = build_sweep({"dataset": "iris", "lr": [0.01, 0.1], "optimizer": ["sgd", "adam"], "hidden": [[8], [16, 16]],
                         "batch_sizes": [1, "full"]})
    points = sweep.points()
    assert len(points) == 8
    assert {(p.lr, p.optimizer, p.hidden) for p in points} == {
        (lr, o, h) for lr in (0.01, 0.1) for o in ("sgd", "adam") for h in ((8,), (16, 16))}
    assert all(p.batch_sizes == (1, FULL) for p in points)


def test_a_run_config_is_a_one_point_sweep_and_hidden_as_a_list_of_ints_is_one_value():
    sweep = build_sweep({"hidden": [256, 128], "lr": 0.1})
    assert sweep.axes == () and sweep.points()[0].hidden == (256, 128)


def test_log_range_learning_rates():
    sweep = build_sweep({"lr": {"log_range": [0.001, 0.1, 3]}})
    np.testing.assert_allclose(dict(sweep.axes)["lr"], [0.001, 0.01, 0.1])


@pytest.mark.parametrize("values,pattern", [
    ({"lr": [0.1, -1]}, r"^lr\[1\]: got -1; allowed: a number > 0 that float32 holds"),
    ({"lr": {"log_range": [0.1, 0.01, 3]}}, r"^lr: .*0 < low < high"),
    ({"lr": [0.1, 0.1]}, r"^lr: .*distinct values"),
    ({"optimizer": ["sgd", "rmsprop"]}, r"^optimizer\[1\]: got 'rmsprop'"),
    ({"lr_scaling": ["none", "linear"], "warmup_epochs": 2}, r"^warmup_epochs: got 2"),
    ({"epoch": 3}, r"^epoch: unknown field"),
])
def test_bad_sweep_values_are_one_line_errors(values, pattern):
    with pytest.raises(BatchlabError, match=pattern):
        build_sweep(values)


def test_fingerprint_names_the_runs_not_the_device():
    a = build_sweep({"dataset": "iris", "lr": [0.01, 0.1]})
    assert a.fingerprint() == build_sweep({"dataset": "iris", "lr": [0.01, 0.1], "device": "cpu"}).fingerprint()
    assert a.fingerprint() != build_sweep({"dataset": "iris", "lr": [0.01, 0.2]}).fingerprint()


def test_plan_packs_learning_rates_and_seeds_of_a_batch_size_and_chunks_them():
    sweep = build_sweep({"dataset": "iris", "lr": [0.01, 0.1, 1.0], "seeds": 2, "batch_sizes": [1, 8],
                         "optimizer": ["sgd", "momentum"]})
    groups = plan(sweep, n_train=120, max_replicas=100)
    assert [(g.batch_size, len(g.runs)) for g in groups] == [(1, 6), (1, 6), (8, 6), (8, 6)]
    assert {r.lr for r in groups[0].runs} == {0.01, 0.1, 1.0}
    chunked = plan(sweep, n_train=120, max_replicas=4)
    assert [len(g.runs) for g in chunked] == [3, 3] * 4
    assert sorted(r.run_id for g in chunked for r in g.runs) == sorted(r.run_id for g in groups for r in g.runs)
    assert [g.group_id for g in plan(sweep, n_train=120, max_replicas=4)] == [g.group_id for g in chunked]


def test_a_diverging_learning_rate_is_recorded_and_its_pack_mates_finish(tmp_path):
    sweep = build_sweep({"dataset": "iris", "lr": [0.05, 5.0], "batch_sizes": [1], "epochs": 8, "device": "cpu"})
    run_sweep(sweep, tmp_path / "s")
    runs = {r["lr"]: r for r in Store.open(tmp_path / "s").runs()}
    assert runs[5.0]["status"] == "diverged" and runs[0.05]["status"] == "completed"
    assert runs[0.05]["epochs_done"] == 8


def test_a_changed_study_file_is_refused_under_an_existing_directory(tmp_path):
    run_sweep(build_sweep({"dataset": "iris", "batch_sizes": ["full"], "epochs": 2, "device": "cpu"}), tmp_path / "s")
    before = (tmp_path / "s" / "study.db").read_bytes()
    with pytest.raises(BatchlabError, match="^out: .* holds a different study"):
        run_sweep(build_sweep({"dataset": "iris", "batch_sizes": ["full"], "epochs": 3, "device": "cpu"}),
                  tmp_path / "s")
    assert (tmp_path / "s" / "study.db").read_bytes() == before


# ---------------------------------------------------------------------------------------------------------
# Resume after kill -9: identical results, nothing missing, nothing duplicated.

STUDY = """dataset = "digits"
batch_sizes = [1, 32, "full"]
lr = [0.01, 0.1, 3.0]
seeds = 2
epochs = 15
device = "cpu"
"""


def fingerprint_results(directory: Path) -> dict:
    """Everything a study measured except timings: per run its status and counts, every epoch's metrics and
    every step's loss, as exact values."""
    store = Store.open(directory)
    out = {}
    for r in store.runs():
        epochs = store.epochs(r["run_id"])
        out[r["run_id"]] = (
            r["status"], r["diverged_epoch"], r["epochs_done"], r["total_updates"], r["examples_seen"],
            tuple(tuple(np.nan_to_num(epochs[k], nan=-1.0)) for k in epochs if k != "wall_time_s"),
            store.step_losses(r["run_id"])[1].tobytes(),
            tuple(sorted((k, v.tobytes()) for k, v in store.load_params(r["run_id"], kind="final").items())),
        )
    store.close()
    return out


def epochs_recorded(db: Path) -> int:
    """Epoch rows committed so far (0 while the study database does not exist yet)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return con.execute("SELECT COUNT(*) FROM epochs").fetchone()[0]
    except sqlite3.Error:
        return 0


def sweep_command(study: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "batchlab.cli", "sweep", str(study), "--out", str(out), "--no-figures", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_sweep_killed_at_random_moments_resumes_to_identical_results(tmp_path, workers):
    study = tmp_path / "study.toml"
    study.write_text(STUDY)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    reference = subprocess.run(sweep_command(study, tmp_path / "reference"), capture_output=True, text=True, env=env, check=False)
    assert reference.returncode == 0, reference.stderr
    rng = random.Random(1234 + int(workers))
    killed = tmp_path / "killed"
    kills = 0
    for attempt in range(12):  # kill at random moments: during start-up, then a little after each new progress
        proc = subprocess.Popen(sweep_command(study, killed, "--workers", workers), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        if attempt == 0:
            time.sleep(rng.uniform(0.2, 1.5))
        else:
            before = epochs_recorded(killed / "study.db")
            while proc.poll() is None and epochs_recorded(killed / "study.db") <= before:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, at once
            kills += 1
        proc.wait()
        if proc.returncode == 0:
            break
    assert kills >= 3
    final = subprocess.run(sweep_command(study, killed, "--workers", workers), capture_output=True, text=True, env=env, check=False)
    assert final.returncode == 0, final.stderr
    ours, theirs = fingerprint_results(killed), fingerprint_results(tmp_path / "reference")
    assert sorted(ours) == sorted(theirs) and len(ours) == 18
    for run_id in theirs:
        assert ours[run_id] == theirs[run_id], run_id
    statuses = {v[0] for v in ours.values()}
    assert statuses <= {"completed", "diverged"} and "diverged" in statuses
