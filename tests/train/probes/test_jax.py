"""Probes at fixed parameters against jax.grad on single examples, NumPy gradients and the exact Hessian."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from batchlab.errors import BatchlabError
from batchlab.models.jax import make_model
from batchlab.models.tasks import cross_entropy
from batchlab.train.probes.jax import (
    epsilon_sharpness,
    hessian_trace,
    microbatch_gradients,
    per_example_gradients,
    top_hessian_eigenvalue,
)

RNG = np.random.default_rng(0)
X = RNG.normal(size=(7, 3)).astype(np.float32)
Y = np.array([0, 1, 2, 0, 1, 2, 1], np.int32)
LOGREG = make_model("logreg", n_features=3, n_classes=3)
MLP = make_model("mlp", n_features=3, n_classes=3, hidden=(4,), activation="tanh")


def params_of(model, seed=0):
    return model.init(jax.random.PRNGKey(seed))


def flat_loss(model, params):
    theta, unravel = ravel_pytree(params)
    return theta, lambda t, x, y: jnp.mean(cross_entropy(model.apply(unravel(t), x), y))


def exact_hessian(model, params):
    theta, loss = flat_loss(model, params)
    return np.asarray(jax.hessian(loss)(theta, jnp.asarray(X), jnp.asarray(Y)), float)


def test_per_example_gradients_of_logreg_match_the_closed_form():
    params = params_of(LOGREG)
    w, b = np.asarray(params["layer00"]["w"], float), np.asarray(params["layer00"]["b"], float)
    logits = X @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    residual = p - np.eye(3)[Y]  # d loss_i / d logits_i
    expected = np.stack([ravel_pytree({"layer00": {"w": np.outer(X[i], residual[i]), "b": residual[i]}})[0]
                         for i in range(len(X))])
    np.testing.assert_allclose(per_example_gradients(LOGREG, params, X, Y), expected, atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 3, 256])
def test_per_example_gradients_match_single_example_grads_and_average_to_the_full_gradient(chunk):
    params = params_of(MLP)
    theta, loss = flat_loss(MLP, params)
    grads = per_example_gradients(MLP, params, X, Y, chunk=chunk)
    assert grads.shape == (7, theta.size)
    for i in (0, 6):
        np.testing.assert_allclose(grads[i], jax.grad(loss)(theta, X[i:i + 1], Y[i:i + 1]), atol=1e-6)
    np.testing.assert_allclose(grads.mean(axis=0), jax.grad(loss)(theta, X, Y), atol=1e-6)


def test_microbatch_gradients_are_means_over_disjoint_microbatches():
    params = params_of(MLP)
    theta, loss = flat_loss(MLP, params)
    per_example = per_example_gradients(MLP, params, X[:6], Y[:6])
    grads = microbatch_gradients(MLP, params, X[:6], Y[:6], microbatch_size=2, k=3, seed=1)
    assert grads.shape == (3, theta.size)
    # k b = N disjoint microbatches of equal size average to the full gradient
    np.testing.assert_allclose(grads.mean(axis=0), jax.grad(loss)(theta, X[:6], Y[:6]), atol=1e-6)
    # each row is the mean of two distinct examples' gradients, and the pairs partition the examples
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6)]
    used = []
    for row in grads:
        match = [p for p in pairs if np.allclose(row, per_example[list(p)].mean(0), atol=1e-6)]
        assert len(match) == 1
        used += match[0]
    assert sorted(used) == list(range(6))
    other = microbatch_gradients(MLP, params, X[:6], Y[:6], microbatch_size=2, k=3, seed=2)
    assert not np.allclose(np.sort(grads[:, 0]), np.sort(other[:, 0]))
    with pytest.raises(BatchlabError):
        microbatch_gradients(MLP, params, X, Y, microbatch_size=4, k=2, seed=0)


@pytest.mark.parametrize("model", [LOGREG, MLP], ids=["logreg", "mlp"])
def test_top_hessian_eigenvalue_matches_the_exact_hessian(model):
    params = params_of(model)
    eigenvalues = np.linalg.eigvalsh(exact_hessian(model, params))
    largest = eigenvalues[np.argmax(np.abs(eigenvalues))]
    top = top_hessian_eigenvalue(model, params, X, Y, iters=3000, tol=1e-6, method="power")
    assert top.converged and top.iterations < 3000
    assert top.eigenvalue == pytest.approx(largest, rel=2e-3)
    early = top_hessian_eigenvalue(model, params, X, Y, iters=2, tol=0.0, method="power")
    assert early.iterations == 2 and not early.converged


def test_hutchinson_trace_matches_the_exact_trace_within_its_standard_error():
    params = params_of(MLP)
    hessian = exact_hessian(MLP, params)
    est = hessian_trace(MLP, params, X, Y, samples=400, seed=3)
    assert est.samples == 400
    assert abs(est.mean - np.trace(hessian)) < 4 * est.stderr
    # Var(v^T H v) = 2 sum_{i != j} H_ij^2 for Rademacher v
    off_diagonal = hessian - np.diag(np.diag(hessian))
    assert est.stderr == pytest.approx(np.sqrt(2 * np.sum(off_diagonal**2) / 400), rel=0.25)
    assert hessian_trace(MLP, params, X, Y, samples=50, seed=3) == hessian_trace(MLP, params, X, Y, samples=50, seed=3)


@pytest.mark.parametrize(("eps", "rel"), [(2e-6, 0.1), (1e-4, 0.05)])
def test_epsilon_sharpness_against_its_first_order_value(eps, rel):
    # away from a minimum and for a small box, max f(theta + delta) ~ f + eps sum_i |g_i| (|theta_i| + 1); a box
    # narrower than L-BFGS-B's default gradient tolerance (1e-5) must still be searched. At eps = 2e-6 the loss
    # rises by ~25 float32 ulps, hence the looser tolerance.
    params = params_of(MLP)
    theta, loss = flat_loss(MLP, params)
    f0 = float(loss(theta, X, Y))
    grad = np.asarray(jax.grad(loss)(theta, X, Y), float)
    first_order = 100 * eps * np.sum(np.abs(grad) * (np.abs(np.asarray(theta)) + 1)) / (1 + f0)
    sharp = epsilon_sharpness(MLP, params, X, Y, epsilon=eps)
    assert sharp.loss == pytest.approx(f0) and sharp.iterations >= 1
    assert sharp.phi == pytest.approx(first_order, rel=rel)
    larger = epsilon_sharpness(MLP, params, X, Y, epsilon=100 * eps)
    assert larger.phi > 10 * sharp.phi and larger.max_loss > larger.loss
    assert epsilon_sharpness(MLP, params, X, Y, epsilon=0.0).phi == 0.0


def test_epsilon_sharpness_falls_near_a_minimum_and_stays_non_negative():
    params = params_of(LOGREG)
    theta, loss = flat_loss(LOGREG, params)
    step = jax.jit(lambda t: t - 0.5 * jax.grad(loss)(t, X, Y))
    for _ in range(300):  # full-batch gradient descent towards the minimum: the first-order term vanishes
        theta = step(theta)
    minimum = ravel_pytree(params)[1](theta)
    at_minimum = epsilon_sharpness(LOGREG, minimum, X, Y, epsilon=1e-4)
    at_init = epsilon_sharpness(LOGREG, params, X, Y, epsilon=1e-4)
    assert 0.0 <= at_minimum.phi < at_init.phi / 2
    assert at_minimum.max_loss >= at_minimum.loss
