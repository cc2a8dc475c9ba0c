"""Curvature during training (`sharpness_every`) against known answers: the batch sharpness of a quadratic with
known minibatch Hessians, and for least squares (a linear model with squared error, whose Hessian on a batch is
(2 / B) [x 1]^T [x 1]) the top eigenvalue, trace and batch sharpness against NumPy's linear algebra."""

from __future__ import annotations

import numpy as np
import pytest

from batchlab.data.dataset import Dataset
from batchlab.errors import BatchlabError
from batchlab.models.jax import make_model
from batchlab.models.tasks import REGRESSION
from batchlab.train import measure
from batchlab.train.measure import microbatch_index, sharpness_during_training
from batchlab.train.probes.curvature import batch_sharpness
from batchlab.train.probes.jax import JaxProbes


def test_batch_sharpness_of_a_quadratic_with_known_minibatch_hessians():
    # Minibatch losses L_B(theta) = 1/2 theta' A_B theta: g_B = A_B theta, H_B = A_B.
    theta = np.array([1.0, 2.0])
    hessians = [np.diag([4.0, 1.0]), np.array([[2.0, 1.0], [1.0, 3.0]])]
    grads = np.stack([a @ theta for a in hessians])  # (4, 2) and (4, 7)
    products = np.stack([a @ g for a, g in zip(hessians, grads)])
    # g' A g / |g|^2: (4*16 + 1*4) / 20 = 3.4 and (2*16 + 2*28 + 3*49) / 65 = 235 / 65
    assert batch_sharpness(grads, products) == pytest.approx((3.4 + 235 / 65) / 2)
    # a zero gradient carries no direction; an eigenvector gives its eigenvalue exactly
    assert batch_sharpness(np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([[5.0, 5.0], [4.0, 0.0]])) == 4.0
    with pytest.raises(BatchlabError):
        batch_sharpness(grads, products[:1])


def least_squares(n: int = 24, f: int = 3, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + 4, f)).astype(np.float32) * np.array([1.0, 2.0, 0.5], np.float32)
    y = (x @ np.array([1.0, -1.0, 2.0]) + rng.normal(size=n + 4)).astype(np.float32)
    return Dataset("ls", x[:n], y[:n], x[n:], y[n:], (), tuple(f"f{i}" for i in range(f)), task="regression")


def test_least_squares_curvature_equals_numpy(monkeypatch):
    data = least_squares()
    model = make_model("logreg", n_features=3, n_classes=1)
    probes = JaxProbes(model, REGRESSION)
    stacked = model.init_replicas((0, 1))
    monkeypatch.setattr(measure, "SHARPNESS_TRACE_SAMPLES", 400)
    rows = sharpness_during_training(probes, data, stacked, np.array([True, False]), batch_size=6, seed=3)
    assert rows[1] is None
    top, trace, batch = rows[0]

    xa = np.hstack([data.x_train, np.ones((24, 1))]).astype(np.float64)
    hessian = 2.0 / 24 * xa.T @ xa
    assert top == pytest.approx(np.linalg.eigvalsh(hessian)[-1], rel=1e-4)
    assert trace == pytest.approx(np.trace(hessian), rel=0.15)  # Hutchinson, 400 vectors

    params = {k: np.asarray(v[0], np.float64) for k, v in stacked["layer00"].items()}
    w = np.append(params["w"][:, 0], params["b"][0])
    expected = []
    for rows_b in microbatch_index(24, microbatch_size=6, k=4, seed=3):  # 4 = min(SHARPNESS_BATCHES, 24 // 6)
        xb, yb = xa[rows_b], data.y_train[rows_b].astype(np.float64)
        g = 2.0 / 6 * xb.T @ (xb @ w - yb)
        h = 2.0 / 6 * xb.T @ xb
        expected.append(g @ h @ g / (g @ g))
    assert batch == pytest.approx(np.mean(expected), rel=1e-4)
    assert batch != pytest.approx(top, rel=1e-2)  # batch sharpness is its own quantity


@pytest.mark.slow
def test_the_pytorch_twin_measures_the_same_sharpness(monkeypatch):
    pytest.importorskip("torch")
    from batchlab.models.params import flatten_params
    from batchlab.models.registry import load_user_model
    from batchlab.models.torch import mlp_params_to_torch
    from batchlab.train.probes.torch import TorchProbes
    from tests.paths import REPO

    monkeypatch.chdir(REPO)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    data = Dataset("t", x[:48], (np.arange(48) % 3).astype(np.int32), x[48:], (np.arange(12) % 3).astype(np.int32),
                   ("a", "b", "c"), ("f0", "f1", "f2", "f3"))
    jax_model = make_model("mlp", n_features=4, n_classes=3)
    torch_model = load_user_model("torch:tests/fixtures/torch_mlp.py:mlp", n_features=4, n_classes=3)
    stacked = jax_model.init_replicas((0,))
    ours = sharpness_during_training(JaxProbes(jax_model), data, stacked, np.array([True]), batch_size=8)[0]
    torch_stacked = {k: np.asarray(v) for k, v in mlp_params_to_torch(flatten_params(stacked)).items()}
    theirs = sharpness_during_training(TorchProbes(torch_model, regression=False, device="cpu"), data, torch_stacked,
                                       np.array([True]), batch_size=8)[0]
    assert ours is not None and theirs is not None
    assert theirs[0] == pytest.approx(ours[0], rel=1e-3)  # top eigenvalue
    assert theirs[2] == pytest.approx(ours[2], rel=1e-3)  # batch sharpness
