"""Steps to a result against the batch size, the critical batch size, and the fastest batch size in wall time.

Steps-to-result follows Shallue et al. 2018 ("Measuring the Effects of Data Parallelism on Neural Network
Training") and the semantics of google-research `batch_science/measurement_utils.py` (`compute_steps_to_result`,
`apply_step_budget`, `apply_example_budget`). The fit of S(B) = S_min (1 + B_crit / B) follows McCandlish et al.
2018 ("An Empirical Model of Large-Batch Training").
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from batchlab.errors import invalid

REGIME_FACTOR = 4.0
"""B <= B_crit / 4 is "perfect scaling", B >= 4 B_crit is "maximal data parallelism" (see `scaling_regime`)."""


IDENTIFIED_FACTOR = 10.0
"""A fitted B_crit more than this factor outside the measured batch sizes is not identified (`FitWarning`): over the
measured range S(B) then differs from one of its asymptotes (S_min B_crit / B, or S_min) by under 10%."""


class FitWarning(UserWarning):
    """The S(B) fit puts B_crit far outside the measured batch sizes, where the data cannot identify it."""


@dataclass(frozen=True)
class Trial:
    """One training run's evaluations: a batch size, a learning rate, a seed."""

    batch_size: int
    lr: float
    seed: int
    steps: np.ndarray
    """Optimizer updates taken before each evaluation (increasing; 0 is the evaluation before training)."""
    values: np.ndarray
    """The goal metric at each evaluation, lower is better (a loss, or an error rate = 1 - accuracy)."""
    wall_times: np.ndarray
    """Training time in seconds at each evaluation."""
    diverged: bool


@dataclass(frozen=True)
class StepsToTarget:
    """The fewest steps any trial of one batch size needed to reach the target; None/NaN when none did."""

    batch_size: int
    steps: int | None
    examples: int | None
    """steps * batch_size."""
    wall_time_s: float
    """The winning trial's training time at the evaluation that reached the target (NaN when infeasible)."""
    lr: float | None
    seed: int | None
    n_trials: int
    n_diverged: int
    previous_evaluation: int | None = None
    """Steps at the winning trial's evaluation before the one that reached the target: the target was crossed
    somewhere in (previous_evaluation, steps], so `steps` is an upper bound that far above the truth."""

    @property
    def feasible(self) -> bool:
        return self.steps is not None

    @property
    def resolution(self) -> float:
        """(steps - previous_evaluation) / steps: how coarse the measurement is (0 exact; 0.5: the target could
        have been reached at half the steps). NaN when infeasible."""
        if self.steps is None or self.previous_evaluation is None:
            return float("nan")
        if self.steps == 0:
            return 0.0  # reached at initialization: exact
        return (self.steps - self.previous_evaluation) / self.steps

    def __repr__(self) -> str:
        if not self.feasible:
            return f"StepsToTarget(batch_size={self.batch_size}, infeasible, trials={self.n_trials})"
        return (f"StepsToTarget(batch_size={self.batch_size}, steps={self.steps}, examples={self.examples}, "
                f"lr={self.lr:g}, seed={self.seed})")


def within_budget(batch_size: int, steps: np.ndarray, *, max_steps: int | None = None,
                  max_examples: int | None = None) -> np.ndarray:
    """Which evaluations count under the budgets: steps <= `max_steps` and batch_size * steps <= `max_examples`
    (batch_science's `apply_step_budget` and `apply_example_budget`); all of them without budgets."""
    steps = np.asarray(steps)
    ok = np.ones(steps.shape, bool)
    if max_steps is not None:
        ok &= steps <= max_steps
    if max_examples is not None:
        ok &= batch_size * steps <= max_examples
    return ok


