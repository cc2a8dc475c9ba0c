"""`batchlab branch`: kept states (`checkpoint_every`), branches on the parent's data stream, resumable."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from batchlab.cli import main
from batchlab.runner.branch import branch_study
from batchlab.runner.driver import run_study
from batchlab.spec import build_spec
from batchlab.store.db import Store
from batchlab.store.tables import read_tables
from tests.runner.test_resume import fingerprint_results

PARENT = {"dataset": "iris", "batch_sizes": "4", "lr": 0.05, "epochs": 6, "seeds": 2, "gns": "off",
          "sharpness": False, "device": "cpu", "checkpoint_every": 1}


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("branch") / "parent"
    run_study(build_spec(PARENT), out)
    return out


def test_the_kept_states_are_every_k_epochs_from_epoch_0(tmp_path):
    run_study(build_spec({**PARENT, "epochs": 5, "seeds": 1, "checkpoint_every": 2}), tmp_path / "s")
    store = Store.open(tmp_path / "s")
    try:
        (run,) = store.runs()
        assert store.kept_epochs(run["run_id"]) == [0, 2, 4]
        state = store.kept_state(run["run_id"], 4)
        assert state is not None
        final = store.load_params(run["run_id"], kind="final")
        assert sum(a.size for a in final.values()) == sum(a.size for a in state[:4])
    finally:
        store.close()


@pytest.mark.slow
def test_the_x1_branch_continues_its_parent_bit_for_bit_and_branches_are_runs_of_the_study(parent, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(parent, study)
    outcome = branch_study(study, from_epochs=(1, 3), multipliers=(1, 2), window_epochs=2, lr_rule="linear")
    assert outcome.completed
    store = Store.open(study)
    try:
        runs = store.runs()
        branches = [r for r in runs if r["parent_run_id"] is not None]
        assert len(branches) == 2 * 2 * 2 and {r["status"] for r in runs} == {"completed"}
        for b in branches:
            e, p = store.epochs(b["run_id"]), store.epochs(b["parent_run_id"])
            start = b["branch_epoch"]
            assert list(e["epoch"]) == [start + 1, start + 2]  # the parent's next epochs, no epoch 0
            assert list(e["examples_seen"]) == list(p["examples_seen"][start + 1:start + 3])
            assert list(e["lr"]) == [0.05 * b["multiplier"]] * 2 and set(e["batch_size"]) == {4 * b["multiplier"]}
            if b["multiplier"] == 1:  # the parent's own program from the parent's own state: the same numbers
                for field in ("updates", "train_loss", "test_loss", "train_acc", "test_acc"):
                    assert list(e[field]) == list(p[field][start + 1:start + 3]), field
                _epoch_of, losses = store.step_losses(b["run_id"])
                parent_epoch_of, parent_losses = store.step_losses(b["parent_run_id"])
                assert losses.tobytes() == parent_losses[(parent_epoch_of > start) &
                                                         (parent_epoch_of <= start + 2)].tobytes()
            else:  # k x B: 30 / 2 = 15 updates per epoch after the parent's 30 per epoch
                assert list(e["updates"]) == [30 * start + 15, 30 * start + 30]
    finally:
        store.close()
    table = read_tables(study, ("runs",))["runs"]
    assert {"parent_run_id", "branch_epoch", "multiplier"} <= set(table)
    assert sorted(v for v in table["branch_epoch"] if v is not None) == [1] * 4 + [3] * 4
    # Run again: nothing to do, nothing changes.
    before = fingerprint_results(study)
    assert branch_study(study, from_epochs=(1, 3), multipliers=(1, 2), window_epochs=2, lr_rule="linear").completed
    assert fingerprint_results(study) == before


def _epochs_recorded(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return con.execute("SELECT COUNT(*) FROM epochs").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_a_branch_killed_mid_way_resumes_to_the_same_numbers(parent, tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    shutil.copytree(parent, reference)
    shutil.copytree(parent, killed)
    args = ["--from-epochs", "1,2", "--multipliers", "1,2,4", "--window-epochs", "3"]
    assert main(["branch", str(reference), *args]) == 0
    env = dict(os.environ)
    start = _epochs_recorded(killed / "study.db")
    proc = subprocess.Popen([sys.executable, "-m", "batchlab.cli", "branch", str(killed), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    deadline = time.time() + 300
    while proc.poll() is None and _epochs_recorded(killed / "study.db") < start + 5 and time.time() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _epochs_recorded(killed / "study.db") < _epochs_recorded(reference / "study.db")  # it was cut short
    assert main(["branch", str(killed), *args]) == 0
    assert fingerprint_results(killed) == fingerprint_results(reference)


@pytest.mark.parametrize("args,fragment", [
    (["--from-epochs", "7", "--multipliers", "1,2", "--window-epochs", "1"], "from_epochs: got 7"),
    (["--from-epochs", "1", "--multipliers", "1,64", "--window-epochs", "1"], "multipliers: got 64"),
    (["--from-epochs", "1", "--multipliers", "1,2"], "window_epochs"),
    (["--from-epochs", "1", "--multipliers", "1,2", "--window-epochs", "1", "--lr-rule", "cube"], "lr_rule"),
])
def test_bad_branch_arguments_are_one_line_and_write_nothing(parent, tmp_path, capsys, args, fragment):
    study = tmp_path / "study"
    shutil.copytree(parent, study)
    before = fingerprint_results(study)
    assert main(["branch", str(study), *args]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1
    assert fingerprint_results(study) == before


def test_a_study_without_kept_states_says_how_to_get_them(tmp_path, capsys):
    run_study(build_spec({**PARENT, "epochs": 1, "seeds": 1, "checkpoint_every": None}), tmp_path / "s")
    assert main(["branch", str(tmp_path / "s"), "--from-epochs", "1", "--multipliers", "1,2",
                 "--window-epochs", "1"]) == 2
    assert "--checkpoint-every" in capsys.readouterr().err


def test_branches_stay_out_of_the_ordinary_analysis(parent, tmp_path):
    from batchlab.study_data import StudyData

    study = tmp_path / "study"
    shutil.copytree(parent, study)
    assert branch_study(study, from_epochs=(5,), multipliers=(1, 2), window_epochs=1).completed
    data = StudyData.load(study)
    assert len(data.summaries) == 2 and len(data.branches) == 4
    assert np.all([b["branch_epoch"] == 5 for b in data.branches])


@pytest.mark.slow
def test_cbs_reaches_show_the_report_and_the_exports(parent, tmp_path, capsys):
    from batchlab.interop.export.csv import export_csv
    from batchlab.report.html import render_report
    from batchlab.study_data import StudyData

    study = tmp_path / "study"
    shutil.copytree(parent, study)
    assert main(["branch", str(study), "--from-epochs", "2", "--multipliers", "1,2,4", "--window-epochs", "1",
                 "--schedule-out", str(tmp_path / "warmup.toml")]) == 0
    out = capsys.readouterr().out
    assert "Critical batch size over training" in out and "Batch-size warmup from CBS(t)" in out
    assert max(len(line) for line in out.splitlines() if "loss x1" in line or "epoch" in line) <= 80
    assert main(["show", str(study)]) == 0 and "Critical batch size over training" in capsys.readouterr().out
    assert 'id="plot-cbs"' in render_report(StudyData.load(study))
    paths = export_csv(study, tmp_path / "csv")
    assert tmp_path / "csv" / "critical_batch_size.csv" in paths
    lines = (tmp_path / "csv" / "critical_batch_size.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,base_batch_size,seeds,window_epochs,cbs") and len(lines) == 2
    assert build_spec(__import__("tomllib").loads((tmp_path / "warmup.toml").read_text())).base_batch_size == 4


@pytest.mark.slow
def test_digits_critical_batch_size_does_not_fall_over_training_and_x1_from_epoch_5_is_the_parent(tmp_path):
    # Issue 14's check: a B = 8 digits run with kept states, branched from epochs 1, 5 and 15 at 1..64 x B.
    from batchlab.analysis.cbs import critical_batch_sizes
    from batchlab.study_data import StudyData

    study = tmp_path / "digits"
    run_study(build_spec({"dataset": "digits", "batch_sizes": "8", "epochs": 15, "seeds": 2, "gns": "off",
                          "sharpness": False, "device": "cpu", "checkpoint_every": 1}), study)
    assert branch_study(study, from_epochs=(1, 5, 15), multipliers=(1, 2, 4, 8, 16, 32, 64), window_epochs=2,
                        lr_rule="linear").completed
    data = StudyData.load(study)
    rows = critical_batch_sizes(data.branches, data.epochs)
    assert [r["epoch"] for r in rows] == [1, 5, 15] and all(r["cbs"] is not None for r in rows)
    cbs = [r["cbs"] for r in rows]
    assert cbs == sorted(cbs), cbs
    for b in data.branches:
        if b["multiplier"] == 1 and b["branch_epoch"] == 5:
            e, p = data.epochs[b["run_id"]], data.epochs[b["parent_run_id"]]
            for field in ("train_loss", "test_loss", "train_acc", "test_acc", "updates"):
                assert list(e[field]) == list(p[field][6:8]), field
