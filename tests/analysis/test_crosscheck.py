"""Cross-checks against independent computations (issue 11).

(a) Steps-to-result, re-implemented here from the published description of google-research batch_science
    (`measurement_utils.py`: `apply_step_budget`, `apply_example_budget`, `compute_steps_to_result`; Shallue et al.
    2018): per batch size, every evaluation of every feasible trial in one table, filtered by the budgets, sorted by
    (step, trial id), and the first strictly below the target. Written on plain Python lists, not on our code.
(b) The exact noise scale, `b_simple_exact` and the streamed `GroupMeasurements._exact`, against a brute-force loop
    over examples in float64 with hand-derived gradients of a tiny tanh MLP.
"""

from __future__ import annotations

import math
import random

import jax
import numpy as np
import pytest

from batchlab.analysis.gns import b_simple_exact
from batchlab.analysis.scaling import Trial, steps_to_target
from batchlab.data.dataset import Dataset
from batchlab.models.jax import make_model
from batchlab.train.backends import probes_for
from batchlab.train.measure import GroupMeasurements


# -- (a) steps-to-result ------------------------------------------------------------------------------------------
def reference_steps_to_result(trials: list[dict], target: float, step_budget: int | None,
                              example_budget: int | None) -> dict[int, tuple[int, int] | None]:
    """{batch size: (step, trial id) of the first measurement below target, or None}, batch_science's way."""
    rows = []  # (batch_size, trial_id, step, value), one per evaluation, as their measurements DataFrame
    for trial_id, t in enumerate(trials):
        if t["diverged"]:  # Shallue et al.: a diverged trial is infeasible
            continue
        rows += [(t["batch_size"], trial_id, s, v) for s, v in zip(t["steps"], t["values"])]
    if step_budget is not None:
        rows = [r for r in rows if r[2] <= step_budget]
    if example_budget is not None:
        rows = [r for r in rows if r[0] * r[2] <= example_budget]
    out: dict[int, tuple[int, int] | None] = {t["batch_size"]: None for t in trials}
    for b in out:
        group = sorted((r for r in rows if r[0] == b), key=lambda r: (r[2], r[1]))
        good = [r for r in group if r[3] < target]  # strictly below, as operator.lt with maximize=False
        out[b] = (good[0][2], good[0][1]) if good else None
    return out


def random_trials(rng: random.Random) -> list[dict]:
    """Trials at 1-4 batch sizes, 1-4 trials each: noisy falling curves evaluated at increasing steps (often the
    same steps across trials, so that ties happen), some diverged, some with NaN values."""
    trials = []
    for b in rng.sample([1, 2, 8, 32, 128], rng.randint(1, 4)):
        grid = rng.choice([5, 10, 25])
        for _ in range(rng.randint(1, 4)):
            n = rng.randint(1, 12)
            steps = sorted(rng.sample(range(0, 12 * grid, grid), n)) if rng.random() < 0.6 else \
                sorted(rng.sample(range(300), n))
            rate = rng.uniform(0.002, 0.05)
            values = [math.exp(-rate * s) * rng.uniform(0.8, 1.25) for s in steps]
            if rng.random() < 0.1:
                values[rng.randrange(n)] = float("nan")
            trials.append({"batch_size": b, "steps": steps, "values": values, "diverged": rng.random() < 0.15,
                           "lr": rng.choice([0.01, 0.1, 1.0]), "seed": rng.randint(0, 3)})
    return trials


def test_steps_to_target_agrees_with_an_independent_batch_science_implementation():
    rng = random.Random(0)
    checked = budgeted_out = ties = 0
    for _ in range(600):
        trials = random_trials(rng)
        target = rng.uniform(0.2, 1.1)
        step_budget = rng.choice([None, None, rng.randint(0, 300)])
        example_budget = rng.choice([None, None, rng.randint(0, 20_000)])
        ours = steps_to_target([Trial(t["batch_size"], t["lr"], t["seed"], np.array(t["steps"]),
                                      np.array(t["values"]), np.array(t["steps"]) * 0.01, t["diverged"])
                                for t in trials], target, max_steps=step_budget, max_examples=example_budget)
        reference = reference_steps_to_result(trials, target, step_budget, example_budget)
        unbudgeted = reference_steps_to_result(trials, target, None, None)
        assert sorted(ours) == sorted(reference)
        for b, expected in reference.items():
            st = ours[b]
            checked += 1
            budgeted_out += expected is None and unbudgeted[b] is not None
            if expected is None:
                assert not st.feasible and st.steps is None and st.examples is None
                continue
            step, trial_id = expected
            winner = trials[trial_id]
            ties += sum(step in t["steps"] for t in trials if t["batch_size"] == b and not t["diverged"]) > 1
            assert (st.steps, st.examples, st.lr, st.seed) == (step, step * b, winner["lr"], winner["seed"])
            assert st.wall_time_s == pytest.approx(step * 0.01)
            assert st.n_trials == sum(t["batch_size"] == b for t in trials)
            assert st.n_diverged == sum(t["batch_size"] == b and t["diverged"] for t in trials)
    # the comparison exercised what it is meant to: budgets that remove a result, and ties in steps
    assert checked > 1000 and budgeted_out > 50 and ties > 50


