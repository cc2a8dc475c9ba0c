"""Huge pages for training processes: when they apply, how the environment is built, that the command restarts
with them, and that the numbers do not change."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from batchlab.runner import allocator


def test_the_tunable_joins_the_users_own_tunables_once():
    assert allocator.with_huge_pages({})["GLIBC_TUNABLES"] == allocator.TUNABLE
    env = allocator.with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "HOME": "/h"})
    assert env == {"GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{allocator.TUNABLE}", "HOME": "/h"}
    assert allocator.with_huge_pages(env) == env
    assert allocator.active(env) and not allocator.active({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})


def test_supported_only_where_transparent_huge_pages_can_be_asked_for(tmp_path: Path):
    setting = tmp_path / "enabled"
    setting.write_text("always madvise [never]\n")
    assert not allocator.supported(setting)
    assert not allocator.supported(tmp_path / "missing")
    if sys.platform == "linux" and allocator.supported():
        for on in ("[always] madvise never\n", "always [madvise] never\n"):
            setting.write_text(on)
            assert allocator.supported(setting)


def test_off_by_the_environment_variable():
    assert not allocator.wanted({allocator.OFF: "0"})
    assert not allocator.wanted({"GLIBC_TUNABLES": allocator.TUNABLE})


@pytest.mark.skipif(not allocator.supported(), reason="no glibc >= 2.35 with transparent huge pages here")
def test_a_process_restarts_itself_with_the_tunable_and_its_children_inherit_it():
    script = ("import os, subprocess, sys; from batchlab.runner.allocator import restart_with_huge_pages; "
              "restart_with_huge_pages(); print(os.environ.get('GLIBC_TUNABLES')); "
              "print(subprocess.run([sys.executable, '-c', 'import os; print(os.environ.get(\"GLIBC_TUNABLES\"))'], "
              "capture_output=True, text=True).stdout.strip())")
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("GLIBC_TUNABLES", allocator.OFF)}
    out = subprocess.run([sys.executable, "-c", script, "an-argument"], capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    assert out == [allocator.TUNABLE, allocator.TUNABLE]
    off = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**env, allocator.OFF: "0"}).stdout.split()
    assert off == ["None", "None"]


STUDY = """dataset = "digits"
batch_sizes = [256]
lr = [0.01, 0.1]
seeds = 2
epochs = 3
gns = "off"
sharpness = false
"""


@pytest.mark.slow
@pytest.mark.skipif(not allocator.supported(), reason="no glibc >= 2.35 with transparent huge pages here")
def test_huge_pages_do_not_change_a_single_number(tmp_path: Path):
    study = tmp_path / "study.toml"
    study.write_text(STUDY)
    rows = []
    for on in ("1", "0"):
        out = tmp_path / f"out{on}"
        env = {**__import__("os").environ, allocator.OFF: on}
        env.pop("GLIBC_TUNABLES", None)
        subprocess.run([sys.executable, "-m", "batchlab.cli", "sweep", str(study), "--out", str(out), "--no-figures",
                        "--workers", "2"], check=True, capture_output=True, env=env)
        con = sqlite3.connect(out / "study.db")
        rows.append((con.execute("SELECT run_id, epoch, train_loss, train_acc, test_loss, test_acc FROM epochs "
                                 "ORDER BY run_id, epoch").fetchall(),
                     con.execute("SELECT * FROM steps ORDER BY 1, 2").fetchall()))
        con.close()
    assert rows[0] == rows[1] and len(rows[0][0]) == 16
