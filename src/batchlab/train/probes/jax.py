"""Probes of a JAX model at fixed parameters of one replica: per-example and microbatch gradients,
Hessian-vector products, epsilon-sharpness; :class:`JaxProbes` is the gradient interface
:mod:`batchlab.train.measure` uses.

Every probe is about the training objective f(theta) = mean_i loss(model(theta, x_i), y_i) on the (x, y) given,
the loss being the task's (`task`: cross-entropy for classification, the default, or squared error), with theta
the parameters of one replica (un-stacked) flattened in layer order by `jax.flatten_util.ravel_pytree`. Results
come back as NumPy arrays and floats, ready for :mod:`batchlab.analysis.gns` and the report. Randomness comes
from explicit seeds.
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
from batchlab.models.jax import Model
from batchlab.models.tasks import CLASSIFICATION, Task
from batchlab.train.probes.curvature import (
    HessianTrace,
    TopEigenvalue,
    hutchinson_trace,
    lanczos_top_eigenvalue,
    power_iteration,
)

FlatLoss = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
Data = np.ndarray | jax.Array
"""Features or targets, on the host or the device."""


def _flat_objective(model: Model, params: Any, task: Task) -> tuple[jax.Array, FlatLoss]:
    """(theta, loss) with theta the flattened parameters and loss(theta, x, y) the task's mean loss. The loss is
    one function per (model, task, parameter shapes), so the probes' jitted functions compile once and serve
    every replica of a group."""
    theta, _ = ravel_pytree(params)
    return theta, _objective(model, task, *_structure(params))


def _structure(params: Any) -> tuple[Any, tuple]:
    """(treedef, leaf shapes and dtypes): what the probes' compiled functions depend on, as a hashable key."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    return treedef, tuple((np.shape(a), str(np.asarray(a).dtype)) for a in leaves)


@functools.lru_cache(maxsize=32)
def _chunk_sums(model: Model, task: Task, treedef: Any, specs: tuple) -> Callable:
    """Jitted (theta, x, y, mask) -> (sum_i |g_i|^2, sum_i g_i) over one chunk of examples: built once per (model,
    task, parameter shapes), so every group of a study with the same model reuses its compiled program."""
    template = jax.tree_util.tree_unflatten(treedef, [jnp.zeros(shape, dtype) for shape, dtype in specs])
    _, unravel = ravel_pytree(template)

    def example_loss(t, xi, yi):
        return task.loss(model.apply(unravel(t), xi[None]), yi[None])[0]

    def chunk_sums(t, xb, yb, mb):
        g = jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0))(t, xb, yb) * mb[:, None]
        return jnp.sum(g ** 2), jnp.sum(g, 0)

    return jax.jit(chunk_sums)


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
        return jax.jit(lambda t, v, x, y: v @ hvp(t, v, x, y))
    if kind == "value_and_grad":
        return jax.jit(jax.value_and_grad(loss))
    raise ValueError(kind)


def _as_data(theta: jax.Array, x: Data, y: Data, task: Task) -> tuple[jax.Array, jax.Array]:
    if len(x) != len(y) or len(x) == 0:
        raise invalid("x, y", (len(x), len(y)), "the same number (>= 1) of examples and labels")
    return jnp.asarray(x, theta.dtype), jnp.asarray(y, task.target_dtype)


def _hvp(loss: FlatLoss) -> Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]:
    """(theta, v, x, y) -> H v, forward-over-reverse: the JVP of the gradient (one gradient's cost, about)."""

    def hvp(theta, v, x, y):
        return jax.jvp(lambda t: jax.grad(loss)(t, x, y), (theta,), (v,))[1]

    return hvp


