"""Bounds at the door (issue 12): a study too large to register, train, store or fit in memory is refused in one
line, with its estimate, before anything is written; rates float32 cannot hold are refused; a study in which
every run diverged still gets its figures and report."""

from __future__ import annotations

import socket

import pytest

import batchlab
from batchlab.errors import BatchlabError
from batchlab.results import StudyResults
from batchlab.runner.driver import check_executor, run_study, run_sweep
from batchlab.runner.plan import PlannedGroup, PlannedRun
from batchlab.runner.size import estimate, human_bytes
from batchlab.spec import StudySpec, build_spec
from batchlab.sweep import build_sweep


@pytest.mark.parametrize("values,pattern", [
    ({"lr": {"log_range": [0.001, 1.0, 10**8]}}, r"^lr: .*2 <= count <= 1,000"),
    ({"lr": [0.001 * (i + 1) for i in range(1001)]},
     r"^lr: got 'a list of 1,001 values'; allowed: a non-empty list of at most 1,000 values"),
    ({"lr": {"log_range": [0.001, 1.0, 200]}, "momentum": [0.1 * i for i in range(9)], "optimizer": ["momentum"],
      "hidden": [[8], [16], [32], [64], [128], [256], [512]]},
     r"^sweep: got '12,600 grid points \(200x9x1x7\)'; allowed: at most 10,000 grid points"),
    ({"seeds": 100_000}, r"^seeds: got 100000; allowed: an integer in \[1, 10000\]"),
    ({"seeds": 10_000, "batch_sizes": [1, 8, "full"]},
     r"^sweep: got '30,000 runs \(1 points x 3 batch sizes x 10,000 seeds\)'; allowed: at most 20,000 runs per study"),
    ({"budget_steps": 10**15}, r"^budget_steps: got 1000000000000000; allowed: an integer in \[1, 1e\+12\]"),
    ({"lr": 1e308}, r"^lr: got 1e\+308; allowed: a number > 0 that float32 holds"),
    ({"lr": 1e-50}, r"^lr: got 1e-50; allowed: a number > 0 that float32 holds"),
])
def test_sizes_and_rates_beyond_the_bounds_are_refused_at_the_door(values, pattern):
    with pytest.raises(BatchlabError, match=pattern):
        build_sweep(values)


def test_a_budget_needing_more_epochs_than_allowed_is_refused_before_anything_is_written(tmp_path):
    spec = build_spec({"dataset": "iris", "batch_sizes": [1, "full"], "budget_steps": 2_000_000, "device": "cpu"})
    with pytest.raises(BatchlabError, match=r"^budget_steps: got 2000000; allowed: a budget of at most 1,000,000 "
                                            r"epochs per run \(batch size 120 would need 2,000,000 epochs of 1 "
                                            r"updates\)"):
        run_study(spec, tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_a_scaled_rate_beyond_float32_is_refused(tmp_path):
    spec = build_spec({"dataset": "iris", "batch_sizes": ["full"], "lr": 1e37, "lr_scaling": "linear",
                       "device": "cpu"})
    with pytest.raises(BatchlabError, match=r"^lr: got 1e\+37; allowed: a rate that float32 holds at every batch "
                                            r"size \(linear scaling gives 1.2e\+39 at batch size 120"):
        run_study(spec, tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_a_model_too_large_for_memory_is_refused_with_its_estimate(tmp_path):
    spec = StudySpec(dataset="iris", batch_sizes=(8,), hidden=(300_000, 300_000), epochs=1, device="cpu")
    with pytest.raises(BatchlabError, match=r"^model: got '90,\d{3},\d{3},\d{3} parameters'; allowed: a model of "
                                            r"which one replica fits in memory: at batch size 8 it needs ~1\.\d TB "
                                            r".* free; use a smaller model \(--hidden\)"):
        run_study(spec, tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_the_size_estimate_counts_steps_and_store_bytes():
    spec = StudySpec(dataset="iris", epochs=10)
    runs = tuple(PlannedRun(f"r{i}", spec, 10, i, 0.1, 10) for i in range(3))
    size = estimate([PlannedGroup("g", 10, 10, runs)], 120, {"g": 1000})
    assert size.runs == 3 and size.replica_steps == 3 * 10 * 12
    # step losses 4 B each, 11 epoch rows of 200 B, init+final 4 kB each, a 3-moment checkpoint, the WAL
    assert size.store_bytes == 3 * (4 * 120 + 200 * 11 + 2 * 4000) + 3 * 4000 * 3 + 1000 * 4096
    assert human_bytes(1_500_000) == "1.5 MB" and human_bytes(999) == "999 B"


def test_ray_at_an_address_that_refuses_the_connection_is_one_line_before_anything_is_written(tmp_path):
    pytest.importorskip("ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    with pytest.raises(BatchlabError, match=rf"^address: nothing answers at 127.0.0.1:{port} \(.*\); allowed: the "
                                            r"address of a running Ray cluster"):
        check_executor("ray", 1, f"127.0.0.1:{port}")
    with pytest.raises(BatchlabError, match="^address: nothing answers"):
        run_sweep(build_sweep({"dataset": "iris", "epochs": 1}), tmp_path / "s", executor="ray",
                  address=f"127.0.0.1:{port}")
    assert not (tmp_path / "s").exists()


def test_a_study_in_which_every_run_diverged_still_writes_its_figures_and_report(tmp_path):
    run_study(StudySpec(dataset="iris", batch_sizes=(1, "full"), lr=1e9, epochs=3, device="cpu"), tmp_path / "s")
    results = StudyResults.load(tmp_path / "s")
    assert {s.status for s in results.summaries} == {"diverged"}
    assert len(results.write_figures()) == 5  # lena x2, overlay, cost, scaling
    assert results.write_report().stat().st_size > 1000


def test_a_notebook_cell_can_be_run_again_with_resume_or_overwrite(tmp_path):
    spec = batchlab.make_study(dataset="iris", batch_sizes=[8], epochs=2, device="cpu")
    first = batchlab.run(spec, out=tmp_path / "s", progress=False)
    with pytest.raises(BatchlabError, match="already holds a study"):
        batchlab.run(spec, out=tmp_path / "s", progress=False)
    again = batchlab.run(spec, out=tmp_path / "s", progress=False, resume=True)  # finished: just opened
    assert again.meta["created_at"] == first.meta["created_at"]
    assert [s.final_test_loss for s in again.summaries] == [s.final_test_loss for s in first.summaries]
    fresh = batchlab.run(spec, out=tmp_path / "s", progress=False, overwrite=True)
    assert fresh.meta["created_at"] > first.meta["created_at"]
    assert [s.final_test_loss for s in fresh.summaries] == [s.final_test_loss for s in first.summaries]
    other = batchlab.make_study(dataset="iris", batch_sizes=[8], epochs=3, device="cpu")
    with pytest.raises(BatchlabError, match="holds a different study"):
        batchlab.run(other, out=tmp_path / "s", progress=False, resume=True)
    with pytest.raises(BatchlabError, match="^overwrite: got True with resume=True"):
        batchlab.run(spec, out=tmp_path / "s", progress=False, resume=True, overwrite=True)
