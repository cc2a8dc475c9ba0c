"""Regression: the task's loss and R² against independent computations, the `auto` inference rule, and CSV,
Parquet and NPZ files with a numeric target run end to end through `batchlab run`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import r2_score

from batchlab.data.dataset import Dataset
from batchlab.data.load import AUTO_MAX_CLASSES, decide_task, load_dataset
from batchlab.errors import BatchlabError
from batchlab.models.jax import make_model
from batchlab.models.params import unflatten_params
from batchlab.models.tasks import REGRESSION
from batchlab.runner.driver import run_study
from batchlab.spec import build_spec
from batchlab.store.db import Store
from batchlab.train.backends import group_run
from batchlab.train.contract import Group
from batchlab.train.jax_engine import evaluate
from batchlab.train.probes.jax import per_example_gradients

CPU = jax.devices("cpu")[0]


def houses(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three features and a price that depends on them linearly, plus noise, in its own units (~1e5)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    return x, 2e5 + 3e4 * x[:, 0] - 1e4 * x[:, 1] + 5e3 * rng.normal(size=n)


# ---------------------------------------------------------------------------------------------------------
# The task's functions.


def test_r_squared_and_squared_error_match_sklearn_and_numpy():
    rng = np.random.default_rng(0)
    y, pred = rng.normal(size=50).astype(np.float32), rng.normal(size=(50, 1)).astype(np.float32)
    np.testing.assert_allclose(REGRESSION.loss(pred, y), (pred[:, 0] - y) ** 2, rtol=1e-6)
    mse = np.mean(REGRESSION.score(pred, y))
    np.testing.assert_allclose(float(REGRESSION.metric(mse, y)), r2_score(y, pred[:, 0]), rtol=1e-5)


def regression_data(n: int = 11, n_test: int = 7, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + n_test, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=n + n_test)).astype(np.float32)
    return Dataset("lin", x[:n], y[:n], x[n:], y[n:], (), ("a", "b", "c"), task="regression")


def test_chunked_evaluation_gives_the_same_mse_and_r_squared(monkeypatch):
    data = regression_data(n=50)
    model = make_model("mlp", n_features=3, n_classes=1, hidden=(4,))
    params = jax.tree_util.tree_map(lambda a: a[0], model.init_replicas((0,)))
    whole = evaluate(model, params, data.x_train, data.y_train, task=REGRESSION)
    monkeypatch.setattr("batchlab.train.jax_engine.EVAL_CHUNK", 16)  # 50 rows: 4 chunks, the last one padded
    chunked = evaluate(model, params, data.x_train, data.y_train, task=REGRESSION)
    np.testing.assert_allclose(np.array(chunked), np.array(whole), rtol=1e-5)
    pred = np.asarray(model.apply(params, data.x_train))[:, 0]
    np.testing.assert_allclose(float(whole[0]), np.mean((pred - data.y_train) ** 2), rtol=1e-5)
    np.testing.assert_allclose(float(whole[1]), r2_score(data.y_train, pred), rtol=1e-4)


def test_one_full_batch_step_is_the_hand_derived_least_squares_gradient_step():
    """Linear model f = x w + b, loss mean (f - y)^2: grad_w = 2 x^T (f - y) / n, grad_b = 2 mean(f - y)."""
    data = regression_data()
    model = make_model("logreg", n_features=3, n_classes=1)
    run = group_run(model, data, Group(data.n_train, (0.1,), (0,), (0,)), 1, optimizer="sgd", momentum=0.9, device="cpu")
    records = []
    run.train(records.append)
    p0 = model.init_replicas((0,))["layer00"]
    w, b = np.asarray(p0["w"][0], np.float64), np.asarray(p0["b"][0], np.float64)
    x, y = data.x_train.astype(np.float64), data.y_train.astype(np.float64)
    residual = (x @ w + b)[:, 0] - y
    assert records[0].train_loss[0] == pytest.approx(np.mean(residual ** 2), rel=1e-5)
    assert records[0].step_losses.shape == (1, 0)
    assert records[1].step_losses[0, 0] == pytest.approx(np.mean(residual ** 2), rel=1e-5)
    final = run.final_params["layer00"]
    np.testing.assert_allclose(np.asarray(final["w"][0])[:, 0], w[:, 0] - 0.1 * 2 * x.T @ residual / len(y),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(final["b"][0]), b - 0.1 * 2 * residual.mean(), rtol=1e-5, atol=1e-6)


def test_per_example_gradients_use_the_squared_error():
    data = regression_data()
    model = make_model("logreg", n_features=3, n_classes=1)
    params = jax.tree_util.tree_map(lambda a: a[0], model.init_replicas((0,)))
    grads = per_example_gradients(model, params, data.x_train, data.y_train, task=REGRESSION)
    w, b = np.asarray(params["layer00"]["w"])[:, 0], float(params["layer00"]["b"][0])
    residual = data.x_train @ w + b - data.y_train
    # ravel_pytree order: layer00/b (1), then layer00/w (3, 1)
    np.testing.assert_allclose(grads[:, 0], 2 * residual, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads[:, 1:], 2 * residual[:, None] * data.x_train, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# The inference rule.


@pytest.mark.parametrize("target,task,why", [
    (np.array([0.5, 1.25, 2.0, 3.0]), "regression", "numbers that are not all integers"),
    (np.arange(AUTO_MAX_CLASSES + 1, dtype=float), "regression", f"more than {AUTO_MAX_CLASSES} classes"),
    (np.arange(AUTO_MAX_CLASSES, dtype=float), "classification", "integer-valued numbers with 20 distinct"),
    (np.arange(500), "classification", "integers with 500 distinct values"),
    (np.array(["a", "b", "a"]), "classification", "labels with 2 distinct values"),
    (np.array([True, False]), "classification", "booleans with 2 distinct values"),
])
def test_auto_infers_the_task_and_says_how_to_override(target, task, why):
    inferred, note = decide_task(target, "auto", source="column 'y' of d.csv")
    other = "classification" if task == "regression" else "regression"
    assert inferred == task
    assert note.startswith(f"task: inferred {task} from column 'y' of d.csv: ") and why in note
    assert note.endswith(f"to override, pass --task {other} (task = \"{other}\" in a study file)")
    assert "\n" not in note
    assert decide_task(target, task, source="y") == (task, None)  # an explicit task: no note


def test_classification_of_float_labels_and_regression_of_integers_are_explicit_choices(tmp_path):
    rows = "\n".join(f"{i % 7},{(i % 3) * 1.0},{i}" for i in range(30))
    path = tmp_path / "d.csv"
    path.write_text("a,label,count\n" + rows + "\n")
    d = load_dataset(build_spec({"dataset": str(path), "target": "label", "task": "classification",
                                 "features": "a"}))
    assert d.class_names == ("0", "1", "2")
    d = load_dataset(build_spec({"dataset": str(path), "target": "count", "task": "regression", "features": "a"}))
    assert d.task == "regression" and d.n_classes == 0 and d.n_outputs == 1 and d.y_train.dtype == np.float32
    assert d.target_mean == pytest.approx(np.mean(d.y_train * d.target_std + d.target_mean))
    np.testing.assert_allclose([d.y_train.mean(), d.y_train.std()], [0, 1], atol=1e-6)  # training statistics
    with pytest.raises(BatchlabError, match=r"^task: got 'regression'; allowed: classification or auto for a "
                                            r"built-in dataset"):
        build_spec({"dataset": "iris", "task": "regression"})


# ---------------------------------------------------------------------------------------------------------
# End to end: `batchlab run` on each format.


def write_file(fmt: str, directory: Path) -> Path:
    x, price = houses()
    if fmt == "csv":
        path = directory / "houses.csv"
        lines = ["area,rooms,age,y"] + [f"{a:.6f},{r:.6f},{g:.6f},{p:.2f}" for (a, r, g), p in zip(x, price)]
        path.write_text("\n".join(lines) + "\n")
    elif fmt == "parquet":
        path = directory / "houses.parquet"
        pq.write_table(pa.table({"area": x[:, 0], "rooms": x[:, 1], "age": x[:, 2], "y": price}), path)
    else:
        path = directory / "houses.npz"
        np.savez(path, X=x[:96], y=price[:96], X_test=x[96:], y_test=price[96:])
    return path


@pytest.fixture(scope="module", params=["csv", "parquet", "npz"])
def regression_run(request, tmp_path_factory):
    """`batchlab run --dataset FILE --target y --batch-sizes 1,full --epochs 3`: --task regression for Parquet
    and NPZ, --task auto (inferred) for CSV, which also writes the figures and the report."""
    fmt = request.param
    cwd = tmp_path_factory.mktemp(fmt)
    path = write_file(fmt, cwd)
    task = ("--task", "auto") if fmt == "csv" else ("--task", "regression")
    figures = () if fmt == "csv" else ("--no-figures",)
    p = subprocess.run([sys.executable, "-m", "batchlab.cli", "run", "--dataset", str(path), "--target", "y", *task,
                        "--batch-sizes", "1,full", "--epochs", "3", "--lr", "0.01", "--out", "study", *figures],
                       cwd=cwd, capture_output=True, text=True, timeout=300, check=False,
                       env={**os.environ, "BATCHLAB_NO_PIN": "1"})
    return fmt, p, cwd / "study"


def test_regression_file_runs_end_to_end_and_records_r_squared(regression_run):
    fmt, p, out = regression_run
    assert p.returncode == 0, p.stderr
    store = Store.open(out)
    try:
        meta, runs = store.meta(), store.runs()
        curves = {r["run_id"]: store.epochs(r["run_id"]) for r in runs}
        final = {r["run_id"]: unflatten_params(store.load_params(r["run_id"], kind="final")) for r in runs}
    finally:
        store.close()
    assert meta["dataset"]["task"] == "regression" and meta["dataset"]["n_classes"] == 0
    assert meta["spec"]["task"] == ("auto" if fmt == "csv" else "regression")  # as asked; the decision beside it
    assert [r["status"] for r in runs] == ["completed", "completed"]
    assert all(r["config"]["task"] == "regression" for r in runs)
    # R² (stored in test_acc) and the loss, recomputed from the final parameters with NumPy and scikit-learn
    data = load_dataset(build_spec({**meta["spec"], "task": "regression"}))
    assert data.target_std == pytest.approx(meta["dataset"]["target_std"])
    for run in runs:
        p_ = final[run["run_id"]]
        assert p_["layer01"]["w"].shape == (128, 1)  # one output
        h = np.maximum(data.x_test @ p_["layer00"]["w"] + p_["layer00"]["b"], 0)
        pred = (h @ p_["layer01"]["w"] + p_["layer01"]["b"])[:, 0]
        last = curves[run["run_id"]]
        assert last["test_acc"][-1] == pytest.approx(r2_score(data.y_test, pred), abs=1e-4)
        assert last["test_loss"][-1] == pytest.approx(np.mean((pred - data.y_test) ** 2), rel=1e-4)
        # the loss is MSE in units of the training variance: times std² it is the MSE in the target's units
        price_pred = pred * data.target_std + data.target_mean
        price_true = data.y_test.astype(np.float64) * data.target_std + data.target_mean
        assert last["test_loss"][-1] * data.target_std ** 2 == pytest.approx(
            np.mean((price_pred - price_true) ** 2), rel=1e-3)
        assert np.all(last["train_acc"][1:] <= 1) and np.isfinite(last["train_acc"]).all()
    best = max(c["test_acc"][-1] for c in curves.values())
    assert best > 0.5  # batch size 1 learns the linear relation within 3 epochs


def test_regression_output_says_r_squared_not_accuracy(regression_run):
    fmt, p, out = regression_run
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("R²") >= 2  # train and test columns (their headers may take two lines at 80 columns)
    assert "train acc" not in p.stdout and "accuracy" not in p.stdout
    notes = [line for line in p.stderr.splitlines() if "task:" in line]
    if fmt == "csv":
        assert notes == [("batchlab run: warning: task: inferred regression from column 'y' of houses.csv: it holds "
                          "numbers that are not all integers; to override, pass --task classification (task = "
                          "\"classification\" in a study file)")]
        page = (out / "report.html").read_text()
        assert "R²" in page and "squared error, standardized target" in page and "train acc" not in page
        assert len(list((out / "figures").glob("lena_*.png"))) == 2
    else:
        assert notes == []  # the task was given


def test_regression_divergence_noise_scale_and_sharpness_work_unchanged(tmp_path):
    x, price = houses(n=60)
    path = tmp_path / "d.npz"
    np.savez(path, X=x, y=price)
    spec = build_spec({"dataset": str(path), "task": "regression", "batch_sizes": "1,full", "epochs": 4,
                       "seeds": 2, "lr": 0.01, "device": "cpu", "gns_every": 2})
    run_study(spec, tmp_path / "ok")
    store = Store.open(tmp_path / "ok")
    try:
        runs, metrics = store.runs(), store.run_metrics()
        b_simple = [store.epochs(r["run_id"])["b_simple"] for r in runs]
    finally:
        store.close()
    assert all(np.isfinite(b[[0, 2, 4]]).all() and b[0] > 0 for b in b_simple)
    assert all(np.isfinite(metrics[r["run_id"]]["top_eigenvalue"]) for r in runs)
    run_study(build_spec({**spec.to_dict(), "lr": 50.0, "gns": "off", "sharpness": False}), tmp_path / "blown")
    store = Store.open(tmp_path / "blown")
    try:
        statuses = {r["batch_size"]: r["status"] for r in store.runs()}
    finally:
        store.close()
    assert statuses[1] == "diverged"
