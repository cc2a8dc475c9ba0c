"""The store: one transaction per epoch, compact step losses, NaN kept as missing, nothing overwritten."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from batchlab.errors import BatchlabError
from batchlab.store.db import EpochRow, GroupCheckpoint, RunInfo, Store


def make_store(tmp_path):
    store = Store.create(tmp_path / "s", meta={"spec": {"epochs": 2}})
    store.add_runs([(RunInfo("r1", "g", 2, 0.1, 0, 0, 0, 5, 3, 2), {"epochs": 2}),
                    (RunInfo("r2", "g", 2, 0.1, 1, 1, 1, 5, 3, 2), {"epochs": 2})], versions={"jax": "x"},
                   device="cpu:test")
    store.publish()
    return store


def row(run_id, epoch, losses, train_loss=1.0):
    return EpochRow(run_id, epoch, 3 * epoch, 5 * epoch, 0.1 * epoch, train_loss, 0.5, 1.1, 0.4,
                    np.asarray(losses, np.float32))


def test_round_trip_of_epochs_and_step_losses(tmp_path):
    store = make_store(tmp_path)
    store.write_epoch([row("r1", 0, []), row("r2", 0, [])], compile_time_s=0.5)
    store.write_epoch([row("r1", 1, [3.0, 2.0, 1.5]), row("r2", 1, [3.0, 2.5, 2.0])])
    store.write_epoch([row("r1", 2, [1.0, 0.5, 0.25]), row("r2", 2, [np.nan, np.inf, 1.0], train_loss=np.nan)],
                      diverged=["r2"])
    store.finish_runs(["r1", "r2"], status="completed")
    store.close()
    s = Store.open(tmp_path / "s")
    runs = {r["run_id"]: r for r in s.runs()}
    assert runs["r1"]["status"] == "completed" and runs["r1"]["epochs_done"] == 2
    assert runs["r2"]["status"] == "diverged" and runs["r2"]["diverged_epoch"] == 2
    assert runs["r1"]["compile_time_s"] == 0.5 and runs["r1"]["total_updates"] == 6
    epochs, losses = s.step_losses("r1")
    np.testing.assert_array_equal(epochs, [1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(losses, np.float32([3.0, 2.0, 1.5, 1.0, 0.5, 0.25]))
    e = s.epochs("r2")
    assert list(e["epoch"]) == [0, 1, 2] and np.isnan(e["train_loss"][2])
    assert np.isinf(s.step_losses("r2")[1][4])
    assert s.meta()["spec"] == {"epochs": 2}


def test_a_failed_epoch_transaction_leaves_no_partial_epoch(tmp_path):
    store = make_store(tmp_path)
    store.write_epoch([row("r1", 0, [])])
    with pytest.raises(sqlite3.IntegrityError):
        store.write_epoch([row("r1", 1, [1.0, 2.0, 3.0]), row("r1", 0, [])])  # duplicate key: rolled back
    assert list(store.epochs("r1")["epoch"]) == [0]
    assert len(store.step_losses("r1")[1]) == 0


def test_an_existing_study_is_never_overwritten(tmp_path):
    make_store(tmp_path).close()
    before = (tmp_path / "s" / "study.db").read_bytes()
    with pytest.raises(BatchlabError, match="already holds a study"):
        Store.create(tmp_path / "s", meta={})
    assert (tmp_path / "s" / "study.db").read_bytes() == before
    with pytest.raises(BatchlabError, match="holds no study"):
        Store.open(tmp_path / "elsewhere")


def test_parameters_round_trip_in_layer_order(tmp_path):
    store = make_store(tmp_path)
    params = {"layer00/b": np.zeros(3), "layer00/w": np.ones((2, 3)), "layer01/b": np.zeros(1)}
    store.save_params("r1", params)
    loaded = store.load_params("r1")
    assert list(loaded) == list(params)
    np.testing.assert_array_equal(loaded["layer00/w"], params["layer00/w"])


def test_the_checkpoint_is_committed_with_its_epoch_and_replaced_by_the_next(tmp_path):
    store = make_store(tmp_path)
    assert store.checkpoint("g") is None
    leaves = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], np.int32)]
    store.write_epoch([row("r1", 0, [])], checkpoint=GroupCheckpoint("g", 0, 0.0, np.array([True, True]), leaves))
    later = [2 * leaves[0], leaves[1]]
    store.write_epoch([row("r1", 1, [1.0, 1.0, 1.0])],
                      checkpoint=GroupCheckpoint("g", 1, 0.5, np.array([True, False]), later))
    cp = store.checkpoint("g")
    assert (cp.epoch, cp.wall_time_s, list(cp.active)) == (1, 0.5, [True, False])
    np.testing.assert_array_equal(cp.leaves[0], later[0])
    assert cp.leaves[1].dtype == np.int32
