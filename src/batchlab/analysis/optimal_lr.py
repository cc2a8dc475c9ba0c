"""The optimal learning rate against the batch size, from an lr x batch-size x seed sweep, and the forms that
describe it, chosen by AIC.

Per batch size the best rate is the grid point with the lowest objective (seeds averaged), refined by a parabola
in log-lr through it and its two neighbours (its vertex, when the parabola opens upward and the vertex lies
between the neighbours; a best rate at the edge of the grid is kept and flagged: the optimum may lie beyond).
Objectives: `final`, the log of the mean final training loss (a fixed budget of epochs), and, at a target
training loss, the log of the mean number of updates to reach it (a seed that never reaches it makes the cell
infeasible). Repeating at two or three targets shows how the optimum moves as training proceeds.

Forms, fitted to log lr*(B) by least squares (Gaussian errors in log-lr), each with 95% intervals:
- `constant`  lr = c (the rate does not follow the batch size);
- `linear`    lr = c B (Goyal et al. 2017);
- `sqrt`      lr = c sqrt(B) (Krizhevsky 2014; Malladi et al. 2022 for Adam);
- `saturating` lr = lr_max / (1 + B_noise / B) (McCandlish et al. 2018, SGD);
- `surge`     lr = lr_peak * 2 / (sqrt(B_noise / B) + sqrt(B / B_noise)) (Li et al. 2024, "Surge Phenomenon in
  Optimal Learning Rate and Batch Size Scaling", Adam: rises, peaks at B = B_noise, then falls).
AIC = n ln(RSS / n) + 2k (k parameters, n batch sizes); the lowest wins. With as few batch sizes as a sweep
usually has, a difference of AIC below 2 is no evidence either way, and the text says so.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, stats

FORMS: dict[str, tuple[tuple[str, ...], Callable[..., np.ndarray]]] = {
    "constant": (("c",), lambda b, c: np.full_like(b, c)),
    "linear": (("c",), lambda b, c: c * b),
    "sqrt": (("c",), lambda b, c: c * np.sqrt(b)),
    "saturating": (("lr_max", "b_noise"), lambda b, lr_max, b_noise: lr_max / (1.0 + b_noise / b)),
    "surge": (("lr_peak", "b_noise"),
              lambda b, lr_peak, b_noise: lr_peak * 2.0 / (np.sqrt(b_noise / b) + np.sqrt(b / b_noise))),
}
"""Form name -> (parameter names, lr(B, *parameters))."""
AIC_EVIDENCE = 2.0
"""An AIC lead below this is no evidence for the winner over the runner-up (Burnham & Anderson 2002)."""
TARGET_FRACTIONS = (0.5, 0.8, 0.95)
"""Automatic targets: these fractions of the way, in log-loss, from the initial training loss to the loss every
batch size reaches at its best rate."""


@dataclass(frozen=True)
class OptimalPoint:
    """The best rate at one batch size."""

    batch_size: int
    lr: float
    """The interpolated optimum (the grid point where no parabola applies)."""
    grid_lr: float
    """The best rate of the grid."""
    objective: float
    interpolated: bool
    at_edge: bool
    """The best grid rate is the smallest or largest tried: the optimum may lie outside the grid."""


@dataclass(frozen=True)
class FormFit:
    """One form fitted to the optima: parameters with 95% intervals (NaN where the data cannot bound them)."""

    form: str
    params: dict[str, float]
    low: dict[str, float]
    high: dict[str, float]
    rss: float
    aic: float

    def predict(self, batch_size: np.ndarray | float) -> np.ndarray:
        return FORMS[self.form][1](np.asarray(batch_size, float), *self.params.values())


@dataclass(frozen=True)
class OptimalLr:
    """Optima per batch size at one objective, and the fitted forms, best (lowest AIC) first."""

    objective: str
    """`final`, or `steps to train loss <= T`."""
    target: float | None
    points: tuple[OptimalPoint, ...]
    fits: tuple[FormFit, ...]

    @property
    def best(self) -> FormFit | None:
        return self.fits[0] if self.fits else None

    @property
    def decisive(self) -> bool:
        """The winner leads the runner-up by at least AIC_EVIDENCE."""
        return len(self.fits) > 1 and self.fits[1].aic - self.fits[0].aic >= AIC_EVIDENCE

    def __repr__(self) -> str:
        best = f", best {self.best.form}" if self.best else ""
        return f"OptimalLr({self.objective!r}, {len(self.points)} batch sizes{best})"


def parabola_vertex(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float | None:
    """The vertex of the parabola through three points (x strictly increasing), or None when it does not open
    upward or its vertex lies outside [x0, x2]."""
    (x0, x1, x2), (y0, y1, y2) = x, y
    d01, d12 = (y1 - y0) / (x1 - x0), (y2 - y1) / (x2 - x1)
    curvature = (d12 - d01) / (x2 - x0)
    if not curvature > 0:
        return None
    vertex = (x0 + x1) / 2 - d01 / (2 * curvature)  # y' = d01 + curvature (2x - x0 - x1) = 0
    return vertex if x0 <= vertex <= x2 else None


def best_rate(lrs: Sequence[float], objective: Sequence[float], batch_size: int) -> OptimalPoint | None:
    """The optimum of one batch size from its grid (rates in any order; objective inf where infeasible)."""
    order = np.argsort(lrs)
    lr, y = np.asarray(lrs, float)[order], np.asarray(objective, float)[order]
    if not np.isfinite(y).any():
        return None
    i = int(np.nanargmin(np.where(np.isfinite(y), y, np.inf)))
    at_edge = len(lr) > 1 and i in (0, len(lr) - 1)
    best, interpolated = lr[i], False
    if 0 < i < len(lr) - 1 and np.isfinite(y[i - 1:i + 2]).all():
        vertex = parabola_vertex(np.log(lr[i - 1:i + 2]), y[i - 1:i + 2])
        if vertex is not None:
            best, interpolated = float(np.exp(vertex)), True
    return OptimalPoint(batch_size, float(best), float(lr[i]), float(y[i]), interpolated, at_edge)


def fit_form(form: str, batch_sizes: np.ndarray, lrs: np.ndarray) -> FormFit | None:
    """Least squares of log lr on log form(B) (parameters fitted in log space, so they stay positive); 95%
    intervals from the covariance with Student's t (NaN with no residual degrees of freedom). None when the
    form has more parameters than there are points."""
    names, f = FORMS[form]
    b, y = np.asarray(batch_sizes, float), np.log(np.asarray(lrs, float))
    n, k = len(b), len(names)
    if n < k or n == 0:
        return None

    def model(bb: np.ndarray, *log_params: float) -> np.ndarray:
        return np.log(f(bb, *np.exp(log_params)))

    if k == 1:  # closed form: log c = mean(y - log g(B))
        g = model(b, 0.0)
        log_p, cov = np.array([np.mean(y - g)]), None
    else:
        starts = [(float(np.max(y)), math.log(float(b_noise))) for b_noise in np.geomspace(b.min(), b.max(), 5)]
        best: tuple[float, Any, Any] | None = None
        for p0 in starts:
            try:
                with warnings.catch_warnings():  # an unbounded parameter: its interval becomes NaN below
                    warnings.simplefilter("ignore", optimize.OptimizeWarning)
                    p, c = optimize.curve_fit(model, b, y, p0=p0, maxfev=5000)
            except (RuntimeError, ValueError):
                continue
            r = float(np.sum((y - model(b, *p)) ** 2))
            if best is None or r < best[0] - 1e-12:
                best = (r, p, c)
        if best is None:
            return None
        _, log_p, cov = best
    residuals = y - model(b, *log_p)
    rss = float(np.sum(residuals ** 2))
    dof = n - k
    if dof > 0:
        s2 = rss / dof
        var = np.full(k, s2 / n) if k == 1 else np.diag(np.asarray(cov, float)) if cov is not None else np.full(k, np.nan)
        half = stats.t.ppf(0.975, dof) * np.sqrt(np.where(np.isfinite(var) & (var >= 0), var, np.nan))
    else:
        half = np.full(k, np.nan)
    aic = n * math.log(max(rss, 1e-300) / n) + 2 * k
    params = {name: _exp(v) for name, v in zip(names, log_p)}
    low = {name: _exp(v - h) if math.isfinite(h) else math.nan for name, v, h in zip(names, log_p, half)}
    high = {name: _exp(v + h) if math.isfinite(h) else math.nan for name, v, h in zip(names, log_p, half)}
    return FormFit(form, params, low, high, rss, aic)


def _exp(v: float) -> float:
    """exp that saturates at inf (an unbounded parameter, e.g. B_noise of a saturating fit to linear optima)."""
    return math.inf if v > 700 else float(math.exp(v))


def optimal_lr(cells: Sequence[tuple[int, float, float]], *, objective: str = "final",
               target: float | None = None) -> OptimalLr:
    """From (batch size, rate, objective) cells (objective inf where infeasible), the optimum per batch size and
    every form fitted to them, best AIC first. Needs two or more rates at a batch size to call it an optimum."""
    by_b: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for b, lr, y in cells:
        by_b[int(b)].append((float(lr), float(y)))
    points = []
    for b in sorted(by_b):
        if len(by_b[b]) < 2:
            continue
        lrs, ys = zip(*by_b[b])
        p = best_rate(lrs, ys, b)
        if p is not None:
            points.append(p)
    fits: list[FormFit] = []
    if len(points) >= 2:
        bs = np.array([p.batch_size for p in points], float)
        opt = np.array([p.lr for p in points], float)
        fits = [fit for form in FORMS if (fit := fit_form(form, bs, opt)) is not None]
        fits.sort(key=lambda fit: fit.aic)
    return OptimalLr(objective, target, tuple(points), tuple(fits))


def first_reached(updates: np.ndarray, loss: np.ndarray, target: float) -> float:
    """Updates at the first evaluation whose loss is <= target (inf if never)."""
    hit = np.flatnonzero(np.asarray(loss, float) <= target)
    return float(np.asarray(updates)[hit[0]]) if len(hit) else math.inf


def sweep_cells(runs: Sequence[Any], curves: dict[str, dict[str, np.ndarray]], *,
                target: float | None = None,
                evals: dict[str, dict[str, np.ndarray]] | None = None) -> list[tuple[int, float, float]]:
    """(batch size, rate, objective) per cell of a sweep from RunSummary-like runs (batch_size, lr, run_id,
    status, final_train_loss) and their per-epoch curves: log mean final train loss, or with `target` the log of
    the mean updates to reach it (a diverged or non-reaching seed makes the cell infeasible, inf), counted at
    every evaluation: the epoch ends and, where the study has them (`eval_every_steps`), the `evals` between."""
    by_cell: dict[tuple[int, float], list[float]] = defaultdict(list)
    for s in runs:
        if s.status == "diverged":
            value = math.inf
        elif target is None:
            value = float(s.final_train_loss)
        else:
            e, between = curves[s.run_id], (evals or {}).get(s.run_id, {})
            updates = np.concatenate([e["updates"], between.get("step", np.zeros(0))])
            losses = np.concatenate([e["train_loss"], between.get("train_loss", np.zeros(0))])
            order = np.argsort(updates, kind="stable")
            value = first_reached(updates[order], losses[order], target)
        by_cell[(s.batch_size, s.lr)].append(value if math.isfinite(value) else math.inf)
    out = []
    for (b, lr), values in sorted(by_cell.items()):
        mean = float(np.mean(values))
        out.append((b, lr, math.log(mean) if math.isfinite(mean) and mean > 0 else math.inf))
    return out


def automatic_targets(runs: Sequence[Any], curves: dict[str, dict[str, np.ndarray]]) -> list[float]:
    """TARGET_FRACTIONS of the way in log-loss from the initial training loss to the loss every batch size
    reaches at its best rate (the largest over batch sizes of the lowest final train loss)."""
    finals: dict[int, float] = {}
    initial = []
    for s in runs:
        if s.status == "diverged" or not math.isfinite(s.final_train_loss):
            continue
        finals[s.batch_size] = min(finals.get(s.batch_size, math.inf), float(s.final_train_loss))
        initial.append(float(curves[s.run_id]["train_loss"][0]))
    if not finals or not initial:
        return []
    start, end = float(np.median(initial)), max(finals.values())
    if not (start > end > 0):
        return []
    return [float(math.exp((1 - f) * math.log(start) + f * math.log(end))) for f in TARGET_FRACTIONS]


def optimal_lr_study(runs: Sequence[Any], curves: dict[str, dict[str, np.ndarray]], *,
                     targets: Sequence[float] | None = None,
                     evals: dict[str, dict[str, np.ndarray]] | None = None) -> list[OptimalLr]:
    """The optimal rate against batch size at the end of training and at two or three target training losses
    (default :func:`automatic_targets`); [] for a study without two rates at two batch sizes."""
    per_b: dict[int, set[float]] = defaultdict(set)
    for s in runs:
        per_b[s.batch_size].add(s.lr)
    if sum(len(v) >= 2 for v in per_b.values()) < 2:
        return []
    out = [optimal_lr(sweep_cells(runs, curves), objective="final")]
    for t in (automatic_targets(runs, curves) if targets is None else targets):
        out.append(optimal_lr(sweep_cells(runs, curves, target=t, evals=evals),
                              objective=f"updates to train loss <= {t:.4g}", target=t))
    return out


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    return v


def optimal_lr_dict(results: Sequence[OptimalLr]) -> list[dict[str, Any]]:
    """JSON-ready (NaN and inf as null): per objective its optima per batch size, every fitted form with its
    parameters, intervals and AIC (best first), and the best form's name; for `show --json` key "optimal_lr"."""
    out = []
    for r in results:
        out.append({
            "objective": r.objective, "target": r.target,
            "per_batch_size": [_clean(vars(p)) for p in r.points],
            "fits": [_clean({"form": f.form, "params": f.params, "low": f.low, "high": f.high, "rss": f.rss,
                             "aic": f.aic}) for f in r.fits],
            "best_form": r.best.form if r.best else None, "decisive": r.decisive,
        })
    return out
