"""Measurements a group takes besides its losses, for any backend: the gradient noise scale during training and
curvature at the end, written once over the small gradient interface each backend's probes provide
(:class:`batchlab.train.probes.jax.JaxProbes`, :class:`batchlab.train.probes.torch.TorchProbes`).

The gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018) is measured at fixed parameters:
`exact` streams per-example gradients over the whole training set, keeping only their sum and the sum of their
squared norms (memory ~ chunk x P, not N x P), so tr(Sigma) = mean_i |g_i|^2 - |G|^2 (Sigma normalised by 1/N,
as in :func:`batchlab.analysis.gns.b_simple_exact`); `estimate` uses the unbiased two-batch estimator from k
disjoint microbatch gradients (:func:`batchlab.analysis.gns.b_simple_two_batch`). Curvature (top Hessian
eigenvalue by the Lanczos method with a convergence test, Hessian trace by Hutchinson's estimator, optionally
epsilon-sharpness) is measured on at most CURVATURE_EXAMPLES training examples
(:mod:`batchlab.train.probes.curvature`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

import numpy as np

from batchlab.analysis.gns import b_simple_two_batch
from batchlab.data.dataset import Dataset
from batchlab.errors import BatchlabWarning
from batchlab.train.probes.curvature import batch_sharpness, hutchinson_trace, lanczos_top_eigenvalue

EXACT_MAX_EXAMPLES = 20_000
"""`auto` uses the exact noise scale up to this many training examples, the estimate above."""
CHUNK = 256
"""Examples per chunk of streamed per-example gradients."""
MICROBATCH_SIZE, MICROBATCHES = 32, 64
"""Estimate mode: k = MICROBATCHES disjoint microbatches of MICROBATCH_SIZE examples (fewer for small data)."""
CURVATURE_EXAMPLES = 4096
"""Curvature subsample: examples, or for text sequences holding this many tokens."""
LANCZOS_ITERATIONS, LANCZOS_TOL, TRACE_SAMPLES, TRACE_REL_STDERR = 100, 1e-3, 30, 0.05
"""Curvature at the end: at most this many Lanczos steps (Hessian-vector products) until the top Ritz value's
residual is below LANCZOS_TOL of it; for the trace, Hutchinson vectors (10 at least, 5 at a time) until the
standard error is at most TRACE_REL_STDERR of the estimate, or this many.

