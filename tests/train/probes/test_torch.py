"""PyTorch measurements against the JAX ones on the same network and parameters, and against an exact Hessian."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is an optional extra: pip install 'batchlab[torch]'")

from batchlab.data.load import load_dataset
from batchlab.models.jax import make_model
from batchlab.models.params import flatten_params
from batchlab.models.registry import load_user_model
from batchlab.models.torch import mlp_params_to_torch
from batchlab.spec import StudySpec
from batchlab.train.backends import probes_for
from batchlab.train.measure import GroupMeasurements
from tests.paths import REPO


@pytest.fixture(scope="module")
def twins():
    """Iris, batchlab's MLP 4-128-3 and its PyTorch twin, two replicas with the JAX initial parameters."""
    data = load_dataset(StudySpec(dataset="iris"))
    jax_model = make_model("mlp", n_features=4, n_classes=3)
    torch_model = load_user_model(f"torch:{REPO}/tests/fixtures/torch_mlp.py:mlp", n_features=4, n_classes=3)
    stacked = jax_model.init_replicas((0, 1))
    return data, jax_model, torch_model, stacked, mlp_params_to_torch(flatten_params(stacked))


@pytest.mark.parametrize("mode", ["exact", "estimate"])
def test_the_gradient_noise_scale_equals_the_jax_measurement(twins, mode):
    data, jax_model, torch_model, stacked, torch_params = twins
    active = np.array([True, True])
    ours = GroupMeasurements(probes_for(torch_model, data, device="cpu"), data, gns=mode).gns(torch_params, active)
    theirs = GroupMeasurements(probes_for(jax_model, data), data, gns=mode).gns(stacked, active)
    for a, b in zip(ours, theirs):
        assert np.isfinite([a[0], a[3], a[4]]).all() and a[0] > 0  # B_simple, |G|^2, tr(Sigma)
        assert np.isnan(a[1:3]).all() if mode == "exact" else a[1] <= a[0] <= a[2]  # exact mode has no interval
        np.testing.assert_allclose(a, b, rtol=2e-4)


def test_curvature_matches_the_exact_hessian_and_the_jax_probe(twins):
    data, jax_model, torch_model, stacked, torch_params = twins
    measure = GroupMeasurements(probes_for(torch_model, data, device="cpu"), data, gns="off")
    ours = measure.end_of_training(torch_params, np.array([True, False]), eps_sharpness=False)
    assert ours[1] == {}  # a diverged replica is not measured
    theirs = GroupMeasurements(probes_for(jax_model, data), data, gns="off").end_of_training(stacked, np.array([True, False]),
                                                                          eps_sharpness=False)
    np.testing.assert_allclose(ours[0]["top_eigenvalue"], theirs[0]["top_eigenvalue"], rtol=1e-3)
    probes = measure.probes
    theta = probes.flat_params({k: v[0] for k, v in torch_params.items()})
    x, y = probes.data(data.x_train, data.y_train)
    hessian = torch.func.jacrev(torch.func.jacrev(probes.loss))(theta, x, y).double().numpy()  # no forward mode
    eigenvalues = np.linalg.eigvalsh((hessian + hessian.T) / 2)
    np.testing.assert_allclose(ours[0]["top_eigenvalue"], eigenvalues[np.argmax(np.abs(eigenvalues))], rtol=1e-3)
    exact_trace = float(np.trace(hessian))
    assert abs(ours[0]["hessian_trace"] - exact_trace) < 4 * ours[0]["hessian_trace_stderr"] + 1e-6
    assert ours[0]["curvature_examples"] == data.n_train