def steps_to_target(trials: Sequence[Trial], target: float, *, max_steps: int | None = None,
                    max_examples: int | None = None) -> dict[int, StepsToTarget]:
    """For each batch size B: over all its trials (learning rates, seeds), the fewest steps at which an evaluation
    has a value strictly below `target` (`value < target`, as `compute_steps_to_result` with maximize=False).

    Only evaluations within the budgets count: steps <= `max_steps` and B * steps <= `max_examples`. A diverged
    trial is infeasible as a whole (Shallue et al. count diverged trials as infeasible), even if it reached the
    target before diverging; a trial that never reaches the target within the budgets is
    infeasible. Ties in steps go to the earlier trial in `trials`. Returns one entry per batch size present,
    in increasing batch size; infeasible batch sizes have steps None.
    """
    by_batch: dict[int, list[Trial]] = {}
    for trial in trials:
        by_batch.setdefault(int(trial.batch_size), []).append(trial)
    out = {}
    for b in sorted(by_batch):
        best: tuple[int, float, Trial, int] | None = None
        for trial in by_batch[b]:
            if trial.diverged:
                continue
            steps, values = np.asarray(trial.steps), np.asarray(trial.values, float)
            ok = (values < target) & within_budget(b, steps, max_steps=max_steps, max_examples=max_examples)
            hits = np.flatnonzero(ok)
            if len(hits) and (best is None or steps[hits[0]] < best[0]):
                previous = int(steps[hits[0] - 1]) if hits[0] > 0 else 0
                best = (int(steps[hits[0]]), float(np.asarray(trial.wall_times)[hits[0]]), trial, previous)
        n_diverged = sum(t.diverged for t in by_batch[b])
        if best is None:
            out[b] = StepsToTarget(b, None, None, float("nan"), None, None, len(by_batch[b]), n_diverged)
        else:
            s, wall, trial, previous = best
            out[b] = StepsToTarget(b, s, s * b, wall, float(trial.lr), int(trial.seed), len(by_batch[b]), n_diverged,
                                   previous)
    return out


@dataclass(frozen=True)
class CriticalBatchFit:
    """S(B) = S_min (1 + B_crit / B) fitted to steps to a target; E_min = S_min B_crit examples.

    The `*_low`/`*_high` bounds are a `confidence` interval from the fit's covariance (see `fit_critical_batch`).
    """

    s_min: float
    b_crit: float
    e_min: float
    log_se_s_min: float
    """Standard error of ln S_min: S_min is uncertain by a factor of about exp(log_se_s_min)."""
    log_se_b_crit: float
    log_se_e_min: float
    s_min_low: float
    s_min_high: float
    b_crit_low: float
    b_crit_high: float
    e_min_low: float
    e_min_high: float
    confidence: float
    n: int
    """Number of batch sizes fitted."""
    rms_log_residual: float

    def predict_steps(self, batch_size: float | np.ndarray) -> np.ndarray:
        """S(B) = S_min (1 + B_crit / B)."""
        return self.s_min * (1.0 + self.b_crit / np.asarray(batch_size, float))

    def __repr__(self) -> str:
        return (f"CriticalBatchFit(b_crit={self.b_crit:.4g} [{self.b_crit_low:.3g}, {self.b_crit_high:.3g}], "
                f"s_min={self.s_min:.4g}, e_min={self.e_min:.4g}, n={self.n})")


