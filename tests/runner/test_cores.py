"""Core claims: batchlab processes started together take distinct cores (issue 16: two runs at once used to share
core 0 and each took 2.08x as long)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from batchlab.runner.cores import core_busy_fractions

CLAIM = ("import sys, time; from batchlab.runner.cores import pin_to_one_core; print(pin_to_one_core(), flush=True); "
         "sys.stdin.read()")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2, reason="needs two cores")
def test_processes_started_together_claim_distinct_cores_and_share_only_when_all_are_claimed(tmp_path):
    # a private lock folder (TMPDIR), so that this test process's own claim (tests/conftest.py) does not count
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env.pop("BATCHLAB_NO_PIN", None)
    code = "import os; os.sched_setaffinity(0, {0, 1}); " + CLAIM
    procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    try:
        first_two = sorted(int(p.stdout.readline()) for p in procs)  # both hold their claims while a third asks
        third = subprocess.run([sys.executable, "-c", code], input="", capture_output=True, text=True, env=env,
                               check=True)
    finally:
        for p in procs:
            p.communicate("")
    assert first_two == [0, 1]
    assert int(third.stdout) in (0, 1)  # every core claimed: it shares one rather than waiting


def test_busy_fractions_are_fractions_of_the_allowed_cores():
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    fractions = core_busy_fractions(allowed, window_s=0.02)
    assert set(fractions) <= set(allowed)
    assert all(0.0 <= f <= 1.0 for f in fractions.values())
