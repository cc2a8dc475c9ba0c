"""The PyTorch backend against the JAX engine: the same MLP from the same initial parameters and data order gives
the same losses; its optimizers are torch.optim's; checkpoints, divergence and the store behave as for JAX."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is an optional extra: pip install 'batchlab[torch]'")

from batchlab.data.dataset import Dataset
from batchlab.data.load import load_dataset
from batchlab.errors import BatchlabError
from batchlab.models.jax import make_model
from batchlab.models.params import flatten_params
from batchlab.models.registry import load_user_model
from batchlab.models.torch import mlp_params_to_torch
from batchlab.runner.driver import run_study
from batchlab.spec import StudySpec, build_spec
from batchlab.store.db import Store
from batchlab.train.backends import group_run
from batchlab.train.contract import Group
from batchlab.train.torch_engine import Optimizer
from tests.paths import REPO

TORCH_MLP = "torch:tests/fixtures/torch_mlp.py"
CPU = jax.devices("cpu")[0]


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset(StudySpec(dataset="digits"))


def train_both(data: Dataset, group: Group, *, optimizer: str, epochs: int, n_outputs: int | None = None):
    """Records of the built-in MLP (JAX) and of its PyTorch twin started from the JAX initial parameters."""
    n_outputs = n_outputs or data.n_classes
    jax_model = make_model("mlp", n_features=data.n_features, n_classes=n_outputs)
    torch_model = load_user_model(f"{TORCH_MLP}:mlp", n_features=data.n_features, n_classes=n_outputs)
    initial = mlp_params_to_torch(flatten_params(jax_model.init_replicas(group.init_seeds)))
    ours, theirs = [], []
    group_run(jax_model, data, group, epochs, optimizer=optimizer, momentum=0.9, device="cpu").train(ours.append)
    group_run(torch_model, data, group, epochs, optimizer=optimizer, momentum=0.9, device="cpu").train(theirs.append, initial_params=initial)
    return ours, theirs


def assert_records_agree(jax_records, torch_records, *, n_test: int, rtol: float = 1e-5):
    assert len(jax_records) == len(torch_records)
    for a, b in zip(jax_records, torch_records):
        assert (a.epoch, a.updates, a.examples_seen) == (b.epoch, b.updates, b.examples_seen)
        assert a.step_losses.shape == b.step_losses.shape
        np.testing.assert_allclose(b.step_losses, a.step_losses, rtol=rtol, atol=1e-6, err_msg=f"epoch {a.epoch}")
        for field in ("train_loss", "test_loss"):
            np.testing.assert_allclose(getattr(b, field), getattr(a, field), rtol=rtol, err_msg=field)
        # An example whose two largest logits are within rounding may flip: allow one per set.
        np.testing.assert_allclose(b.test_acc, a.test_acc, atol=1.01 / n_test)
        assert not a.diverged.any() and not b.diverged.any()


@pytest.mark.parametrize("optimizer,lrs", [("sgd", (0.03, 0.01)), ("momentum", (0.01, 0.003))])
@pytest.mark.parametrize("batch_size", [479, 1437, 100, 32], ids=["479-divides", "full-divides", "100-partial",
                                                                  "32-partial"])
def test_the_same_mlp_from_the_same_start_gives_the_same_losses_in_jax_and_pytorch(digits, batch_size, optimizer,
                                                                                     lrs):
    """Digits (N = 1437 = 3 x 479), MLP 64-128-10, two replicas with their own rates and data orders; within
    float32 rounding (observed: relative differences ~2e-7 in the epoch losses, up to ~1e-6 in step losses)."""
    group = Group(batch_size, lrs, (0, 1), (0, 1))
    ours, theirs = train_both(digits, group, optimizer=optimizer, epochs=3)
    assert (ours[-1].train_loss < ours[0].train_loss).all()  # it trained, so the comparison bites
    assert_records_agree(ours, theirs, n_test=len(digits.y_test))


@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
@pytest.mark.parametrize("batch_size", [1, 100])
def test_a_one_replica_group_trains_its_module_in_place_to_the_same_losses(digits, batch_size, optimizer):
    """One replica under SGD or momentum takes the in-place loop (`TorchBackend._epoch_in_place`): the same
    numbers as the JAX engine, at batch size 1 and with a partial last batch."""
    group = Group(batch_size, (0.01 if optimizer == "sgd" else 0.002,), (3,), (5,))  # momentum 0.9: lr / 10
    ours, theirs = train_both(digits, group, optimizer=optimizer, epochs=1 if batch_size == 1 else 3)
    assert (ours[-1].train_loss < ours[0].train_loss).all()
    assert_records_agree(ours, theirs, n_test=len(digits.y_test), rtol=2e-5)


def test_a_one_replica_group_resumes_exactly_in_place(digits):
    model = load_user_model(f"{TORCH_MLP}:make", n_features=64, n_classes=10)
    group = Group(100, (0.02,), (0,), (1,))
    straight, first, rest = [], [], []
    uninterrupted = group_run(model, digits, group, 4, optimizer="momentum", momentum=0.9, device="cpu")
    uninterrupted.train(straight.append)
    stopped = group_run(model, digits, group, 4, optimizer="momentum", momentum=0.9, device="cpu")
    assert not stopped.train(first.append, should_stop=lambda: len(first) == 2, checkpoints=True)
    resumed = group_run(model, digits, group, 4, optimizer="momentum", momentum=0.9, device="cpu")
    assert resumed.train(rest.append, resume=first[-1].checkpoint)
    for a, b in zip(straight[3:], rest):
        np.testing.assert_array_equal(a.step_losses, b.step_losses)
        np.testing.assert_array_equal(a.test_loss, b.test_loss)
    np.testing.assert_array_equal(resumed.final_params["2.weight"], uninterrupted.final_params["2.weight"])
    assert first[1].checkpoint is not None and first[-1].checkpoint.leaves[0] is not first[1].checkpoint.leaves[0]


def test_adam_agrees_too(digits):
    ours, theirs = train_both(digits, Group(100, (0.001,), (0,), (0,)), optimizer="adam", epochs=2)
    assert_records_agree(ours, theirs, n_test=len(digits.y_test))


def test_warmup_ramps_the_rate_as_the_engine_does(digits):
    group = Group(100, (0.05,), (0,), (0,), warmup_from=(0.01,), warmup_epochs=2)
    ours, theirs = train_both(digits, group, optimizer="sgd", epochs=3)
    assert_records_agree(ours, theirs, n_test=len(digits.y_test))


def test_regression_losses_and_r_squared_agree(digits):
    if "task" not in {f.name for f in dataclasses.fields(Dataset)}:
        pytest.skip("this Dataset has no regression task")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 5)).astype(np.float32)
    y = (x @ rng.normal(size=5) + 0.1 * rng.normal(size=90)).astype(np.float32)
    data = Dataset("linear", x[:70], y[:70], x[70:], y[70:], (), tuple("abcde"), task="regression")
    ours, theirs = train_both(data, Group(16, (0.01,), (0,), (0,)), optimizer="sgd", epochs=3, n_outputs=1)
    assert ours[-1].test_acc[0] > ours[0].test_acc[0]  # R^2 improved
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(b.train_loss, a.train_loss, rtol=1e-5)
        np.testing.assert_allclose(b.test_acc, a.test_acc, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(b.step_losses, a.step_losses, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_the_optimizers_equal_torch_optim(name):
    """optax's definitions, written out, equal torch.optim's SGD (dampening 0) and Adam (eps outside the root).
    Adam's bias corrections 1 - b^t are float32 as in optax (torch.optim: float64), hence rtol 2e-5 for Adam."""
    rng = np.random.default_rng(1)
    start = {"w": rng.normal(size=(2, 3)).astype(np.float32)}
    grads = [rng.normal(size=(2, 3)).astype(np.float32) for _ in range(6)]
    lr = 0.05
    ours = Optimizer(name, 0.9)
    params = {"w": torch.tensor(start["w"])[None]}
    state = ours.init(params)
    reference = torch.nn.Parameter(torch.tensor(start["w"]))
    optim = {"sgd": lambda p: torch.optim.SGD(p, lr=lr),
             "momentum": lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9, dampening=0),
             "adam": lambda p: torch.optim.Adam(p, lr=lr, betas=(0.9, 0.999), eps=1e-8)}[name]([reference])
    for g in grads:
        params, state = ours.step(params, {"w": torch.tensor(g)[None]}, torch.tensor([lr]), state)
        reference.grad = torch.tensor(g)
        optim.step()
    np.testing.assert_allclose(params["w"][0].numpy(), reference.detach().numpy(), rtol=2e-5 if name == "adam"
                               else 1e-6, atol=1e-7)