def fit_critical_batch(batch_sizes: Sequence[float] | np.ndarray, steps: Sequence[float] | np.ndarray, *,
                       confidence: float = 0.95) -> CriticalBatchFit:
    """Fit S(B) = S_min (1 + B_crit / B) (McCandlish et al. 2018, eq. 2.11) to steps-to-target at >= 3 batch sizes.

    Method: nonlinear least squares in log space, minimising sum_i (ln S_i - ln S_min - ln(1 + B_crit / B_i))^2
    over theta = (ln S_min, ln B_crit). The log treats errors as relative (steps are counted at evaluations, so
    their resolution scales with S, and seed-to-seed spread is roughly proportional to S) and keeps both
    parameters positive. The linear fit S = S_min + (S_min B_crit) / B would be dominated by the small batch
    sizes, whose step counts are largest.

    Uncertainty: standard errors of theta from the covariance s^2 (J^T J)^-1 at the optimum, with s^2 the residual
    variance on n - 2 degrees of freedom (independent, equal-variance log errors assumed); ln E_min = ln S_min +
    ln B_crit gets its variance from the same covariance. Intervals are theta +- t_{n-2} * se, exponentiated. With
    3 batch sizes they rest on one degree of freedom and are wide, as they should be. Noise-free points give the
    exact parameters and zero standard errors.

    Raises ValueError (a BatchlabError) for fewer than 3 distinct positive batch sizes with finite positive steps:
    two points fit any (S_min, B_crit) exactly and leave nothing to judge the model by. Warns `FitWarning` when
    B_crit lies more than `IDENTIFIED_FACTOR` outside the measured batch sizes (it is then not identified; the
    optimiser is bounded to keep it finite).
    """
    b = np.asarray(batch_sizes, float)
    s = np.asarray(steps, float)
    if b.shape != s.shape or b.ndim != 1:
        raise invalid("batch_sizes, steps", (b.shape, s.shape), "two 1-D sequences of equal length")
    if not 0 < confidence < 1:
        raise invalid("confidence", confidence, "a number in (0, 1)")
    keep = np.isfinite(b) & np.isfinite(s) & (b > 0) & (s > 0)
    b, s = b[keep], s[keep]
    if len(np.unique(b)) < 3:
        raise invalid("batch_sizes", tuple(b.tolist()),
                      "at least 3 distinct batch sizes with finite, positive steps to target (the fit of "
                      "S_min and B_crit needs one point more than its two parameters)")
    theta, cov, rss = _fit_log_space(b, s)
    dof = len(b) - 2
    cov = cov * (rss / dof)
    var_e = cov[0, 0] + cov[1, 1] + 2 * cov[0, 1]  # ln E_min = ln S_min + ln B_crit
    log_se = np.sqrt(np.clip([cov[0, 0], cov[1, 1], var_e], 0.0, None))
    log_values = np.array([theta[0], theta[1], theta[0] + theta[1]])
    t = float(stats.t.ppf(0.5 + confidence / 2, dof))
    with np.errstate(over="ignore"):  # an unidentified parameter's interval may run to inf
        (s_min, b_crit, e_min), low, high = (np.exp(log_values + d * t * log_se) for d in (0, -1, 1))
    return CriticalBatchFit(
        s_min=float(s_min), b_crit=float(b_crit), e_min=float(e_min), log_se_s_min=float(log_se[0]),
        log_se_b_crit=float(log_se[1]), log_se_e_min=float(log_se[2]), s_min_low=float(low[0]),
        s_min_high=float(high[0]), b_crit_low=float(low[1]), b_crit_high=float(high[1]), e_min_low=float(low[2]),
        e_min_high=float(high[2]), confidence=confidence, n=len(b), rms_log_residual=float(np.sqrt(rss / len(b))),
    )