Measured (digits, CNN, 20 epochs, batch sizes 1 and full): a residual of 1e-3 instead of 1e-5 moves the top
eigenvalue by 1e-6 and 2e-6 of its value (a Ritz value's error shrinks with the square of its residual) and takes
11 and 32 products instead of 15 and 40. A Hessian's trace is a sum of many eigenvalues of both signs, so its
estimate needs many vectors (30 gave a standard error of 3.7% at batch size 1, 16% at the full batch): the test
stops where 5% is reached, and the stored `hessian_trace_stderr` and `hessian_trace_samples` say what was."""
EPSILON = 1e-3
"""The box size of epsilon-sharpness (Keskar et al. 2017)."""

class CurvatureWarning(BatchlabWarning):
    """A curvature estimate that did not meet its convergence test (stored, and flagged)."""


GnsRow = tuple[float, float, float, float, float]
"""(b_simple, b_simple_low, b_simple_high, |G|^2, tr(Sigma)) of one replica at one epoch."""


class Probes(Protocol):
    """What a backend provides for the measurements: gradients and Hessian-vector products of the task's mean
    loss at one replica's flattened parameters theta (see the two implementations)."""

    def replica(self, stacked: Any, i: int) -> Any: ...
    def flat_params(self, params: Any) -> Any: ...
    def data(self, x: np.ndarray, y: np.ndarray) -> tuple[Any, Any]: ...
    def per_example_sums(self, theta: Any, x: np.ndarray, y: np.ndarray, *,
                         chunk: int) -> tuple[float, np.ndarray]: ...
    def microbatch_gradients(self, theta: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray: ...
    def hvp(self, theta: Any, v: np.ndarray, x: Any, y: Any) -> np.ndarray: ...
    def quadratic_forms(self, theta: Any, vs: np.ndarray, x: Any, y: Any) -> np.ndarray: ...


def gns_mode(requested: str, n_train: int) -> str:
    if requested == "auto":
        return "exact" if n_train <= EXACT_MAX_EXAMPLES else "estimate"
    return requested


class GroupMeasurements:
    """A group's measurements, called with its stacked parameters and its active mask."""

    def __init__(self, probes: Probes, data: Dataset, *, gns: str, seed: int = 0):
        self.probes, self.data, self.mode, self.seed = probes, data, gns_mode(gns, data.n_train), seed

    def gns(self, stacked_params: Any, active: np.ndarray) -> list[GnsRow | None]:
        """Per replica (b_simple, low, high, |G|^2, tr(Sigma)); None for replicas no longer training."""
        out: list[GnsRow | None] = []
        for i, alive in enumerate(active):
            if not alive:
                out.append(None)
                continue
            theta = self.probes.flat_params(self.probes.replica(stacked_params, i))
            out.append(self._exact(theta) if self.mode == "exact" else self._estimate(theta))
        return out

    def _exact(self, theta: Any) -> GnsRow:
        n = self.data.n_train
        total_sq, total = self.probes.per_example_sums(theta, self.data.x_train, self.data.y_train, chunk=CHUNK)
        grad_sq_norm = float(np.sum((total / n) ** 2))
        trace_sigma = max(total_sq / n - grad_sq_norm, 0.0)
        b = trace_sigma / grad_sq_norm if grad_sq_norm > 0 else math.inf
        return b, math.nan, math.nan, grad_sq_norm, trace_sigma  # exact: no interval

    def _estimate(self, theta: Any) -> GnsRow:
        n = self.data.n_train
        b = MICROBATCH_SIZE if n >= 2 * MICROBATCH_SIZE else 1
        k = min(MICROBATCHES, n // b)
        index = microbatch_index(n, microbatch_size=b, k=k, seed=self.seed)
        grads = self.probes.microbatch_gradients(theta, self.data.x_train[index], self.data.y_train[index])
        est = b_simple_two_batch(grads, b, n_train=n)
        return est.b_simple, est.b_simple_low, est.b_simple_high, est.grad_sq_norm, est.trace_sigma

    def sharpness(self, batch_size: int) -> Any:
        """The probe of `sharpness_every`: stacked params, active mask -> :func:`sharpness_during_training`."""
        return partial(sharpness_during_training, self.probes, self.data, batch_size=batch_size, seed=self.seed)

    def end_of_training(self, stacked_params: Any, active: np.ndarray, *, eps_sharpness: bool,
                        on_progress: Callable[[int, int], None] | None = None) -> list[dict]:
        """Per replica: top Hessian eigenvalue (with its iteration count and whether Lanczos converged),
        Hessian trace (and its standard error), optionally epsilon-sharpness, on a fixed subsample of the
        training set; {} for diverged replicas. `on_progress(done, total)` is told after each unit of work
        (:func:`end_of_training_units`, about a Hessian-vector product each); it does not
        change what is computed."""
        units = end_of_training_units(eps_sharpness and getattr(self.probes, "epsilon_sharpness", None) is not None)
        total, done = units * int(np.sum(active)), 0

        def tick(n: int = 1) -> None:
            nonlocal done
            done = min(done + n, total)
            if on_progress is not None:
                on_progress(done, total)

        n = self.data.n_train
        # text: CURVATURE_EXAMPLES tokens' worth of sequences, so a Hessian-vector product costs about the same
        limit = max(1, CURVATURE_EXAMPLES // self.data.tokens_per_example)
        rows = np.random.default_rng(self.seed).permutation(n)[:limit] if n > limit else np.arange(n)
        x, y = self.data.x_train[rows], self.data.y_train[rows]
        xd, yd = self.probes.data(x, y)
        out: list[dict[str, float]] = []
        for i, alive in enumerate(active):
            if not alive:
                out.append({})
                continue
            params = self.probes.replica(stacked_params, i)
            theta = self.probes.flat_params(params)
            dim = int(np.prod(theta.shape))
            start = done
            hvp = partial(self.probes.hvp, theta, x=xd, y=yd)

            def counted_hvp(v: np.ndarray, hvp: Callable[[np.ndarray], np.ndarray] = hvp) -> np.ndarray:
                out = hvp(v)
                tick()
                return out

            top = lanczos_top_eigenvalue(counted_hvp, dim, iters=LANCZOS_ITERATIONS, tol=LANCZOS_TOL, seed=self.seed)
            tick(max(start + LANCZOS_ITERATIONS - done, 0))  # converged early: the rest of its budget is done
            if not top.converged:
                warnings.warn(f"curvature: the top Hessian eigenvalue did not converge in {top.iterations} Lanczos "
                              f"steps (estimate {top.eigenvalue:.4g}, stored with top_eigenvalue_converged = 0)",
                              CurvatureWarning, stacklevel=2)
            trace = hutchinson_trace(partial(self.probes.quadratic_forms, theta, x=xd, y=yd), dim,
                                     samples=TRACE_SAMPLES, seed=self.seed, rel_stderr=TRACE_REL_STDERR)
            tick(TRACE_SAMPLES)  # stopped early: the rest of its budget is done
            metrics = {"top_eigenvalue": top.eigenvalue, "top_eigenvalue_iterations": float(top.iterations),
                       "top_eigenvalue_converged": float(top.converged), "hessian_trace": trace.mean,
                       "hessian_trace_stderr": trace.stderr, "hessian_trace_samples": float(trace.samples),
                       "curvature_examples": float(len(rows))}
            sharpness = getattr(self.probes, "epsilon_sharpness", None)
            if eps_sharpness and sharpness is not None:
                metrics["eps_sharpness"] = sharpness(params, x, y, epsilon=EPSILON)
                tick()
            out.append(metrics)
        return out


def end_of_training_units(eps_sharpness: bool) -> int:
    """Units of work :meth:`GroupMeasurements.end_of_training` reports per replica, each about one Hessian-vector
    product: at most LANCZOS_ITERATIONS for Lanczos, TRACE_SAMPLES for the trace, and one for epsilon-sharpness
    if asked."""
    return LANCZOS_ITERATIONS + TRACE_SAMPLES + int(eps_sharpness)
SHARPNESS_TRACE_SAMPLES, SHARPNESS_BATCHES = 10, 16
"""During training (`sharpness_every`): fewer Hutchinson vectors than at the end, and the batch sharpness from
this many minibatches of the run's batch size (one when the batch is the whole training set)."""
SharpnessRow = tuple[float, float, float]
"""(top Hessian eigenvalue, Hessian trace, batch sharpness) of one replica at one epoch."""


def sharpness_during_training(probes: Probes, data: Dataset, stacked_params: Any, active: np.ndarray, *,
                              batch_size: int, seed: int = 0) -> list[SharpnessRow | None]:
    """Per replica: the top Hessian eigenvalue (Lanczos) and trace (Hutchinson) of the training loss on at most
    CURVATURE_EXAMPLES examples, and the batch sharpness E_B[g_B^T H_B g_B / |g_B|^2] over SHARPNESS_BATCHES
    disjoint minibatches of `batch_size` (:func:`batchlab.train.probes.curvature.batch_sharpness`); None for
    replicas no longer training. The same examples and minibatches at every epoch (from `seed`), so that the
    curves show the parameters changing, not the sample."""
    n = data.n_train
    rng = np.random.default_rng(seed)
    rows = rng.permutation(n)[:CURVATURE_EXAMPLES] if n > CURVATURE_EXAMPLES else np.arange(n)
    xd, yd = probes.data(data.x_train[rows], data.y_train[rows])
    b = min(batch_size, n)
    k = max(1, min(SHARPNESS_BATCHES, n // b))
    index = microbatch_index(n, microbatch_size=b, k=k, seed=seed)
    batches = [probes.data(data.x_train[i], data.y_train[i]) for i in index]
    out: list[SharpnessRow | None] = []
    for i, alive in enumerate(active):
        if not alive:
            out.append(None)
            continue
        theta = probes.flat_params(probes.replica(stacked_params, i))
        dim = int(np.prod(theta.shape))
        top = lanczos_top_eigenvalue(partial(probes.hvp, theta, x=xd, y=yd), dim, iters=LANCZOS_ITERATIONS,
                                     tol=LANCZOS_TOL, seed=seed)
        trace = hutchinson_trace(partial(probes.quadratic_forms, theta, x=xd, y=yd), dim,
                                 samples=SHARPNESS_TRACE_SAMPLES, seed=seed)
        grads = probes.microbatch_gradients(theta, data.x_train[index], data.y_train[index])
        products = np.stack([probes.hvp(theta, g, x=xb, y=yb) for g, (xb, yb) in zip(grads, batches)])
        out.append((top.eigenvalue, trace.mean, batch_sharpness(grads, products)))
    return out


def microbatch_index(n: int, *, microbatch_size: int, k: int, seed: int) -> np.ndarray:
    """(k, microbatch_size) row indices of k disjoint microbatches drawn without replacement from n rows by
    `numpy.random.default_rng(seed)` (the same for every backend)."""
    return np.random.default_rng(seed).permutation(n)[:k * microbatch_size].reshape(k, microbatch_size)