# -- (b) the exact noise scale -------------------------------------------------------------------------------------
def brute_force_b_simple(params: dict, x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(B_simple, |G|^2, tr(Sigma)) for a 1-hidden-layer tanh MLP with softmax cross-entropy, one example at a time
    in float64, gradients by hand: for logits z = tanh(x W0 + b0) W1 + b1, dL/dz = softmax(z) - onehot(y)."""
    w0, b0 = (np.asarray(params["layer00"][k], np.float64) for k in ("w", "b"))
    w1, b1 = (np.asarray(params["layer01"][k], np.float64) for k in ("w", "b"))
    grads = []
    for xi, yi in zip(np.asarray(x, np.float64), y):
        h = np.tanh(xi @ w0 + b0)
        z = h @ w1 + b1
        p = np.exp(z - z.max())
        p /= p.sum()
        dz = p - np.eye(len(z))[yi]
        dh = (w1 @ dz) * (1 - h**2)
        grads.append(np.concatenate([np.outer(xi, dh).ravel(), dh, np.outer(h, dz).ravel(), dz]))
    mean = np.mean(grads, axis=0)
    grad_sq_norm = float(mean @ mean)
    trace_sigma = float(np.mean([np.sum((g - mean) ** 2) for g in grads]))
    return trace_sigma / grad_sq_norm, grad_sq_norm, trace_sigma


def tiny_problem(n: int = 300):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n + 20, 4)).astype(np.float32)
    y = (np.argmax(x[:, :3] + 0.7 * rng.normal(size=(n + 20, 3)), axis=1)).astype(np.int32)
    data = Dataset("tiny", x[:n], y[:n], x[n:], y[n:], ("0", "1", "2"), tuple("abcd"))
    model = make_model("mlp", n_features=4, n_classes=3, hidden=(6,), activation="tanh")
    return data, model


@pytest.mark.parametrize("seed", [0, 1])
def test_exact_noise_scale_matches_a_float64_per_example_loop(seed):
    data, model = tiny_problem()  # 300 examples: the stream's second chunk of 256 is padded
    params = jax.tree_util.tree_map(np.asarray, model.init(jax.random.PRNGKey(seed)))
    b_simple, grad_sq_norm, trace_sigma = brute_force_b_simple(params, data.x_train, data.y_train)
    assert 0 < b_simple < np.inf

    # b_simple_exact on the float64 per-example matrix: the formula, independently of how gradients are taken
    w0, b0, w1, b1 = (np.asarray(params[layer][k], np.float64) for layer in ("layer00", "layer01") for k in "wb")
    h = np.tanh(data.x_train @ w0 + b0)
    z = h @ w1 + b1
    dz = np.exp(z - z.max(1, keepdims=True))
    dz = dz / dz.sum(1, keepdims=True) - np.eye(3)[data.y_train]
    dh = dz @ w1.T * (1 - h**2)
    matrix = np.hstack([np.einsum("ni,nj->nij", data.x_train, dh).reshape(len(h), -1), dh,
                        np.einsum("ni,nj->nij", h, dz).reshape(len(h), -1), dz])
    est = b_simple_exact(matrix)
    assert (est.b_simple, est.grad_sq_norm, est.trace_sigma) == (
        pytest.approx(b_simple, rel=1e-10), pytest.approx(grad_sq_norm, rel=1e-10), pytest.approx(trace_sigma,
                                                                                                   rel=1e-10))

    # the streamed measurement (JAX, float32 gradients, float64 sums) on a stack of one replica
    stacked = jax.tree_util.tree_map(lambda a: a[None], params)
    [(b, low, high, g2, tr)] = GroupMeasurements(probes_for(model, data), data, gns="exact").gns(stacked, np.array([True]))
    assert g2 == pytest.approx(grad_sq_norm, rel=1e-4) and tr == pytest.approx(trace_sigma, rel=1e-4)
    assert b == pytest.approx(b_simple, rel=1e-4)
    assert np.isnan(low) and np.isnan(high)  # exact: no interval
