"""Whole batchlab processes as a user starts them: one `batchlab run` alone against two started together, and the
Shallue-style study (`batchlab sweep` with local workers). Each child starts with every core allowed, as from a
shell, and with its own lock folder for core claims (TMPDIR), so the bench's own pinned process does not count."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from batchlab.store.db import Store

LAUNCH = ("import os, runpy, sys; os.sched_setaffinity(0, range(os.cpu_count())); "
          "sys.argv = ['batchlab'] + sys.argv[1:]; runpy.run_module('batchlab.cli', run_name='__main__')")
"""Start the CLI with every core allowed (the bench process itself is pinned to one)."""

RUN_ARGS = ["run", "--dataset", "digits", "--batch-sizes", "1", "--gns", "off", "--sharpness", "false",
            "--no-figures"]

SHALLUE_STUDY = """\
# Shallue-style digits study (issue 16): 11 batch sizes 1..512 and the full batch, 8 rates, 8 seeds
dataset = "digits"
batch_sizes = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, "full"]
lr = [0.003, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3]
seeds = 8
epochs = {epochs}
gns = "off"
sharpness = false
"""


def _start(args: list[str], lock_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(lock_dir), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", LAUNCH, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)


def _finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"batchlab exited {proc.returncode}: {err.strip().splitlines()[-1:]}")


def _training_time(out: Path) -> float:
    """The run's recorded training time (compile excluded), summed over its runs."""
    store = Store.open(out)
    try:
        return float(sum(r["wall_time_s"] for r in store.runs()))
    finally:
        store.close()


def two_runs_at_once(epochs: int) -> dict:
    """Training time of one `batchlab run` (digits, batch size 1, `epochs` epochs) alone, then of two started
    together; `slowdown` = together / alone for each (1.0: no interference; 2.0: they shared one core)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        locks = root / "locks"
        locks.mkdir()
        args = RUN_ARGS + ["--epochs", str(epochs)]
        _finish(_start(args + ["--out", str(root / "warm")], locks))  # compilation cache and file cache warm
        _finish(_start(args + ["--out", str(root / "alone")], locks))
        alone = _training_time(root / "alone")
        procs = [_start(args + ["--out", str(root / f"together{i}")], locks) for i in range(2)]
        for p in procs:
            _finish(p)
        together = [_training_time(root / f"together{i}") for i in range(2)]
    return {"epochs": epochs, "alone_s": alone, "together_s": together,
            "slowdown": [t / alone for t in together], "speed_vs_alone": [alone / t for t in together]}


def shallue_study(epochs: int, workers: int) -> dict:
    """Wall time of the Shallue-style digits study (11 batch sizes x 8 rates x 8 seeds) with `--workers`, noise
    scale and curvature off, from start to exit."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        locks = root / "locks"
        locks.mkdir()
        study = root / "study.toml"
        study.write_text(SHALLUE_STUDY.format(epochs=epochs))
        t0 = time.perf_counter()
        _finish(_start(["sweep", str(study), "--out", str(root / "out"), "--workers", str(workers)], locks))
        seconds = time.perf_counter() - t0
        training = _training_time(root / "out")
    return {"epochs": epochs, "workers": workers, "wall_s": seconds, "recorded_training_s": training}