def test_resuming_from_a_checkpoint_continues_exactly(digits):
    model = load_user_model(f"{TORCH_MLP}:make", n_features=64, n_classes=10)
    group = Group(64, (0.01, 0.02), (0, 1), (0, 1))
    straight, first, rest = [], [], []
    uninterrupted = group_run(model, digits, group, 4, optimizer="adam", momentum=0.9, device="cpu")
    uninterrupted.train(straight.append)
    stopped = group_run(model, digits, group, 4, optimizer="adam", momentum=0.9, device="cpu")
    assert not stopped.train(first.append, should_stop=lambda: len(first) == 2, checkpoints=True)
    assert [r.epoch for r in first] == [0, 1, 2]
    resumed = group_run(model, digits, group, 4, optimizer="adam", momentum=0.9, device="cpu")
    assert resumed.train(rest.append, resume=first[-1].checkpoint)
    assert [r.epoch for r in rest] == [3, 4]
    for a, b in zip(straight[3:], rest):
        np.testing.assert_array_equal(a.step_losses, b.step_losses)
        np.testing.assert_array_equal(a.test_loss, b.test_loss)
    np.testing.assert_array_equal(resumed.final_params["2.weight"], uninterrupted.final_params["2.weight"])


def test_a_diverging_replica_is_recorded_and_its_neighbour_trains_on(digits):
    model = load_user_model(f"{TORCH_MLP}:mlp", n_features=64, n_classes=10)  # ReLU: a huge step overflows
    records = []
    group_run(model, digits, Group(100, (0.01, 1e30), (0, 0), (0, 0)), 3, optimizer="sgd", momentum=0.9, device="cpu").train(records.append)
    assert [r.epoch for r in records if r.diverged[1]] == [1]
    assert not any(r.diverged[0] for r in records) and len(records) == 4
    assert records[-1].active.tolist() == [True, False]
    assert np.isfinite(records[-1].train_loss[0])


