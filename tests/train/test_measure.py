"""The streamed noise scale against the full per-example gradient matrix, and end-of-training curvature."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from batchlab.analysis.gns import b_simple_exact
from batchlab.data.dataset import Dataset
from batchlab.models.jax import make_model
from batchlab.train.backends import probes_for
from batchlab.train.measure import GroupMeasurements, gns_mode
from batchlab.train.probes.jax import per_example_gradients


def small_data(n=300):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n + 10, 5)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=n + 10) > 0).astype(np.int32)
    return Dataset("s", x[:n], y[:n], x[n:], y[n:], ("0", "1"), tuple("abcde"))


def test_exact_streamed_noise_scale_equals_the_per_example_matrix_computation():
    data = small_data(300)  # 300 rows: two chunks of 256, the second padded
    model = make_model("mlp", n_features=5, n_classes=2, hidden=(7,))
    stacked = model.init_replicas((0, 1))
    ours = GroupMeasurements(probes_for(model, data), data, gns="exact").gns(stacked, np.array([True, True]))
    for i in range(2):
        params = jax.tree_util.tree_map(lambda a, i=i: a[i], stacked)
        reference = b_simple_exact(per_example_gradients(model, params, data.x_train, data.y_train))
        b, low, high, g2, tr = ours[i]
        assert np.isnan(low) and np.isnan(high)  # exact: no interval, as b_simple_exact
        assert g2 == pytest.approx(reference.grad_sq_norm, rel=1e-4)
        assert tr == pytest.approx(reference.trace_sigma, rel=1e-4)
        assert b == pytest.approx(reference.b_simple, rel=1e-3)


def test_estimate_mode_brackets_its_estimate_and_inactive_replicas_are_skipped():
    data = small_data(2000)
    model = make_model("logreg", n_features=5, n_classes=2)
    stacked = model.init_replicas((0, 1))
    est = GroupMeasurements(probes_for(model, data), data, gns="estimate").gns(stacked, np.array([True, False]))
    b, low, high, g2, tr = est[0]
    assert est[1] is None
    assert low <= b <= high and g2 > 0 and tr > 0


def test_auto_mode_and_end_of_training_curvature():
    assert gns_mode("auto", 20_000) == "exact" and gns_mode("auto", 20_001) == "estimate"
    data = small_data(200)
    model = make_model("logreg", n_features=5, n_classes=2)
    stacked = model.init_replicas((0,))
    [metrics] = GroupMeasurements(probes_for(model, data), data, gns="off").end_of_training(stacked, np.array([True]),
                                                                         eps_sharpness=True)
    assert metrics["top_eigenvalue"] > 0 and metrics["hessian_trace"] > 0 and metrics["eps_sharpness"] >= 0
    # A logistic model's Hessian is positive semi-definite: the trace bounds the top eigenvalue from above.
    assert metrics["hessian_trace"] + 3 * metrics["hessian_trace_stderr"] >= metrics["top_eigenvalue"]


def test_end_of_training_reports_progress_up_to_its_total_without_changing_a_number():
    from batchlab.train.measure import end_of_training_units

    data = small_data(200)
    model = make_model("mlp", n_features=5, n_classes=2, hidden=(7,))
    stacked = model.init_replicas((0, 1, 2))
    active = np.array([True, False, True])
    seen: list[tuple[int, int]] = []
    measure = GroupMeasurements(probes_for(model, data), data, gns="off")
    told = measure.end_of_training(stacked, active, eps_sharpness=False, on_progress=lambda d, t: seen.append((d, t)))
    silent = measure.end_of_training(stacked, active, eps_sharpness=False)
    assert told == silent and told[1] == {}
    total = 2 * end_of_training_units(False)
    assert {t for _, t in seen} == {total}
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == total and done[0] >= 1
