"""The curvature estimators against dense eigendecompositions: Lanczos (with its convergence test) and power
iteration on known symmetric matrices, including two near-equal top eigenvalues, and Hutchinson's trace."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from batchlab.errors import BatchlabError
from batchlab.train.probes.curvature import hutchinson_trace, lanczos_top_eigenvalue, power_iteration


def symmetric(eigenvalues: np.ndarray, seed: int = 0) -> np.ndarray:
    """A dense symmetric matrix with the given spectrum and random eigenvectors."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(eigenvalues), len(eigenvalues))))
    return (q * eigenvalues) @ q.T


@pytest.mark.parametrize("gap", [0.5, 1e-3], ids=["separated", "near-equal top pair"])
def test_lanczos_finds_the_top_eigenvalue_of_a_dense_matrix(gap):
    rng = np.random.default_rng(1)
    spectrum = np.concatenate([[10.0, 10.0 - gap], rng.uniform(-3.0, 8.0, 298)])
    h = symmetric(spectrum)
    top = lanczos_top_eigenvalue(lambda v: h @ v, 300, iters=150, tol=1e-8)
    assert top.converged and top.iterations < 150
    assert top.eigenvalue == pytest.approx(np.linalg.eigvalsh(h)[-1], rel=1e-8)


def test_power_iteration_is_slow_where_the_top_pair_is_near_equal_and_lanczos_is_not():
    rng = np.random.default_rng(2)
    h = symmetric(np.concatenate([[5.0, 4.999], rng.uniform(0.0, 4.0, 198)]), seed=3)
    exact = np.linalg.eigvalsh(h)[-1]
    power = power_iteration(lambda v: h @ v, 200, iters=60, tol=1e-10)
    lanczos = lanczos_top_eigenvalue(lambda v: h @ v, 200, iters=60, tol=1e-10)
    assert not power.converged  # the ratio 4.999 / 5 makes power iteration crawl
    assert lanczos.converged and lanczos.eigenvalue == pytest.approx(exact, rel=1e-9)


def test_lanczos_reports_not_converged_when_the_budget_is_too_small_and_the_largest_not_the_largest_magnitude():
    h = symmetric(np.linspace(-20.0, 3.0, 400), seed=4)  # the most negative eigenvalue is the largest in magnitude
    short = lanczos_top_eigenvalue(lambda v: h @ v, 400, iters=3, tol=1e-10)
    assert short.iterations == 3 and not short.converged
    full = lanczos_top_eigenvalue(lambda v: h @ v, 400, iters=400, tol=1e-9)
    assert full.converged and full.eigenvalue == pytest.approx(3.0, rel=1e-7)
    assert power_iteration(lambda v: h @ v, 400, iters=5000, tol=1e-12).eigenvalue == pytest.approx(-20.0, rel=1e-6)


def test_an_invariant_subspace_ends_lanczos_exactly_and_bad_arguments_are_one_line():
    h = np.diag([4.0, 4.0, 1.0, 1.0])  # two distinct eigenvalues: the Krylov space has dimension 2
    top = lanczos_top_eigenvalue(lambda v: h @ v, 4, iters=4, tol=0.0)
    assert top.converged and top.iterations <= 2 and top.eigenvalue == pytest.approx(4.0, rel=1e-12)
    with pytest.raises(BatchlabError, match="iters: got 0"):
        lanczos_top_eigenvalue(lambda v: v, 3, iters=0)


def test_hutchinson_trace_is_exact_for_a_diagonal_matrix_and_unbiased_otherwise():
    d = np.arange(1.0, 51.0)
    exact = hutchinson_trace(lambda vs: (vs * d) @ vs.T if vs.ndim == 1 else np.einsum("sp,p,sp->s", vs, d, vs),
                             50, samples=5)
    assert exact.mean == pytest.approx(d.sum()) and exact.stderr == pytest.approx(0.0, abs=1e-9)
    h = symmetric(np.linspace(0.0, 2.0, 60), seed=5)
    est = hutchinson_trace(lambda vs: np.einsum("sp,pq,sq->s", vs, h, vs), 60, samples=2000, seed=1)
    assert abs(est.mean - np.trace(h)) < 4 * est.stderr


def test_lanczos_on_overflowing_products_reports_nan_not_converged_instead_of_crashing():
    # A replica whose parameters overflowed without its loss turning non-finite (seen in CI: numpy's eigh raised)
    top = lanczos_top_eigenvalue(lambda v: np.full_like(v, np.inf), 10)
    assert np.isnan(top.eigenvalue) and not top.converged and top.iterations == 1


def test_hutchinson_stops_at_its_relative_standard_error_on_a_prefix_of_the_same_vectors():
    """The convergence test: a diagonal H (every v^T H v equals the trace) stops at min_samples; a dense one runs
    until the standard error is within rel_stderr of the estimate, and the estimate is the fixed-n one for that n."""
    rng = np.random.default_rng(0)
    diag = np.diag(rng.uniform(1, 2, 40))
    calls: list[int] = []

    def forms(h):
        def f(vs):
            calls.append(len(vs))
            return np.einsum("si,ij,sj->s", vs, h, vs)
        return f

    early = hutchinson_trace(forms(diag), 40, samples=30, seed=1, rel_stderr=0.05, min_samples=10)
    assert early.samples == 10 and calls == [10] and early.mean == pytest.approx(np.trace(diag))
    a = rng.normal(size=(40, 40))
    dense = a @ a.T / 40 + np.eye(40)
    calls.clear()
    trace = hutchinson_trace(forms(dense), 40, samples=200, seed=1, rel_stderr=0.03, min_samples=10, block=5)
    assert 10 < trace.samples < 200 and sum(calls) == trace.samples and calls[0] == 10 and set(calls[1:]) == {5}
    assert trace.stderr <= 0.03 * abs(trace.mean)
    # the estimate is the mean over the first n of the 200 vectors the seed draws for the fixed-n estimate
    vs = np.asarray(jax.random.rademacher(jax.random.PRNGKey(1), (200, 40), np.float32), float)
    q = np.einsum("si,ij,sj->s", vs, dense, vs)
    assert trace.mean == pytest.approx(q[:trace.samples].mean(), rel=1e-12)
    assert hutchinson_trace(forms(dense), 40, samples=200, seed=1).mean == pytest.approx(q.mean(), rel=1e-12)