BAD_TORCH = [
    ("buffers", "with_buffers", ("has buffers (1.running_mean, 1.running_var, 1.num_batches_tracked); allowed: "
                                 "a module without buffers")),
    ("not-a-module", "not_a_module", "returned a builtins.function; allowed: a torch.nn.Module"),
    ("wrong-output", "wrong_outputs", ("its forward returned (2, 5) for a batch of shape (2, 4); allowed: logits "
                                       "of shape (2, 3)")),
]


@pytest.mark.parametrize("function,message", [pytest.param(f, m, id=i) for i, f, m in BAD_TORCH])
def test_a_bad_torch_model_is_one_line_and_nothing_is_written(function, message, tmp_path):
    spec = build_spec({"dataset": "iris", "model": f"{TORCH_MLP}:{function}", "epochs": 1, "device": "cpu"})
    with pytest.raises(BatchlabError) as e:
        run_study(spec, tmp_path / "study")
    assert str(e.value).startswith(f"model: {TORCH_MLP}:{function}") and "\n" not in str(e.value)
    assert message in str(e.value), str(e.value)
    assert not (tmp_path / "study").exists()


def test_a_user_pytorch_model_file_runs_a_two_batch_size_study_from_the_command_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "batchlab.cli", "run", "--model", f"{TORCH_MLP}:make",
                        "--batch-sizes", "1,full", "--dataset", "iris", "--epochs", "3", "--seeds", "2",
                        "--no-figures", "--out", str(tmp_path / "study")], check=False, cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    store = Store.open(tmp_path / "study")
    assert store.meta()["model"] == ("TorchModel('torch:tests/fixtures/torch_mlp.py:make', PyTorch Sequential, "
                                     "131 parameters)")
    runs = store.runs()
    assert sorted((r["batch_size"], r["seed"], r["status"]) for r in runs) == [
        (1, 0, "completed"), (1, 1, "completed"), (120, 0, "completed"), (120, 1, "completed")]
    model = load_user_model(f"{TORCH_MLP}:make", n_features=4, n_classes=3)
    for r in runs:
        init = store.load_params(r["run_id"])
        assert list(init) == ["0.bias", "0.weight", "2.bias", "2.weight"]
        built = dict(model.build(r["seed"]).named_parameters())  # torch.manual_seed(init seed), then the factory
        for name, value in init.items():
            np.testing.assert_array_equal(value, built[name].detach().numpy())
        epochs = store.epochs(r["run_id"])
        assert len(epochs["epoch"]) == 4
        assert np.isfinite(epochs["b_simple"][[0, 3]]).all()  # measured at epoch 0 and the last (gns_every 10)
        assert np.isnan(epochs["b_simple"][[1, 2]]).all()
        assert epochs["train_loss"][-1] < epochs["train_loss"][0]
        assert not np.array_equal(store.load_params(r["run_id"], kind="final")["0.weight"], init["0.weight"])
    by_seed = {}
    for r in runs:
        by_seed.setdefault(r["seed"], []).append(store.load_params(r["run_id"])["0.weight"])
    assert np.array_equal(*by_seed[0]) and not np.array_equal(by_seed[0][0], by_seed[1][0])
    metrics = store.run_metrics()
    assert sorted(metrics) == sorted(r["run_id"] for r in runs)
    assert all(m["top_eigenvalue"] > 0 and m["curvature_examples"] == 120 for m in metrics.values())
    assert len(store.step_losses(next(r["run_id"] for r in runs if r["batch_size"] == 1))[1]) == 3 * 120


