"""Measurements at fixed parameters of one replica: per-example and microbatch gradients, curvature, sharpness.

Every probe is about the training objective f(theta) = mean_i loss(model(theta, x_i), y_i) on the (x, y)
given, the loss being the task's (`task`: cross-entropy for classification, the default, or squared error), with theta the parameters of one replica (an un-stacked params dict of :mod:`batchlab.models`)
flattened in layer order by `jax.flatten_util.ravel_pytree`. Results come back as NumPy arrays and floats, ready
for :mod:`batchlab.analysis.gns` and the report. Randomness comes from explicit seeds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from scipy import optimize

from batchlab.errors import invalid
from batchlab.models import Model
from batchlab.tasks import CLASSIFICATION, Task

FlatLoss = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def _flat_objective(model: Model, params: Any, task: Task) -> tuple[jax.Array, FlatLoss]:
    """(theta, loss) with theta the flattened parameters and loss(theta, x, y) the task's mean loss. The loss is
    one function per (model, task, parameter shapes), so the probes' jitted functions compile once and serve
    every replica of a group."""
    theta, _ = ravel_pytree(params)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    return theta, _objective(model, task, treedef, tuple((np.shape(a), str(np.asarray(a).dtype)) for a in leaves))


@functools.lru_cache(maxsize=32)
def _objective(model: Model, task: Task, treedef: Any, specs: tuple) -> FlatLoss:
    template = jax.tree_util.tree_unflatten(treedef, [jnp.zeros(shape, dtype) for shape, dtype in specs])
    _, unravel = ravel_pytree(template)

    def loss(theta: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.mean(task.loss(model.apply(unravel(theta), x), y))

    return loss


@functools.lru_cache(maxsize=64)
def _compiled(kind: str, loss: FlatLoss) -> Callable:
    """The jitted function of `kind` for one objective, built once."""
    if kind == "per_example":
        return jax.jit(jax.vmap(jax.grad(lambda t, xi, yi: loss(t, xi[None], yi[None])), in_axes=(None, 0, 0)))
    if kind == "microbatch":
        return jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)))
    if kind == "hvp":
        return jax.jit(_hvp(loss))
    if kind == "quadratic":
        hvp = _hvp(loss)
        return jax.jit(lambda t, vs, x, y: jax.lax.map(lambda v: v @ hvp(t, v, x, y), vs))
    if kind == "value_and_grad":
        return jax.jit(jax.value_and_grad(loss))
    raise ValueError(kind)


def _as_data(theta: jax.Array, x: np.ndarray, y: np.ndarray, task: Task) -> tuple[jax.Array, jax.Array]:
    if len(x) != len(y) or len(x) == 0:
        raise invalid("x, y", (len(x), len(y)), "the same number (>= 1) of examples and labels")
    return jnp.asarray(x, theta.dtype), jnp.asarray(y, task.target_dtype)


def _hvp(loss: FlatLoss) -> Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]:
    """(theta, v, x, y) -> H v, forward-over-reverse: the JVP of the gradient (one gradient's cost, about)."""

    def hvp(theta, v, x, y):
        return jax.jvp(lambda t: jax.grad(loss)(t, x, y), (theta,), (v,))[1]

    return hvp


def per_example_gradients(model: Model, params: Any, x: np.ndarray, y: np.ndarray, *, chunk: int = 256,
                          task: Task = CLASSIFICATION) -> np.ndarray:
    """(N, P) float32 array whose row i is the gradient of example i's loss, by `jax.vmap(jax.grad)`,
    `chunk` examples at a time (device memory ~ chunk x P floats; the host holds all N x P). Their mean is the
    full-batch gradient; feed them to :func:`batchlab.analysis.gns.b_simple_exact`."""
    if chunk < 1:
        raise invalid("chunk", chunk, "an integer >= 1")
    theta, loss = _flat_objective(model, params, task)
    x, y = _as_data(theta, x, y, task)
    grad_each = _compiled("per_example", loss)
    n, chunk = len(x), min(chunk, len(x))
    out = np.empty((n, theta.size), np.float32)
    for start in range(0, n, chunk):
        xb, yb = x[start:start + chunk], y[start:start + chunk]
        m = len(xb)
        if m < chunk:  # pad the last chunk to the compiled shape, then drop the padding
            xb, yb = jnp.concatenate([xb, jnp.repeat(xb[:1], chunk - m, 0)]), jnp.pad(yb, (0, chunk - m))
        out[start:start + m] = np.asarray(grad_each(theta, xb, yb))[:m]
    return out


def microbatch_gradients(model: Model, params: Any, x: np.ndarray, y: np.ndarray, *, microbatch_size: int, k: int,
                         seed: int, task: Task = CLASSIFICATION) -> np.ndarray:
    """(k, P) array of mean-loss gradients over k disjoint microbatches of `microbatch_size` examples, drawn
    without replacement from the N rows of x by `numpy.random.default_rng(seed)`. Pass `n_train=N` to
    :func:`batchlab.analysis.gns.b_simple_two_batch`, which accounts for drawing without replacement."""
    n = len(x)
    if microbatch_size < 1 or k < 1 or k * microbatch_size > n:
        raise invalid("(microbatch_size, k)", (microbatch_size, k), f"integers >= 1 with microbatch_size * k <= {n}")
    theta, loss = _flat_objective(model, params, task)
    x, y = _as_data(theta, x, y, task)
    index = np.random.default_rng(seed).permutation(n)[:k * microbatch_size].reshape(k, microbatch_size)
    grads = _compiled("microbatch", loss)(theta, x[index], y[index])
    return np.asarray(grads)


@dataclass(frozen=True)
class TopEigenvalue:
    """The Hessian eigenvalue of largest magnitude, by power iteration."""

    eigenvalue: float
    iterations: int
    converged: bool


def top_hessian_eigenvalue(model: Model, params: Any, x: np.ndarray, y: np.ndarray, *, iters: int = 100,
                           seed: int = 0, tol: float = 1e-4, task: Task = CLASSIFICATION) -> TopEigenvalue:
    """Power iteration on Hessian-vector products: v <- H v / |H v| from a standard normal v (from `seed`), with
    the Rayleigh quotient lambda = v^T H v (|v| = 1) as the estimate. Stops when lambda changes by <= tol |lambda|
    between iterations (converged) or after `iters` products. It finds the eigenvalue of largest magnitude (the
    top one near a minimum, where H is nearly positive semi-definite); a small gap to the next eigenvalue slows it.
    """
    if iters < 1:
        raise invalid("iters", iters, "an integer >= 1")
    theta, loss = _flat_objective(model, params, task)
    x, y = _as_data(theta, x, y, task)
    hvp = _compiled("hvp", loss)
    v = jax.random.normal(jax.random.PRNGKey(seed), theta.shape, theta.dtype)
    v = v / jnp.linalg.norm(v)
    eigenvalue = float("nan")
    for iteration in range(1, iters + 1):
        hv = hvp(theta, v, x, y)
        new = float(v @ hv)
        norm = float(jnp.linalg.norm(hv))
        if norm == 0.0:
            return TopEigenvalue(0.0, iteration, True)
        v = hv / norm
        if abs(new - eigenvalue) <= tol * abs(new):
            return TopEigenvalue(new, iteration, True)
        eigenvalue = new
    return TopEigenvalue(eigenvalue, iters, False)


@dataclass(frozen=True)
class HessianTrace:
    """Hutchinson's estimate of tr(H): the mean of v^T H v over Rademacher v, with its standard error."""

    mean: float
    stderr: float
    samples: int


def hessian_trace(model: Model, params: Any, x: np.ndarray, y: np.ndarray, *, samples: int = 100,
                  seed: int = 0, task: Task = CLASSIFICATION) -> HessianTrace:
    """Hutchinson's estimator tr(H) = E[v^T H v] for v with independent +-1 entries (Hutchinson 1990), averaged
    over `samples` vectors from `seed`; stderr = sample std (1/(n-1)) / sqrt(samples). Its variance per sample is
    2 sum_{i != j} H_ij^2: exact for a diagonal H."""
    if samples < 2:
        raise invalid("samples", samples, "an integer >= 2 (one more than needed for a standard error)")
    theta, loss = _flat_objective(model, params, task)
    x, y = _as_data(theta, x, y, task)
    hvp = _hvp(loss)
    vs = jax.random.rademacher(jax.random.PRNGKey(seed), (samples, theta.size), theta.dtype)
    quadratic = jax.jit(lambda t, vs, x, y: jax.lax.map(lambda v: v @ hvp(t, v, x, y), vs))
    q = np.asarray(quadratic(theta, vs, x, y), float)
    return HessianTrace(float(q.mean()), float(q.std(ddof=1) / np.sqrt(samples)), samples)


@dataclass(frozen=True)
class Sharpness:
    """Keskar et al.'s epsilon-sharpness phi and the losses it compares."""

    phi: float
    loss: float
    max_loss: float
    """The largest loss found in the box: a lower bound on the true maximum."""
    epsilon: float
    iterations: int


def epsilon_sharpness(model: Model, params: Any, x: np.ndarray, y: np.ndarray, *, epsilon: float = 1e-3,
                      iters: int = 10, task: Task = CLASSIFICATION) -> Sharpness:
    """Epsilon-sharpness (Keskar et al. 2017, "On Large-Batch Training for Deep Learning", with A = I)::

        phi = 100 (max_{delta in C_eps} f(theta + delta) - f(theta)) / (1 + f(theta)),
        C_eps = {delta : |delta_i| <= eps (|theta_i| + 1)}

    maximised approximately, as in the paper, by L-BFGS-B (`scipy.optimize.minimize`, box bounds, at most `iters`
    iterations, no tolerance-based stop: the projected-gradient test would end at once in a box narrower than its
    tolerance) on -f from delta = 0, with f and its gradient from `jax.value_and_grad`. The maximum is the largest
    f evaluated, so phi is a lower bound on the true sharpness and never negative. For small eps it is close to
    the first-order value 100 eps sum_i |g_i| (|theta_i| + 1) / (1 + f).
    """
    if not epsilon >= 0 or iters < 1:
        raise invalid("(epsilon, iters)", (epsilon, iters), "epsilon >= 0 and an integer iters >= 1")
    theta, loss = _flat_objective(model, params, task)
    x, y = _as_data(theta, x, y, task)
    value_and_grad = _compiled("value_and_grad", loss)
    base = np.asarray(theta, np.float64)
    f0 = float(value_and_grad(theta, x, y)[0])
    if epsilon == 0:  # the box is the point theta itself
        return Sharpness(0.0, f0, f0, epsilon, 0)
    best = [f0]

    def negative_loss(delta: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = value_and_grad(jnp.asarray(base + delta, theta.dtype), x, y)
        best[0] = max(best[0], float(value))
        return -float(value), -np.asarray(grad, np.float64)

    bound = epsilon * (np.abs(base) + 1.0)
    result = optimize.minimize(negative_loss, np.zeros_like(base), jac=True, method="L-BFGS-B",
                               bounds=optimize.Bounds(-bound, bound),
                               options={"maxiter": iters, "gtol": 0.0, "ftol": 0.0})
    return Sharpness(100.0 * (best[0] - f0) / (1.0 + f0), f0, best[0], epsilon, int(result.nit))
