"""Curvature from Hessian-vector products alone, for any backend: the top eigenvalue by the Lanczos method (or by
power iteration) and the trace by Hutchinson's estimator. The backend supplies `hvp(v) -> H v` (or many
quadratic forms v^T H v at once); the vectors live on the host in float64. Start and probe vectors come from
JAX's generator with an explicit seed, so the JAX and PyTorch backends draw the same ones.
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


def lanczos_top_eigenvalue(hvp: Hvp, dim: int, *, iters: int = 100, seed: int = 0, tol: float = 1e-5,
                           min_iters: int = 5) -> TopEigenvalue:
    """The largest eigenvalue of a symmetric H by the Lanczos method with full reorthogonalization (Lanczos 1950;
    Golub & Van Loan, "Matrix Computations", 4th ed., section 10.1).

    From a standard normal start (JAX, `seed`), m steps build an orthonormal basis Q of the Krylov space
    span{v, Hv, ..., H^(m-1) v} and the tridiagonal T = Q^T H Q (alpha on the diagonal, beta beside it). The
    largest eigenvalue theta of T (a Ritz value) approaches lambda_max from below, far faster than power iteration
    when the top eigenvalues are close (its error shrinks with the Chebyshev polynomial of the gap, not with the
    gap's ratio). Its residual is exact and cheap: |H y - theta y| = |beta_m s_m| for the Ritz vector y = Q s,
    s_m the last component of T's eigenvector. Stops (converged) when that residual is <= tol |theta|, or after
    `iters` products (not converged). Full reorthogonalization against every earlier q keeps Q orthonormal in
    floating point (the classical recurrence loses it and produces ghost copies of converged eigenvalues); it
    costs m dot products of length `dim` per step and m x dim floats of memory. An invariant subspace found early
    (beta = 0) ends the iteration exactly. Near a minimum, where H is nearly positive semi-definite, the largest
    eigenvalue is also the one of largest magnitude (what :func:`power_iteration` finds); elsewhere this is the
    algebraically largest, the one the edge of stability compares with 2 / lr (Cohen et al. 2021)."""
    if iters < 1:
        raise invalid("iters", iters, "an integer >= 1")
    iters = min(iters, dim)
    q = np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (dim,)), np.float64)
    q /= np.linalg.norm(q)
    basis = np.empty((iters, dim))
    alphas: list[float] = []
    betas: list[float] = []
    theta = float("nan")
    for m in range(1, iters + 1):
        basis[m - 1] = q
        w = np.asarray(hvp(q), np.float64)
        if not np.all(np.isfinite(w)):  # overflowed parameters or curvature: no eigenvalue to report
            return TopEigenvalue(float("nan"), m, False)
        alpha = float(q @ w)
        alphas.append(alpha)
        w -= basis[:m].T @ (basis[:m] @ w)  # full reorthogonalization (twice is enough: Kahan, Parlett)
        w -= basis[:m].T @ (basis[:m] @ w)
        beta = float(np.linalg.norm(w))
        values, vectors = _tridiagonal_eigh(alphas, betas)
        theta = float(values[-1])
        residual = abs(beta * vectors[-1, -1])
        if beta <= 1e-12 * max(abs(theta), 1e-30) or (m >= min(min_iters, iters) and residual <= tol * abs(theta)):
            return TopEigenvalue(theta, m, True)
        betas.append(beta)
        q = w / beta
    return TopEigenvalue(theta, iters, False)


def _tridiagonal_eigh(alphas: list[float], betas: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of the symmetric tridiagonal matrix with diagonal `alphas` and
    off-diagonal `betas` (len(alphas) - 1 of them)."""
    t = np.diag(alphas)
    if betas:
        off = np.asarray(betas[:len(alphas) - 1])
        t += np.diag(off, 1) + np.diag(off, -1)
    values, vectors = np.linalg.eigh(t)
    return values, vectors


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


def hutchinson_trace(quadratic_forms: QuadraticForms, dim: int, *, samples: int = 100, seed: int = 0,
                     rel_stderr: float = 0.0, min_samples: int = 10, block: int = 5) -> HessianTrace:
    """Hutchinson's estimator tr(H) = E[v^T H v] for v with independent +-1 entries (Hutchinson 1990), averaged
    over up to `samples` vectors from `seed`; stderr = sample std (1/(n-1)) / sqrt(n). Its variance per sample is
    2 sum_{i != j} H_ij^2: exact for a diagonal H.

    `rel_stderr` > 0 stops early, a convergence test: the vectors are evaluated `block` at a time, and from
    `min_samples` on the estimate stops once its standard error is at most `rel_stderr` of |mean|. The vectors
    are the first n of the same `samples` (a prefix of the fixed-n estimate), and the stored stderr states the
    error of what was computed. (Stopping on the estimated error makes the estimate very slightly biased; with
    `min_samples` >= 10 that is far below its standard error.)"""
    if samples < 2:
        raise invalid("samples", samples, "an integer >= 2 (one more than needed for a standard error)")
    vs = np.asarray(jax.random.rademacher(jax.random.PRNGKey(seed), (samples, dim), np.float32))
    if rel_stderr <= 0:
        q = np.asarray(quadratic_forms(vs), float)
    else:
        q = np.zeros(0)
        while len(q) < samples:
            step = min(max(block, min_samples - len(q)), samples - len(q))  # to min_samples first, then by blocks
            q = np.concatenate([q, np.asarray(quadratic_forms(vs[len(q):len(q) + step]), float)])
            if len(q) >= max(min_samples, 2) and q.std(ddof=1) / np.sqrt(len(q)) <= rel_stderr * abs(q.mean()):
                break
    return HessianTrace(float(q.mean()), float(q.std(ddof=1) / np.sqrt(len(q))), len(q))


def batch_sharpness(gradients: np.ndarray, hessian_products: np.ndarray) -> float:
    """The batch sharpness of Andreyev & Beneventano 2024 ("Edge of Stochastic Stability", arXiv 2412.20553):
    E_B[g_B^T H_B g_B / |g_B|^2], the curvature of each minibatch's own loss along its own gradient, averaged
    over minibatches B. `gradients` (M, P) are the minibatch gradients g_B, `hessian_products` (M, P) the products
    H_B g_B of each minibatch's Hessian with its gradient. It is what settles at 2 / lr under SGD (the full-batch
    lambda_max stays below it); for full-batch GD (M = 1, B = N) it is the Rayleigh quotient of H along the
    gradient, at most lambda_max. Minibatches with a zero gradient carry no direction and are left out."""
    g = np.asarray(gradients, np.float64)
    hg = np.asarray(hessian_products, np.float64)
    if g.ndim != 2 or g.shape != hg.shape:
        raise invalid("gradients, hessian_products", (g.shape, hg.shape), "two (M, P) arrays of the same shape")
    norms = np.sum(g * g, axis=1)
    keep = norms > 0
    if not keep.any():
        return float("nan")
    return float(np.mean(np.sum(g * hg, axis=1)[keep] / norms[keep]))