@pytest.mark.parametrize("name", ["make", "Net"])
def test_a_plain_pytorch_factory_or_class_runs_without_a_prefix(name, tmp_path):
    """Issue 9: `def make(): return Net()` and `class Net(nn.Module)`, named as `mynet.py:make` / `mynet.py:Net`
    from the directory holding the file, are recognised as PyTorch and run a two-batch-size study on digits."""
    out = tmp_path / "study"
    p = subprocess.run([sys.executable, "-m", "batchlab.cli", "run", "--dataset", "digits", "--model", f"mynet.py:{name}",
                        "--batch-sizes", "32,full", "--epochs", "2", "--no-figures", "--out", str(out)], check=False,
                       cwd=REPO / "tests" / "fixtures", capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    store = Store.open(out)
    try:
        assert store.meta()["model"].startswith(f"TorchModel('mynet.py:{name}', PyTorch Net, 2,410 parameters")
        assert sorted((r["batch_size"], r["status"]) for r in store.runs()) == [(32, "completed"), (1437, "completed")]
        assert all(store.epochs(r["run_id"])["train_loss"][-1] < store.epochs(r["run_id"])["train_loss"][0]
                   for r in store.runs())
    finally:
        store.close()


def test_a_factory_gets_only_the_arguments_it_declares(monkeypatch):
    monkeypatch.chdir(REPO / "tests" / "fixtures")
    model = load_user_model("mynet.py:sized", n_features=64, n_classes=10, input_shape=(8, 8))
    assert model.backend == "torch" and model.arguments["input_shape"] == (8, 8)
    assert tuple(model.build(0)(torch.zeros(3, 64)).shape) == (3, 10)
