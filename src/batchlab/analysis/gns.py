"""The gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish, Kaplan, Amodei et al. 2018), from gradients.

Sigma is the covariance of one example's gradient and G the full-batch gradient, at fixed parameters. B_simple
is the batch size at which a minibatch gradient's noise (tr(Sigma) / B) equals its signal (|G|^2); it predicts the
critical batch size when the Hessian is close to a multiple of the identity. Inputs are plain arrays of flattened
gradients (see :mod:`batchlab.train.probes.jax` for computing them from a model).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from batchlab.errors import invalid

Floats = float | np.floating | np.ndarray
"""A number or an array of them (the estimators work elementwise, on one estimate or on many)."""


@dataclass(frozen=True)
class GnsEstimate:
    """A gradient-noise-scale estimate with the two quantities it is the ratio of."""

    b_simple: float
    """tr(Sigma) / |G|^2, in examples; inf when the |G|^2 estimate is <= 0 (noise swamps the mean gradient)."""
    b_simple_low: float
    """Lower end of the `confidence` interval; NaN for the exact mode."""
    b_simple_high: float
    grad_sq_norm: float
    """|G|^2 (its unbiased estimate in the two-batch mode, which can be negative)."""
    trace_sigma: float
    """tr(Sigma) (its unbiased estimate in the two-batch mode)."""
    method: str
    """"exact" or "two_batch"."""
    n: int
    """Examples (exact mode) or microbatches (two-batch mode) the estimate rests on."""
    confidence: float = float("nan")

    def __repr__(self) -> str:
        interval = "" if np.isnan(self.b_simple_low) else f" [{self.b_simple_low:.4g}, {self.b_simple_high:.4g}]"
        return (f"GnsEstimate(b_simple={self.b_simple:.4g}{interval}, grad_sq_norm={self.grad_sq_norm:.4g}, "
                f"trace_sigma={self.trace_sigma:.4g}, method={self.method!r}, n={self.n})")


def _ratio(trace_sigma: Floats, grad_sq_norm: Floats) -> np.ndarray:
    """tr(Sigma) / |G|^2, mapped to [0, inf]: a negative trace estimate gives 0, a non-positive |G|^2 gives inf."""
    trace_sigma = np.maximum(np.asarray(trace_sigma, float), 0.0)
    grad_sq_norm = np.asarray(grad_sq_norm, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(grad_sq_norm > 0, trace_sigma / np.where(grad_sq_norm > 0, grad_sq_norm, 1.0), np.inf)


def b_simple_exact(per_example_grads: np.ndarray) -> GnsEstimate:
    """B_simple from the gradients g_i of all N examples of the training set, rows of an (N, P) array::

        G = (1/N) sum_i g_i,   tr(Sigma) = (1/N) sum_i |g_i - G|^2,   B_simple = tr(Sigma) / |G|^2

    Sigma is normalised by 1/N, not 1/(N - 1): the rows are the whole population SGD samples from, G is exact,
    and with this Sigma the minibatch gradient of B examples drawn with replacement has covariance exactly
    Sigma / B (and Sigma / B * (N - B) / (N - 1) without replacement). For gradients of a random subset of
    examples use :func:`b_simple_two_batch` with `microbatch_size=1`: it corrects the bias of |G|^2 too (its
    tr(Sigma) is then the 1/(N - 1) sample covariance).
    """
    grads = np.asarray(per_example_grads, float)
    if grads.ndim != 2 or len(grads) < 1:
        raise invalid("per_example_grads", grads.shape, "a 2-D array (examples, parameters) with >= 1 row")
    mean = grads.mean(axis=0)
    trace_sigma = float(np.mean(np.sum((grads - mean) ** 2, axis=1)))
    grad_sq_norm = float(mean @ mean)
    nan = float("nan")
    return GnsEstimate(float(_ratio(trace_sigma, grad_sq_norm)), nan, nan, grad_sq_norm, trace_sigma, "exact",
                       len(grads))


def _noise_weight(batch_size: np.ndarray | float, n_train: int | None) -> np.ndarray:
    """f(B) with E|G_B|^2 = |G|^2 + tr(Sigma) f(B): 1/B for independent draws, (N - B) / (B (N - 1)) for B
    distinct examples out of N (Sigma normalised by 1/N, as in `b_simple_exact`)."""
    batch_size = np.asarray(batch_size, float)
    return 1.0 / batch_size if n_train is None else (n_train - batch_size) / (batch_size * (n_train - 1))


def _two_batch(small_sq: Floats, big_sq: Floats, b_small: float, b_big: float,
               n_train: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Unbiased (|G|^2, tr(Sigma)) from mean |G_small|^2 and |G_big|^2 (McCandlish et al. 2018, appendix A)."""
    f_small, f_big = _noise_weight(b_small, n_train), _noise_weight(b_big, n_train)
    trace_sigma = (small_sq - big_sq) / (f_small - f_big)
    grad_sq_norm = (f_small * big_sq - f_big * small_sq) / (f_small - f_big)
    return grad_sq_norm, trace_sigma


