"""The optimal rate against batch size in words and tables (:mod:`batchlab.analysis.optimal_lr`): the best
rate per batch size at the end and at each target loss, the form that fits best with its parameters, and
whether the optimum surged (rose, then fell: Li et al. 2024)."""

from __future__ import annotations

import math

from rich.table import Table

from batchlab.analysis.optimal_lr import AIC_EVIDENCE, FormFit, OptimalLr, OptimalPoint

CAPTION = ("best rate per batch size (seeds averaged), refined by a parabola in log-lr through the best grid "
           "rate and its neighbours; ~ = interpolated, ! = best at the grid's edge (the optimum may lie beyond)")
FORMULAS = {"constant": "lr = c", "linear": "lr = c B", "sqrt": "lr = c sqrt(B)",
            "saturating": "lr = lr_max / (1 + B_noise / B)",
            "surge": "lr = lr_peak 2 / (sqrt(B_noise / B) + sqrt(B / B_noise))"}


def point_text(p: OptimalPoint | None) -> str:
    if p is None:
        return ""
    return f"{'~' if p.interpolated else ''}{p.lr:.3g}{'!' if p.at_edge else ''}"


def _column(r: OptimalLr) -> str:
    return "end of training" if r.target is None else f"to loss {r.target:.3g}"


def optimal_lr_rows(results: list[OptimalLr]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): batch sizes down, objectives across, then a row with each objective's best form."""
    sizes = sorted({p.batch_size for r in results for p in r.points})
    header = ["batch size", *(_column(r) for r in results)]
    rows = [[f"{b:,}", *(point_text(next((p for p in r.points if p.batch_size == b), None)) for r in results)]
            for b in sizes]
    rows.append(["best form", *(r.best.form if r.best else "" for r in results)])
    return header, rows


def optimal_lr_table(results: list[OptimalLr], *, title: str = "Optimal learning rate") -> Table:
    header, rows = optimal_lr_rows(results)
    table = Table(title=title, title_justify="left", caption=CAPTION)
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def fit_text(f: FormFit) -> str:
    def one(name: str) -> str:
        lo, hi = f.low[name], f.high[name]
        interval = f" [{lo:.3g}, {hi:.3g}]" if math.isfinite(lo) and math.isfinite(hi) else " (unbounded)"
        return f"{name} = {f.params[name]:.3g}{interval}"

    return f"{f.form} ({FORMULAS[f.form]}): " + ", ".join(one(n) for n in f.params) + f"; AIC {f.aic:.1f}"


def surged(r: OptimalLr) -> bool | None:
    """Whether the optimum rose and then fell: the surge form fits best with its peak B_noise inside the batch
    sizes measured, and the largest batch size's optimum lies below the peak's. None without a fit."""
    if r.best is None or len(r.points) < 3:
        return None
    sizes = [p.batch_size for p in r.points]
    if r.best.form != "surge":
        return False
    peak = r.best.params["b_noise"]
    return min(sizes) < peak < max(sizes) and r.points[-1].lr < max(p.lr for p in r.points)


def optimal_lr_paragraph(results: list[OptimalLr]) -> str:
    """The best-fitting form per objective with its parameters and 95% intervals, the AIC lead over the
    runner-up, and whether the optimum surged; empty when there is nothing to fit."""
    parts = []
    for r in results:
        if r.best is None:
            continue
        lead = r.fits[1].aic - r.fits[0].aic if len(r.fits) > 1 else math.nan
        evidence = (f"ahead of {r.fits[1].form} by {lead:.1f} in AIC" if lead >= AIC_EVIDENCE else
                    f"but only {lead:.1f} ahead of {r.fits[1].form} in AIC (no real evidence between them)"
                    if math.isfinite(lead) else "")
        surge = surged(r)
        surge_text = "" if surge is None else ("; the optimum surged (rose, then fell past its peak)" if surge
                                               else "; no surge (the optimum did not rise and then fall)")
        parts.append(f"{_column(r)}: {fit_text(r.best)}, {evidence}{surge_text}")
    if not parts:
        return ""
    return ("Optimal learning rate against batch size (best rate per batch size, seeds averaged, interpolated in "
            "log-lr; forms fitted to log lr, chosen by AIC): " + "; ".join(parts) + ".")
