"""Shared fixtures: one small real study, trained once per test session."""

from __future__ import annotations

import pytest

from batchlab.runner.cores import pin_to_one_core

# Train in this process as `batchlab run` does: on one core from the start (before any test starts JAX), so
# in-process studies give the CLI's numbers and need no worker process (batchlab.runner.cores.reproducible_here).
pin_to_one_core()

from batchlab.runner.driver import run_study
from batchlab.spec import StudySpec


@pytest.fixture(scope="session")
def wine_study(tmp_path_factory):
    """wine (N = 142 train), batch sizes 1 and full, 12 epochs, 2 seeds: a finished study directory."""
    out = tmp_path_factory.mktemp("wine") / "study"
    run_study(StudySpec(dataset="wine", batch_sizes=(1, "full"), epochs=12, seeds=2, lr=0.03, device="cpu"), out)
    return out