def b_simple_two_batch(microbatch_grads: np.ndarray, microbatch_size: int, *, n_train: int | None = None,
                       confidence: float = 0.95) -> GnsEstimate:
    """B_simple from k >= 2 microbatch gradients g_j (rows of a (k, P) array), each the mean over b examples.

    With B_small = b, B_big = k b, |G_small|^2 = (1/k) sum_j |g_j|^2 and G_big = (1/k) sum_j g_j, the unbiased
    estimators of McCandlish et al. 2018 (appendix A), from E|G_B|^2 = |G|^2 + tr(Sigma) / B, are::

        |G|^2     ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
        tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1/B_small - 1/B_big)

    Each is unbiased, their ratio is not; the numerator and denominator are averaged (over the k microbatches)
    before dividing. With `n_train` = N, the microbatches are taken to be disjoint draws without replacement
    from N examples (as :func:`batchlab.train.probes.jax.microbatch_gradients` makes them): 1/B is then replaced by
    (N - B) / (B (N - 1)), which keeps both estimators unbiased for |G|^2 and the 1/N-normalised tr(Sigma) of
    `b_simple_exact` (with b = 1 and k = N the two modes agree exactly). Without `n_train` the bias is O(1/N).

    Confidence interval (deterministic; see :func:`_jackknife_covariance` and :func:`_fieller_interval`):

    1. The joint covariance V of (|G|^2, tr(Sigma)) estimated by the delete-one-microbatch jackknife (Quenouille
       1956, Tukey 1958): theta_(j) = both estimators from the k - 1 other microbatches (B_big = (k - 1) b),
       V = (k - 1)/k sum_j (theta_(j) - theta_(.)) (theta_(j) - theta_(.))^T. |G|^2 is a U-statistic of degree 2
       (the mean of g_i . g_j over pairs i != j, plus a multiple of mean |g_j|^2), and for those the jackknife
       variance is biased upward (Efron & Stein 1981): by 2 tr(C^2) / ((k - 1)(k - 2)) for C = Cov(g_j), at most
       doubling the part that dominates when noise swamps the signal, so the interval errs wide, never narrow.
       The jackknife treats microbatches as independent; drawn without replacement, the big-batch mean gradient
       that |G|^2 rests on has variance smaller by the factor 1 - k b / N (exactly so for its linear part, and
       zero at k b = N, where |G_big|^2 = |G|^2). With `n_train` the |G|^2 row and column of V are scaled by
       sqrt(1 - k b / N). tr(Sigma) is left unscaled: it measures the spread within microbatches, which stays
       random even when the microbatches partition the training set.
    2. Fieller's interval for the ratio (Fieller 1954), in r = 1/B_simple = |G|^2 / tr(Sigma): the r with
       (|G|^2 - r tr(Sigma))^2 <= q^2 Var(|G|^2 - r tr(Sigma)), q the two-sided t quantile with k - 1 degrees of
       freedom. Unlike the delta method it does not assume |G|^2 far from 0, and it always contains the point
       estimate (the left side is 0 there). r <= 0 means |G|^2 <= 0, i.e. B_simple = inf, so the interval is
       [1 / r_high, 1 / r_low] with 1 / r read as inf for r <= 0: the upper end is inf exactly when the |G|^2
       interval reaches 0 (the signal is not resolved from the noise), the lower end stays informative; an
       |G|^2 interval wholly below 0 gives [inf, inf] (no signal at all, as at a minimum of the loss). When
       tr(Sigma) itself is not resolved (its interval reaches 0) the set is unbounded and the interval is
       [0, inf]; with k = 2 there is no jackknife and the interval is [0, inf] too.

    Measured coverage of the nominal 95% interval (tests/analysis/test_gns_coverage.py, 100-200 draws each):
    91-100% for Gaussian microbatch gradients at k = 16 and 64, b = 1 and 32, B_simple / (k b) from 0.05 to 10;
    94-100% against the exact B_simple of softmax regression on digits (at initialization and after 20 and 300
    full-batch steps), from b = 1 up to microbatches that cover the training set. The percentile bootstrap over
    microbatches used before scored a resampled duplicate as a distinct example, which inflates |G_big|^2 and
    pulls B_simple down: it covered the digits B_simple 0-85% of the time, 0% with k b = 1,792 of 1,797.
    """
    grads = np.asarray(microbatch_grads, float)
    if grads.ndim != 2 or len(grads) < 2:
        raise invalid("microbatch_grads", grads.shape, "a 2-D array (microbatches, parameters) with >= 2 rows")
    k, b = len(grads), microbatch_size
    if b < 1:
        raise invalid("microbatch_size", b, "an integer >= 1")
    if n_train is not None and n_train < k * b:
        raise invalid("n_train", n_train, f">= microbatches x microbatch_size = {k * b} (disjoint draws)")
    if not 0 < confidence < 1:
        raise invalid("confidence", confidence, "a number in (0, 1)")

    gram = grads @ grads.T  # |mean of any subset of rows|^2 comes from it: the jackknife never forms (k, P) again
    grad_sq_norm, trace_sigma = _two_batch(np.mean(np.diag(gram)), gram.mean(), b, k * b, n_train)
    b_simple = float(_ratio(trace_sigma, grad_sq_norm))
    if k < 3:
        low, high = 0.0, np.inf
    else:
        cov = _jackknife_covariance(gram, b, n_train)
        q = float(stats.t.ppf(0.5 + confidence / 2, k - 1))
        low, high = _fieller_interval(float(grad_sq_norm), float(trace_sigma), cov, q)
        low, high = min(low, b_simple), max(high, b_simple)  # already so by construction; absorbs rounding
    return GnsEstimate(b_simple, float(low), float(high), float(grad_sq_norm), float(trace_sigma), "two_batch", k,
                       confidence)


