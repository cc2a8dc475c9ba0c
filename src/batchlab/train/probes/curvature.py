"""Curvature from Hessian-vector products alone, for any backend: the top eigenvalue by power iteration and the
trace by Hutchinson's estimator. The backend supplies `hvp(v) -> H v` (or many quadratic forms v^T H v at
once); the vectors live on the host in float64. Start and probe vectors come from JAX's generator with an
explicit seed, so the JAX and PyTorch backends draw the same ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import numpy as np

from batchlab.errors import invalid

Hvp = Callable[[np.ndarray], np.ndarray]
"""v (P,) -> H v (P,) at fixed parameters and data."""
QuadraticForms = Callable[[np.ndarray], np.ndarray]
"""vs (S, P) -> (S,) the quadratic forms v^T H v."""


@dataclass(frozen=True)
class TopEigenvalue:
    """The Hessian eigenvalue of largest magnitude, by power iteration."""

    eigenvalue: float
    iterations: int
    converged: bool


@dataclass(frozen=True)
class HessianTrace:
    """Hutchinson's estimate of tr(H): the mean of v^T H v over Rademacher v, with its standard error."""

    mean: float
    stderr: float
    samples: int


def power_iteration(hvp: Hvp, dim: int, *, iters: int = 100, seed: int = 0, tol: float = 1e-4) -> TopEigenvalue:
    """Power iteration on Hessian-vector products: v <- H v / |H v| from a standard normal v (JAX, `seed`), with
    the Rayleigh quotient lambda = v^T H v (|v| = 1) as the estimate. Stops when lambda changes by <= tol |lambda|
    between iterations (converged) or after `iters` products. It finds the eigenvalue of largest magnitude (the
    top one near a minimum, where H is nearly positive semi-definite); a small gap to the next eigenvalue slows it.
    """
    if iters < 1:
        raise invalid("iters", iters, "an integer >= 1")
    v = np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (dim,)), np.float64)
    v /= np.linalg.norm(v)
    eigenvalue = float("nan")
    for iteration in range(1, iters + 1):
        hv = np.asarray(hvp(v), np.float64)
        new, norm = float(v @ hv), float(np.linalg.norm(hv))
        if norm == 0.0:
            return TopEigenvalue(0.0, iteration, True)
        v = hv / norm
        if abs(new - eigenvalue) <= tol * abs(new):
            return TopEigenvalue(new, iteration, True)
        eigenvalue = new
    return TopEigenvalue(eigenvalue, iters, False)


def hutchinson_trace(quadratic_forms: QuadraticForms, dim: int, *, samples: int = 100, seed: int = 0) -> HessianTrace:
    """Hutchinson's estimator tr(H) = E[v^T H v] for v with independent +-1 entries (Hutchinson 1990), averaged
    over `samples` vectors from `seed`; stderr = sample std (1/(n-1)) / sqrt(samples). Its variance per sample is
    2 sum_{i != j} H_ij^2: exact for a diagonal H."""
    if samples < 2:
        raise invalid("samples", samples, "an integer >= 2 (one more than needed for a standard error)")
    vs = np.asarray(jax.random.rademacher(jax.random.PRNGKey(seed), (samples, dim), np.float32))
    q = np.asarray(quadratic_forms(vs), float)
    return HessianTrace(float(q.mean()), float(q.std(ddof=1) / np.sqrt(samples)), samples)