def per_example_gradients(model: Model, params: Any, x: Data, y: Data, *, chunk: int = 256,
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
            xb = jnp.concatenate([xb, jnp.repeat(xb[:1], chunk - m, 0)])
            yb = jnp.pad(yb, [(0, chunk - m)] + [(0, 0)] * (yb.ndim - 1))
        out[start:start + m] = np.asarray(grad_each(theta, xb, yb))[:m]
    return out


def microbatch_gradients(model: Model, params: Any, x: Data, y: Data, *, microbatch_size: int, k: int,
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


def top_hessian_eigenvalue(model: Model, params: Any, x: np.ndarray, y: np.ndarray, *, iters: int = 100,
                           seed: int = 0, tol: float = 1e-4, task: Task = CLASSIFICATION,
                           method: str = "lanczos") -> TopEigenvalue:
    """The top eigenvalue of the Hessian of the task's mean loss at `params`: by
    :func:`batchlab.train.probes.curvature.lanczos_top_eigenvalue` (the algebraically largest), or with
    `method="power"` by :func:`batchlab.train.probes.curvature.power_iteration` (the largest in magnitude)."""
    if method not in ("lanczos", "power"):
        raise invalid("method", method, "lanczos or power")
    probes = JaxProbes(model, task)
    theta, (xj, yj) = probes.flat_params(params), probes.data(x, y)
    algorithm = lanczos_top_eigenvalue if method == "lanczos" else power_iteration
    return algorithm(lambda v: probes.hvp(theta, v, xj, yj), int(theta.size), iters=iters, seed=seed, tol=tol)


def hessian_trace(model: Model, params: Any, x: np.ndarray, y: np.ndarray, *, samples: int = 100,
                  seed: int = 0, task: Task = CLASSIFICATION) -> HessianTrace:
    """:func:`batchlab.train.probes.curvature.hutchinson_trace` of the Hessian of the task's mean loss at `params`."""
    probes = JaxProbes(model, task)
    theta, (xj, yj) = probes.flat_params(params), probes.data(x, y)
    return hutchinson_trace(lambda vs: probes.quadratic_forms(theta, vs, xj, yj), int(theta.size), samples=samples,
                            seed=seed)


@dataclass(frozen=True)
class Sharpness:
    """Keskar et al.'s epsilon-sharpness phi and the losses it compares."""

    phi: float
    loss: float
    max_loss: float
    """The largest loss found in the box: a lower bound on the true maximum."""
    epsilon: float
    iterations: int


def epsilon_sharpness(model: Model, params: Any, x: Data, y: Data, *, epsilon: float = 1e-3,
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


class JaxProbes:
    """The gradient interface of :mod:`batchlab.train.measure` for a JAX model: every jitted function is built
    once per (model, task, parameter shapes) and serves every replica of a group."""

    def __init__(self, model: Model, task: Task = CLASSIFICATION):
        self.model, self.task = model, task
        self._loss: FlatLoss | None = None
        self._key: tuple[Any, tuple] | None = None

    def replica(self, stacked: Any, i: int) -> Any:
        """Replica i's parameters (the pytree), from the group's stacked parameters."""
        return jax.tree_util.tree_map(lambda a: a[i], stacked)

    def flat_params(self, params: Any) -> jax.Array:
        """theta: one replica's parameters flattened in layer order."""
        theta, self._loss = _flat_objective(self.model, params, self.task)
        self._key = _structure(params)
        return theta

    def data(self, x: np.ndarray, y: np.ndarray) -> tuple[jax.Array, jax.Array]:
        return _as_data(jnp.zeros((), jnp.float32), x, y, self.task)

    def per_example_sums(self, theta: jax.Array, x: np.ndarray, y: np.ndarray, *, chunk: int) -> tuple[float, np.ndarray]:
        """(sum_i |g_i|^2, sum_i g_i) over the rows of (x, y), `chunk` examples at a time (the last chunk padded
        with copies of its first row, masked out)."""
        assert self._key is not None, "flat_params first"
        sums = _chunk_sums(self.model, self.task, *self._key)
        n = len(x)
        size = min(chunk, n)
        total_sq, total = 0.0, np.zeros(theta.size, np.float64)
        for start in range(0, n, size):
            xb, yb = x[start:start + size], y[start:start + size]
            m = len(xb)
            mask = np.zeros(size, np.float32)
            mask[:m] = 1.0
            if m < size:
                xb = np.concatenate([xb, np.repeat(xb[:1], size - m, 0)])
                yb = np.concatenate([yb, np.repeat(yb[:1], size - m, 0)])
            sq, g = sums(theta, xb, yb, mask)
            total_sq += float(sq)
            total += np.asarray(g, np.float64)
        return total_sq, total

    def microbatch_gradients(self, theta: jax.Array, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(k, P) mean-loss gradients of the k microbatches x (k, b, F), y (k, b)."""
        assert self._loss is not None, "flat_params first"
        xb, yb = jnp.asarray(x, theta.dtype), jnp.asarray(y, self.task.target_dtype)
        return np.asarray(_compiled("microbatch", self._loss)(theta, xb, yb))

    def hvp(self, theta: jax.Array, v: np.ndarray, x: jax.Array, y: jax.Array) -> np.ndarray:
        """H v at theta on (x, y) (from :meth:`data`)."""
        assert self._loss is not None, "flat_params first"
        return np.asarray(_compiled("hvp", self._loss)(theta, jnp.asarray(v, theta.dtype), x, y))

    def quadratic_forms(self, theta: jax.Array, vs: np.ndarray, x: jax.Array, y: jax.Array) -> np.ndarray:
        """v^T H v for each row v of vs: one compiled call per vector, dispatched asynchronously (a `lax.map` over
        the vectors in one program ran each product ~5x slower on CPU: a convolutional net's 30 Hutchinson vectors
        took 7.4 s against 1.4 s)."""
        assert self._loss is not None, "flat_params first"
        f = _compiled("quadratic", self._loss)
        out = [f(theta, v, x, y) for v in jnp.asarray(vs, theta.dtype)]
        return np.asarray(jnp.stack(out)) if out else np.zeros(0, np.float32)

    def epsilon_sharpness(self, params: Any, x: np.ndarray, y: np.ndarray, *, epsilon: float) -> float:
        return epsilon_sharpness(self.model, params, x, y, epsilon=epsilon, task=self.task).phi