def _jackknife_covariance(gram: np.ndarray, b: int, n_train: int | None) -> np.ndarray:
    """Delete-one-microbatch jackknife covariance of (|G|^2, tr(Sigma)), 2 x 2, from the k x k Gram matrix of the
    microbatch gradients; the |G|^2 entries carry the finite-population factor 1 - k b / N (see
    :func:`b_simple_two_batch`)."""
    k = len(gram)
    diag, row_sums = np.diag(gram), gram.sum(axis=1)
    small_sq = (diag.sum() - diag) / (k - 1)
    big_sq = (gram.sum() - 2 * row_sums + diag) / (k - 1) ** 2
    theta = np.stack(_two_batch(small_sq, big_sq, b, (k - 1) * b, n_train), axis=1)
    centred = theta - theta.mean(axis=0)
    cov = (k - 1) / k * centred.T @ centred
    if n_train is not None:
        scale = np.array([np.sqrt(max(1.0 - k * b / n_train, 0.0)), 1.0])
        cov = cov * np.outer(scale, scale)
    return cov


def _fieller_interval(grad_sq_norm: float, trace_sigma: float, cov: np.ndarray, q: float) -> tuple[float, float]:
    """[low, high] for B_simple = tr(Sigma) / |G|^2 from Fieller's set for r = |G|^2 / tr(Sigma)::

        { r : (g - r t)^2 <= q^2 (V_gg - 2 r V_gt + r^2 V_tt) }  =  { r : A r^2 + B' r + C <= 0 },
        A = t^2 - q^2 V_tt,  B' = -2 (g t - q^2 V_gt),  C = g^2 - q^2 V_gg

    (g, t the two estimates, V their covariance). For A > 0 the set is [r_1, r_2] and maps to B in
    [1 / r_2, 1 / r_1], 1 / r read as inf for r <= 0. For A <= 0 (t not resolved) it is unbounded: [0, inf].
    No spread at all (V = 0) gives the point itself."""
    point = float(_ratio(trace_sigma, grad_sq_norm))
    v_gg, v_gt, v_tt = float(cov[0, 0]), float(cov[0, 1]), float(cov[1, 1])
    if v_gg <= 0 and v_tt <= 0:
        return point, point
    a = trace_sigma**2 - q**2 * v_tt
    if a <= 0:
        return 0.0, float("inf")
    half_b = -(grad_sq_norm * trace_sigma - q**2 * v_gt)
    c = grad_sq_norm**2 - q**2 * v_gg
    root = np.sqrt(max(half_b**2 - a * c, 0.0))
    r_low, r_high = (-half_b - root) / a, (-half_b + root) / a

    def inverse(r: float) -> float:
        return 1.0 / r if r > 0 else float("inf")

    return inverse(r_high), inverse(r_low)