def _fit_log_space(b: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """theta = (ln S_min, ln B_crit) minimising the log residuals; (J^T J)^-1 at theta; the residual sum of squares.
    Warns `FitWarning` when B_crit is not identified."""
    log_s = np.log(s)

    def residuals(theta: np.ndarray) -> np.ndarray:
        return log_s - theta[0] - np.log1p(np.exp(theta[1]) / b)

    # Bounds keep the optimiser finite when B_crit is not identified (B_crit -> 0 or -> inf).
    lo = np.array([log_s.min() - 30.0, np.log(b.min()) - 15.0])
    hi = np.array([log_s.max() + 1.0, np.log(b.max()) + 15.0])
    result = optimize.least_squares(residuals, _initial_guess(b, s).clip(lo + 1e-9, hi - 1e-9), bounds=(lo, hi),
                                    method="trf", xtol=1e-12, ftol=1e-12, gtol=1e-12)
    b_crit = float(np.exp(result.x[1]))
    if not b.min() / IDENTIFIED_FACTOR <= b_crit <= b.max() * IDENTIFIED_FACTOR:
        identified = "E_min = S_min B_crit" if b_crit > b.max() else "S_min"
        warnings.warn(f"B_crit = {b_crit:.3g} lies more than {IDENTIFIED_FACTOR:g}x outside the measured batch sizes "
                      f"[{b.min():g}, {b.max():g}]: the data follow one asymptote of S(B) and do not identify B_crit "
                      f"(only {identified}); measure batch sizes nearer to it", FitWarning, stacklevel=3)
    return result.x, np.linalg.pinv(result.jac.T @ result.jac), float(np.sum(result.fun**2))


def _initial_guess(b: np.ndarray, s: np.ndarray) -> np.ndarray:
    """theta0 from the linear least-squares fit S = a + c / B (a = S_min, c = S_min B_crit) when both are
    positive, else (min S, median B)."""
    c, a = np.polyfit(1.0 / b, s, 1)
    if a > 0 and c > 0:
        return np.array([np.log(a), np.log(c / a)])
    return np.array([np.log(s.min()), np.log(np.median(b))])


def scaling_regime(batch_size: float, b_crit: float, *, factor: float = REGIME_FACTOR) -> str:
    """Shallue et al.'s regime of a batch size, read off the fitted S(B) = S_min (1 + B_crit / B):

    - "perfect scaling" for B <= B_crit / factor: examples to target E(B) = E_min (1 + B / B_crit) are within
      1 + 1/factor (25% for factor 4) of E_min, and doubling B still cuts the steps by >= 40%;
    - "maximal data parallelism" for B >= factor * B_crit: steps are within 1 + 1/factor of S_min, and doubling B
      saves at most 10% of the steps;
    - "diminishing returns" in between.

    The bands are symmetric in log B around B_crit, where the step and example costs are both twice their minimum.
    """
    if not (np.isfinite(b_crit) and b_crit > 0):
        raise invalid("b_crit", b_crit, "a finite number > 0")
    if not factor > 1:
        raise invalid("factor", factor, "a number > 1")
    if batch_size <= b_crit / factor:
        return "perfect scaling"
    if batch_size >= factor * b_crit:
        return "maximal data parallelism"
    return "diminishing returns"


@dataclass(frozen=True)
class WallTimeToTarget:
    """Predicted training time to the target at one batch size: steps to target x time per update."""

    batch_size: int
    steps: float
    time_per_update_s: float
    wall_time_s: float


@dataclass(frozen=True)
class FastestBatchSize:
    """The batch size with the least predicted wall time to the target (None if none reaches it), and the table."""

    batch_size: int | None
    table: tuple[WallTimeToTarget, ...]

    def __repr__(self) -> str:
        return f"FastestBatchSize(batch_size={self.batch_size}, candidates={len(self.table)})"


def fastest_batch_size(steps_to_target_by_b: Mapping[int, StepsToTarget | float | None],
                       time_per_update_by_b: Mapping[int, float]) -> FastestBatchSize:
    """Predicted wall time to target T(B) = S(B) * t_update(B) for every batch size, and its argmin.

    `steps_to_target_by_b` maps B to steps (None or NaN when infeasible), or is the output of `steps_to_target`;
    `time_per_update_by_b` maps B to the measured seconds per optimizer update (e.g. wall time / total updates,
    which includes the per-epoch evaluation). Infeasible batch sizes get wall time inf. Ties go to the smaller B.
    Raises ValueError (a BatchlabError) when a feasible batch size has no timing.
    """
    rows = []
    for b in sorted(steps_to_target_by_b):
        entry = steps_to_target_by_b[b]
        steps = entry.steps if isinstance(entry, StepsToTarget) else entry
        steps = float("nan") if steps is None else float(steps)
        if np.isfinite(steps) and b not in time_per_update_by_b:
            raise invalid("time_per_update_by_b", sorted(time_per_update_by_b),
                          f"a time per update for every feasible batch size, including {b}")
        per_update = float(time_per_update_by_b.get(b, float("nan")))
        wall = steps * per_update if np.isfinite(steps) else float("inf")
        rows.append(WallTimeToTarget(int(b), steps, per_update, wall))
    finite = [r for r in rows if np.isfinite(r.wall_time_s)]
    best = min(finite, key=lambda r: (r.wall_time_s, r.batch_size)).batch_size if finite else None
    return FastestBatchSize(best, tuple(rows))


def measured_time_to_target(reached: Mapping[int, StepsToTarget]) -> FastestBatchSize:
    """Time to target as measured: per batch size, the training clock (compile time excluded) of its fastest
    trial at the first evaluation at or below the target (`StepsToTarget.wall_time_s`), and the batch size with
    the least of it (ties to the smaller; None when none reached the target). This is the one "time to target"
    the text, the report's table and `show --json` quote; `time_per_update_s` in its rows is that time over the
    steps (NaN at 0 steps). :func:`fastest_batch_size` is the prediction S(B) x t_update(B) from other timings."""
    rows = []
    for b in sorted(reached):
        st = reached[b]
        steps = float("nan") if st.steps is None else float(st.steps)
        wall = float(st.wall_time_s) if st.feasible and np.isfinite(st.wall_time_s) else float("inf")
        per_update = wall / steps if np.isfinite(wall) and steps > 0 else float("nan")
        rows.append(WallTimeToTarget(int(b), steps, per_update, wall))
    finite = [r for r in rows if np.isfinite(r.wall_time_s)]
    best = min(finite, key=lambda r: (r.wall_time_s, r.batch_size)).batch_size if finite else None
    return FastestBatchSize(best, tuple(rows))
