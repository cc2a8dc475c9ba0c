"""Gradient noise scale against a hand-worked example, exact enumeration, and gradients of known G and Sigma."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from batchlab.analysis.gns import _fieller_interval, _jackknife_covariance, b_simple_exact, b_simple_two_batch
from batchlab.errors import BatchlabError


def test_exact_mode_hand_worked():
    # G = (2, 1), |G|^2 = 5; deviations (-1, -1), (1, -1), (0, 2): tr(Sigma) = (2 + 2 + 4) / 3
    est = b_simple_exact(np.array([[1.0, 0.0], [3.0, 0.0], [2.0, 3.0]]))
    assert est.grad_sq_norm == pytest.approx(5.0) and est.trace_sigma == pytest.approx(8 / 3)
    assert est.b_simple == pytest.approx(8 / 15) and est.method == "exact" and est.n == 3
    assert np.isnan(est.b_simple_low) and "b_simple=0.5333" in repr(est)


def test_exact_mode_sigma_gives_the_minibatch_noise_by_enumeration():
    # With Sigma normalised by 1/N, E|G_B|^2 over all minibatches is |G|^2 + tr(Sigma) / B with replacement and
    # |G|^2 + tr(Sigma) / B * (N - B) / (N - 1) without: both exactly, by enumerating every ordered minibatch.
    grads = np.random.default_rng(0).normal(size=(5, 3)) + 0.5
    est = b_simple_exact(grads)
    for b in (2, 3):
        with_repl = [np.sum(grads[list(i)].mean(0) ** 2) for i in itertools.product(range(5), repeat=b)]
        without = [np.sum(grads[list(i)].mean(0) ** 2) for i in itertools.permutations(range(5), b)]
        assert np.mean(with_repl) == pytest.approx(est.grad_sq_norm + est.trace_sigma / b)
        assert np.mean(without) == pytest.approx(est.grad_sq_norm + est.trace_sigma / b * (5 - b) / 4)


def test_two_batch_with_single_examples_of_the_whole_set_equals_the_exact_mode():
    grads = np.random.default_rng(1).normal(size=(20, 4)) + 0.3
    exact = b_simple_exact(grads)
    two = b_simple_two_batch(grads, 1, n_train=20)
    assert two.grad_sq_norm == pytest.approx(exact.grad_sq_norm)
    assert two.trace_sigma == pytest.approx(exact.trace_sigma) and two.b_simple == pytest.approx(exact.b_simple)
    # without n_train the rows are treated as a sample: tr(Sigma) becomes the 1/(N - 1) sample covariance
    sample = b_simple_two_batch(grads, 1)
    assert sample.trace_sigma == pytest.approx(exact.trace_sigma * 20 / 19)
    assert sample.grad_sq_norm == pytest.approx(exact.grad_sq_norm - sample.trace_sigma / 20)


G = np.array([1.0, -0.5, 0.25, 0.0, 0.5])
L = np.random.default_rng(2).normal(size=(5, 5))
SIGMA = L @ L.T  # per-example covariance; tr(Sigma) / |G|^2 = B_simple
TRUE_B_SIMPLE = np.trace(SIGMA) / (G @ G)


def microbatches(rng, k, b, size=()):
    """k microbatch gradients of size b: each the mean of b draws from N(G, Sigma), i.e. N(G, Sigma / b)."""
    return G + rng.normal(size=(*size, k, 5)) @ L.T / np.sqrt(b)


def test_expected_squared_norm_of_a_minibatch_gradient():
    g = microbatches(np.random.default_rng(3), 200_000, 4)
    sq = np.sum(g**2, axis=1)
    assert sq.mean() == pytest.approx(G @ G + np.trace(SIGMA) / 4, abs=4 * sq.std() / np.sqrt(len(sq)))


def test_two_batch_numerator_and_denominator_are_unbiased():
    rng = np.random.default_rng(4)
    draws = microbatches(rng, 4, 8, size=(4000,))
    estimates = [b_simple_two_batch(d, 8) for d in draws]
    g2, tr = np.array([e.grad_sq_norm for e in estimates]), np.array([e.trace_sigma for e in estimates])
    def se(x):
        return x.std() / np.sqrt(len(x))

    assert abs(g2.mean() - G @ G) < 4 * se(g2)
    assert abs(tr.mean() - np.trace(SIGMA)) < 4 * se(tr)
    assert se(tr) < 0.05 * np.trace(SIGMA)  # the check has teeth: a 10% bias would fail it


def test_two_batch_is_unbiased_for_disjoint_draws_from_a_finite_set_only_with_n_train():
    rng = np.random.default_rng(5)
    population = rng.normal(size=(12, 3)) + np.array([0.5, 0.0, -0.5])
    exact = b_simple_exact(population)
    estimates = {None: [], 12: []}
    for _ in range(6000):
        rows = population[rng.permutation(12)[:6]].reshape(3, 2, 3).mean(axis=1)  # k = 3 microbatches of 2
        for n_train, found in estimates.items():
            est = b_simple_two_batch(rows, 2, n_train=n_train)
            found.append((est.grad_sq_norm, est.trace_sigma))
    corrected, naive = np.array(estimates[12]), np.array(estimates[None])
    se = corrected.std(axis=0) / np.sqrt(len(corrected))
    assert np.all(np.abs(corrected.mean(axis=0) - [exact.grad_sq_norm, exact.trace_sigma]) < 4 * se)
    # without the finite-population correction tr(Sigma) comes out N / (N - 1) too large (here 9%)
    assert naive[:, 1].mean() == pytest.approx(exact.trace_sigma * 12 / 11, abs=4 * se[1])
    assert naive[:, 1].mean() - exact.trace_sigma > 5 * se[1]


def test_fieller_interval_hand_worked():
    # g = 4, t = 8, V = diag(1, 4), q = 2: 48 r^2 - 64 r + 12 <= 0, r in [(32 - sqrt(448)) / 48, (32 + sqrt(448)) / 48]
    low, high = _fieller_interval(4.0, 8.0, np.diag([1.0, 4.0]), 2.0)
    assert (low, high) == (pytest.approx(48 / (32 + np.sqrt(448))), pytest.approx(48 / (32 - np.sqrt(448))))
    assert low < 8 / 4 < high
    # the |G|^2 interval reaches 0 (g^2 < q^2 V_gg): the upper end is inf, the lower end stays finite
    low, high = _fieller_interval(1.0, 8.0, np.diag([1.0, 4.0]), 2.0)
    assert high == np.inf and low == pytest.approx(48 / (8 + np.sqrt(64 + 3 * 48)))
    # tr(Sigma) itself unresolved (t^2 < q^2 V_tt): nothing is known
    assert _fieller_interval(4.0, 3.0, np.diag([1.0, 4.0]), 2.0) == (0.0, np.inf)


def test_jackknife_covariance_matches_the_spread_of_the_estimates():
    # tr(Sigma)'s jackknife variance is nearly unbiased; |G|^2's errs high (Efron-Stein), by at most ~2x here
    rng = np.random.default_rng(6)
    draws = microbatches(rng, 32, 4, size=(3000,))
    estimates = [b_simple_two_batch(d, 4) for d in draws]
    g2, tr = np.array([e.grad_sq_norm for e in estimates]), np.array([e.trace_sigma for e in estimates])
    variances = np.array([np.diag(_jackknife_covariance(d @ d.T, 4, None)) for d in draws[:500]]).mean(axis=0)
    assert variances[1] == pytest.approx(tr.var(), rel=0.1)
    assert g2.var() <= variances[0] <= 2.2 * g2.var()


def test_interval_is_deterministic_and_brackets_the_estimate():
    draw = microbatches(np.random.default_rng(7), 32, 16)
    a, b = b_simple_two_batch(draw, 16), b_simple_two_batch(draw, 16)
    assert (a.b_simple_low, a.b_simple_high) == (b.b_simple_low, b.b_simple_high)
    assert a.b_simple_low <= a.b_simple <= a.b_simple_high and a.method == "two_batch" and a.n == 32
    wider = b_simple_two_batch(draw, 16, confidence=0.99)
    assert wider.b_simple_low < a.b_simple_low and a.confidence == 0.95 and wider.confidence == 0.99


def test_microbatches_covering_the_training_set_give_the_exact_noise_scale_and_a_tight_interval():
    # b = 1, k = N: both estimators are exact and |G|^2 has no sampling error (finite-population factor 0)
    grads = np.random.default_rng(8).normal(size=(40, 3)) + 0.6
    est = b_simple_two_batch(grads, 1, n_train=40)
    exact = b_simple_exact(grads).b_simple
    assert est.b_simple == pytest.approx(exact) and est.b_simple_low <= exact <= est.b_simple_high
    iid = b_simple_two_batch(grads, 1)
    assert est.b_simple_high / est.b_simple_low < iid.b_simple_high / iid.b_simple_low


def test_pure_noise_gives_an_infinite_noise_scale():
    # microbatch gradients symmetric about 0: the big-batch gradient is 0, the |G|^2 estimate negative
    est = b_simple_two_batch(np.array([[1.0, 2.0], [-1.0, -2.0]]), 4)
    assert est.grad_sq_norm < 0 and est.b_simple == np.inf
    assert (est.b_simple_low, est.b_simple_high) == (0.0, np.inf)  # two microbatches: no jackknife, no interval
    # G = 0: B_simple is inf, and a 95% interval must reach it (upper end inf) in about 95% of draws
    draws = np.random.default_rng(9).normal(size=(300, 32, 5)) @ L.T
    estimates = [b_simple_two_batch(d, 4) for d in draws]
    assert np.mean([e.b_simple_high == np.inf for e in estimates]) >= 0.93
    assert all(e.b_simple == np.inf for e in estimates if e.grad_sq_norm <= 0)
    assert all(e.b_simple_low <= e.b_simple <= e.b_simple_high for e in estimates)


def test_invalid_inputs_are_named():
    with pytest.raises(BatchlabError, match="microbatch_grads"):
        b_simple_two_batch(np.ones((1, 3)), 4)
    with pytest.raises(BatchlabError, match="n_train"):
        b_simple_two_batch(np.ones((4, 3)), 4, n_train=15)
    with pytest.raises(BatchlabError, match="per_example_grads"):
        b_simple_exact(np.ones(3))
