"""`batchlab show` with a user-chosen steps-to-target metric and value."""

from __future__ import annotations

import subprocess
import sys


def show(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "batchlab.cli", "show", *args], capture_output=True, text=True,
                          check=False)


def test_a_chosen_target_is_used_and_quoted(wine_study):
    p = show(str(wine_study), "--target-metric", "test_error", "--target", "0.25")
    assert p.returncode == 0, p.stderr
    assert "Steps to target (test error < 0.25" in p.stdout


def test_bad_target_options_are_one_line_errors(wine_study):
    for args, field in ((("--target-metric", "accuracy"), "target_metric"), (("--target", "low"), "target"),
                        (("--target", "nan"), "target"), (("--target", "inf"), "target")):  # nan, inf: issue 12
        p = show(str(wine_study), *args)
        assert p.returncode == 2 and "Traceback" not in p.stderr
        assert p.stderr.strip().count("\n") == 0 and f"error: {field}: got" in p.stderr
