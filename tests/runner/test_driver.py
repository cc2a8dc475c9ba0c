"""A study end to end through the store: controlled starts, an independent NumPy check, divergence, Ctrl-C."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from batchlab.data.load import load_dataset
from batchlab.runner.driver import run_study
from batchlab.spec import BLOWUP_FACTOR, StudySpec
from batchlab.store.db import Store


def numpy_mlp_full_batch(params: dict[str, np.ndarray], x, y, x_test, y_test, *, lr: float, epochs: int):
    """Full-batch gradient descent on a one-hidden-layer ReLU MLP, written from scratch in float64."""
    w0, b0, w1, b1 = (params[k].astype(np.float64) for k in ("layer00/w", "layer00/b", "layer01/w", "layer01/b"))
    onehot = np.eye(w1.shape[1])[y]

    def loss(x_, y_):
        z = np.maximum(x_ @ w0 + b0, 0) @ w1 + b1
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y_)), y_]))

    train_losses, test_losses = [loss(x, y)], [loss(x_test, y_test)]
    for _ in range(epochs):
        pre = x @ w0 + b0
        h = np.maximum(pre, 0)
        z = h @ w1 + b1
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        dz = (p - onehot) / len(y)
        dh = (dz @ w1.T) * (pre > 0)
        w1, b1, w0, b0 = w1 - lr * h.T @ dz, b1 - lr * dz.sum(0), w0 - lr * x.T @ dh, b0 - lr * dh.sum(0)
        train_losses.append(loss(x, y))
        test_losses.append(loss(x_test, y_test))
    return np.array(train_losses), np.array(test_losses)


@pytest.fixture(scope="module")
def iris_study(tmp_path_factory) -> tuple[StudySpec, Path]:
    spec = StudySpec(dataset="iris", hidden=(16,), batch_sizes=(1, 7, 8, "full"), epochs=20, seeds=2, lr=0.1,
                     device="cpu")
    out = tmp_path_factory.mktemp("study") / "iris"
    result = run_study(spec, out)
    assert result.completed
    return spec, out


def test_full_batch_training_equals_an_independent_numpy_implementation(iris_study):
    spec, out = iris_study
    data = load_dataset(spec)
    store = Store.open(out)
    full = [r for r in store.runs() if r["batch_size"] == data.n_train]
    assert len(full) == 2
    for run in full:
        ours = store.epochs(run["run_id"])
        train, test = numpy_mlp_full_batch(store.load_params(run["run_id"]), data.x_train.astype(np.float64),
                                           data.y_train, data.x_test.astype(np.float64), data.y_test, lr=spec.lr,
                                           epochs=spec.epochs)
        np.testing.assert_allclose(ours["train_loss"], train, rtol=2e-5)
        np.testing.assert_allclose(ours["test_loss"], test, rtol=2e-5)
        # The full batch's single step per epoch sees the loss at the start of that epoch.
        _, step_losses = store.step_losses(run["run_id"])
        np.testing.assert_allclose(step_losses, train[:-1], rtol=2e-5)


def test_every_batch_size_of_a_seed_starts_from_identical_parameters(iris_study):
    _, out = iris_study
    store = Store.open(out)
    runs = store.runs()
    by_seed: dict[int, list[dict[str, np.ndarray]]] = {}
    for r in runs:
        by_seed.setdefault(r["seed"], []).append(store.load_params(r["run_id"]))
        assert store.epochs(r["run_id"])["epoch"][0] == 0
    assert sorted(by_seed) == [0, 1] and all(len(v) == 4 for v in by_seed.values())
    for params in by_seed.values():
        for other in params[1:]:
            assert list(other) == ["layer00/b", "layer00/w", "layer01/b", "layer01/w"]
            for k in params[0]:
                np.testing.assert_array_equal(params[0][k], other[k])
    assert not np.array_equal(by_seed[0][0]["layer00/w"], by_seed[1][0]["layer00/w"])
    assert by_seed[0][0]["layer00/w"].shape == (4, 16)  # (fan_in, fan_out)
    epoch0 = {r["seed"]: set() for r in runs}
    for r in runs:
        epoch0[r["seed"]].add(float(store.epochs(r["run_id"])["train_loss"][0]))
    assert all(len(v) == 1 for v in epoch0.values())


def test_runs_record_their_config_seeds_versions_and_device(iris_study):
    spec, out = iris_study
    store = Store.open(out)
    for r in store.runs():
        assert r["status"] == "completed" and r["epochs_done"] == spec.epochs
        assert r["config"]["batch_size"] == r["batch_size"] and r["config"]["dataset"] == "iris"
        assert r["init_seed"] == r["seed"] and r["order_seed"] == r["config"]["order_seed"]
        assert r["versions"]["jax"] and r["device"].startswith("cpu")
        assert r["total_updates"] == spec.epochs * r["updates_per_epoch"]
        assert r["examples_seen"] == spec.epochs * r["n_train"]
        assert r["compile_time_s"] > 0 and r["wall_time_s"] > 0
        steps = store.step_losses(r["run_id"])[1]
        assert steps.dtype == np.float32 and len(steps) == r["total_updates"]
    assert (out / "final").is_dir() and len(list((out / "final").glob("*.npz"))) == 8


def test_same_config_and_seed_give_identical_numbers(tmp_path):
    spec = StudySpec(dataset="wine", batch_sizes=(4, "full"), epochs=3, device="cpu")
    run_study(spec, tmp_path / "a")
    run_study(spec, tmp_path / "b")
    a, b = Store.open(tmp_path / "a"), Store.open(tmp_path / "b")
    assert [r["run_id"] for r in a.runs()] == [r["run_id"] for r in b.runs()]
    for r in a.runs():
        ea, eb = a.epochs(r["run_id"]), b.epochs(r["run_id"])
        for k in ("train_loss", "test_loss", "train_acc", "test_acc"):
            np.testing.assert_array_equal(ea[k], eb[k])
        np.testing.assert_array_equal(a.step_losses(r["run_id"])[1], b.step_losses(r["run_id"])[1])


def test_a_diverging_run_is_recorded_as_diverged_and_the_others_finish(tmp_path):
    # At lr 3 single-example steps blow the MLP's weights up (to losses of 1e27 and then inf); the full batch's
    # averaged steps do not. Issue 10: a train loss above BLOWUP_FACTOR x its initial value counts, finite or not.
    spec = StudySpec(dataset="iris", batch_sizes=(1, "full"), epochs=30, lr=3.0, device="cpu")
    run_study(spec, tmp_path / "s")
    store = Store.open(tmp_path / "s")
    runs = {r["batch_size"]: r for r in store.runs()}
    diverged = runs[1]
    assert diverged["status"] == "diverged" and 1 <= diverged["diverged_epoch"] < 30
    assert diverged["epochs_done"] == diverged["diverged_epoch"]
    assert len(store.epochs(diverged["run_id"])["epoch"]) == diverged["diverged_epoch"] + 1
    last = store.epochs(diverged["run_id"])
    blown = last["train_loss"][-1] > BLOWUP_FACTOR * last["train_loss"][0]
    assert blown or not np.isfinite(store.step_losses(diverged["run_id"])[1]).all()
    assert (last["train_loss"][1:-1] <= BLOWUP_FACTOR * last["train_loss"][0]).all()  # not before
    assert runs[120]["status"] == "completed" and runs[120]["epochs_done"] == 30


def test_ctrl_c_stops_after_the_current_epoch_and_keeps_finished_epochs(tmp_path):
    out = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-m", "batchlab.cli", "run", "--batch-sizes", "1", "--epochs", "100000",
                             "--out", str(out), "--no-figures"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with sqlite3.connect(out / "study.db") as con:
                if con.execute("SELECT COUNT(*) FROM epochs").fetchone()[0] >= 3:
                    break
        except sqlite3.OperationalError:
            pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr  # 128 + SIGINT, after saving (issue 12; it was 0)
    assert "Traceback" not in stderr and "Interrupted" in stderr
    run = Store.open(out).runs()[0]
    assert run["status"] == "interrupted" and 3 <= run["epochs_done"] < 100000
    epochs = Store.open(out).epochs(run["run_id"])
    assert list(epochs["epoch"]) == list(range(run["epochs_done"] + 1))
    assert run["run_id"] in stdout


def test_replicas_that_do_not_fit_the_memory_budget_train_in_chunks_with_the_same_results(tmp_path):
    spec = StudySpec(dataset="iris", batch_sizes=(8,), epochs=3, seeds=5, device="cpu")
    run_study(spec, tmp_path / "one")
    run_study(spec, tmp_path / "chunked", memory_budget=1)  # one replica per chunk
    one, chunked = Store.open(tmp_path / "one"), Store.open(tmp_path / "chunked")
    assert one.meta()["replica_chunks"] == [5] and chunked.meta()["replica_chunks"] == [1] * 5
    for r in one.runs():
        np.testing.assert_allclose(one.epochs(r["run_id"])["test_loss"], chunked.epochs(r["run_id"])["test_loss"],
                                   rtol=1e-5)
        assert chunked.runs()[0]["status"] == "completed"
