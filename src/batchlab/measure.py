"""Measurements a group takes besides its losses: the gradient noise scale during training, curvature at the end.

The gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018) is measured at fixed parameters:
`exact` streams per-example gradients over the whole training set, keeping only their sum and the sum of their
squared norms (memory ~ chunk x P, not N x P), so tr(Sigma) = mean_i |g_i|^2 - |G|^2 (Sigma normalised by 1/N,
as in :func:`batchlab.analysis.gns.b_simple_exact`); `estimate` uses the unbiased two-batch estimator from k
microbatch gradients (:func:`batchlab.analysis.gns.b_simple_two_batch`). Curvature (top Hessian eigenvalue,
Hessian trace, optionally epsilon-sharpness) is measured on at most CURVATURE_EXAMPLES training examples.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from batchlab.analysis.gns import b_simple_two_batch
from batchlab.data import Dataset
from batchlab.models import Model
from batchlab.tasks import get_task

EXACT_MAX_EXAMPLES = 20_000
"""`auto` uses the exact noise scale up to this many training examples, the estimate above."""
CHUNK = 256
MICROBATCH_SIZE, MICROBATCHES = 32, 64
"""Estimate mode: k = MICROBATCHES disjoint microbatches of MICROBATCH_SIZE examples (fewer for small data)."""
CURVATURE_EXAMPLES = 4096
GNS_FIELDS = ("b_simple", "b_simple_low", "b_simple_high", "grad_sq_norm", "trace_sigma")


def gns_mode(requested: str, n_train: int) -> str:
    if requested == "auto":
        return "exact" if n_train <= EXACT_MAX_EXAMPLES else "estimate"
    return requested


class GroupMeasurements:
    """Compiled once per group; called with a group's stacked parameters."""

    def __init__(self, model: Model, data: Dataset, *, gns: str, seed: int = 0):
        self.model, self.data, self.mode, self.seed = model, data, gns_mode(gns, data.n_train), seed
        self.task = get_task(data.task)
        self._sums = None

    def _per_example_sums(self, params: Any) -> tuple[float, np.ndarray]:
        """(sum_i |g_i|^2, sum_i g_i) over the training set, chunk by chunk."""
        theta, unravel = ravel_pytree(params)
        if self._sums is None:
            def example_loss(t, xi, yi):
                return self.task.loss(self.model.apply(unravel(t), xi[None]), yi[None])[0]

            def chunk_sums(t, xb, yb, mb):
                g = jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0))(t, xb, yb) * mb[:, None]
                return jnp.sum(g ** 2), jnp.sum(g, 0)

            self._sums = jax.jit(chunk_sums)
        x, y, n = self.data.x_train, self.data.y_train, self.data.n_train
        size = min(CHUNK, n)
        total_sq, total = 0.0, np.zeros(theta.size, np.float64)
        for start in range(0, n, size):
            xb, yb = x[start:start + size], y[start:start + size]
            m = len(xb)
            mask = np.zeros(size, np.float32)
            mask[:m] = 1.0
            if m < size:
                xb = np.concatenate([xb, np.repeat(xb[:1], size - m, 0)])
                yb = np.concatenate([yb, np.repeat(yb[:1], size - m, 0)])
            sq, g = self._sums(theta, xb, yb, mask)
            total_sq += float(sq)
            total += np.asarray(g, np.float64)
        return total_sq, total

    def gns(self, stacked_params: Any, active: np.ndarray) -> list[tuple[float, ...] | None]:
        """Per replica (b_simple, low, high, |G|^2, tr(Sigma)); None for replicas no longer training."""
        out: list[tuple[float, ...] | None] = []
        for i, alive in enumerate(active):
            if not alive:
                out.append(None)
                continue
            params = jax.tree_util.tree_map(lambda a, i=i: a[i], stacked_params)
            out.append(self._exact(params) if self.mode == "exact" else self._estimate(params))
        return out

    def _exact(self, params: Any) -> tuple[float, ...]:
        n = self.data.n_train
        total_sq, total = self._per_example_sums(params)
        grad_sq_norm = float(np.sum((total / n) ** 2))
        trace_sigma = max(total_sq / n - grad_sq_norm, 0.0)
        b = trace_sigma / grad_sq_norm if grad_sq_norm > 0 else math.inf
        return b, math.nan, math.nan, grad_sq_norm, trace_sigma  # exact: no sampling error, no interval

    def _estimate(self, params: Any) -> tuple[float, ...]:
        from batchlab.probes import microbatch_gradients

        n = self.data.n_train
        b = MICROBATCH_SIZE if n >= 2 * MICROBATCH_SIZE else 1
        k = min(MICROBATCHES, n // b)
        grads = microbatch_gradients(self.model, params, self.data.x_train, self.data.y_train, microbatch_size=b,
                                     k=k, seed=self.seed, task=self.task)
        est = b_simple_two_batch(grads, b, n_train=n)
        return est.b_simple, est.b_simple_low, est.b_simple_high, est.grad_sq_norm, est.trace_sigma

    def end_of_training(self, stacked_params: Any, active: np.ndarray, *, eps_sharpness: bool) -> list[dict]:
        """Per replica: top Hessian eigenvalue, Hessian trace (and its standard error), optionally
        epsilon-sharpness, on a fixed subsample of the training set; {} for diverged replicas."""
        from batchlab.probes import epsilon_sharpness, hessian_trace, top_hessian_eigenvalue

        n = self.data.n_train
        rows = np.random.default_rng(self.seed).permutation(n)[:CURVATURE_EXAMPLES] if n > CURVATURE_EXAMPLES \
            else np.arange(n)
        x, y = self.data.x_train[rows], self.data.y_train[rows]
        out = []
        for i, alive in enumerate(active):
            if not alive:
                out.append({})
                continue
            params = jax.tree_util.tree_map(lambda a, i=i: a[i], stacked_params)
            top = top_hessian_eigenvalue(self.model, params, x, y, iters=50, seed=self.seed, task=self.task)
            trace = hessian_trace(self.model, params, x, y, samples=30, seed=self.seed, task=self.task)
            metrics = {"top_eigenvalue": top.eigenvalue, "hessian_trace": trace.mean,
                       "hessian_trace_stderr": trace.stderr, "curvature_examples": float(len(rows))}
            if eps_sharpness:
                metrics["eps_sharpness"] = epsilon_sharpness(self.model, params, x, y, epsilon=1e-3,
                                                             task=self.task).phi
            out.append(metrics)
        return out
