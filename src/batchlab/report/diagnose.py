"""What `batchlab diagnose` prints: a table per curve, a verdict paragraph, a comparability warning, JSON records.

The numbers come from :mod:`batchlab.analysis.diagnose`; this module only words and lays them out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from rich.table import Table

from batchlab.analysis.diagnose import CONFIDENCE, DIAGNOSE_WINDOW, CurveNoise, Diagnosis
from batchlab.interop.logs import LossHistory

METRICS = ("residual_std_log", "residual_std_log_low", "residual_std_log_high", "mean_abs_first_difference",
           "fraction_rising", "residual_lag1_autocorrelation")
LENGTH_RATIO_WARNING = 10
"""Curves whose numbers of points differ by this factor or more get the comparability warning too."""


def diagnosis_records(histories: Sequence[LossHistory], diagnosis: Diagnosis) -> list[dict[str, Any]]:
    """One JSON-ready dict per curve, in input order: path, format, source, resolution, n_points, the metrics,
    rank (1 = noisiest) and most_likely_smallest_batch (true for at most one curve). NaN becomes None."""
    records = []
    for i, (history, noise) in enumerate(zip(histories, diagnosis.noise, strict=True)):
        record: dict[str, Any] = {"path": history.path, "format": history.format, "source": history.source,
                                  "resolution": history.resolution, "n_points": noise.n_points}
        record.update({m: _json_number(getattr(noise, m)) for m in METRICS})
        record["rank"] = diagnosis.ranks[i]
        record["most_likely_smallest_batch"] = diagnosis.smallest_batch == i
        records.append(record)
    return records


def curve_table(history: LossHistory, noise: CurveNoise, *, rank: int, n_curves: int) -> Table:
    """One curve's metrics, each with what it means."""
    table = Table(title=history.path, title_justify="left",
                  caption=f"{history.format}, {history.source!r}: {noise.n_points:,} points, {history.resolution}",
                  caption_justify="left")
    for name in ("metric", "value", "meaning"):
        table.add_column(name, justify="right" if name == "value" else "left")
    table.add_row("residual std of log-loss", f"{noise.residual_std_log:.4g}",
                  f"jitter around a running median of {DIAGNOSE_WINDOW} points, in log units (0.1: about 10%)")
    table.add_row(f"  {CONFIDENCE:.0%} interval", f"{noise.residual_std_log_low:.4g} to {noise.residual_std_log_high:.4g}",
                  "block bootstrap of the residuals")
    table.add_row("mean |change of log-loss|", f"{noise.mean_abs_first_difference:.4g}",
                  "typical move from one point to the next, trend included")
    table.add_row("fraction rising", f"{noise.fraction_rising:.3f}",
                  "share of points where the loss went up (about 0.5 for noise around a flat trend)")
    table.add_row("lag-1 autocorrelation", f"{noise.residual_lag1_autocorrelation:.3f}",
                  "of the residuals: 0 independent jitter, +1 slow wandering, -1 alternating")
    if n_curves > 1:
        table.add_row("rank", f"{rank} of {n_curves}", "by residual std; 1 = noisiest = most likely the smallest batch")
    return table


def verdict(histories: Sequence[LossHistory], diagnosis: Diagnosis) -> str:
    """One paragraph: which curve most likely came from the smallest batch, with its numbers, or why not."""
    noise = diagnosis.noise
    if len(noise) == 1:
        n = noise[0]
        return (f"One curve: {histories[0].path} jitters around its trend with a residual std of log-loss of "
                f"{n.residual_std_log:.3g} (typical deviations of about {_percent(n.residual_std_log)}). Ranking "
                "needs two or more curves: give the others as further FILE arguments.")
    order = diagnosis.order
    top, second = order[0], order[1]
    pair = (f"{histories[top].path} has a residual std of log-loss of {_with_interval(noise[top])} against "
            f"{_with_interval(noise[second])} for {histories[second].path}")
    if diagnosis.smallest_batch is not None:
        smoother = noise[second].residual_std_log
        ratio = (f"{noise[top].residual_std_log / smoother:.3g}x as noisy" if smoother > 0 else
                 "noisy where the other is smooth")
        text = (f"{pair}: {ratio}, and the {CONFIDENCE:.0%} intervals do not overlap, so "
                f"{histories[top].path} most likely came from the smallest batch (minibatch sampling noise scales "
                "as 1/sqrt(B), so other things equal the smaller batch gives the noisier curve).")
    else:
        text = (f"Too close to call: {pair}, and the {CONFIDENCE:.0%} intervals overlap, so these curves do not show "
                "which came from the smaller batch.")
    if len(order) > 2:
        text += " Noisiest first: " + ", ".join(f"{histories[i].path} ({noise[i].residual_std_log:.3g})"
                                                for i in order) + "."
    if comparability_warning(histories):
        text += (" Caution: the curves differ in resolution or length, so the ranking compares how they were logged "
                 "as well as their batch sizes.")
    return text


def comparability_warning(histories: Sequence[LossHistory]) -> str | None:
    """One line when curves were logged at different resolutions (or differ in length by LENGTH_RATIO_WARNING
    times or more); None when they look comparable."""
    if len(histories) < 2:
        return None
    parts = []
    if len({h.resolution for h in histories}) > 1:
        parts.append("resolutions differ (" + "; ".join(f"{h.path}: {h.resolution}" for h in histories) + ")")
    lengths = [h.n_points for h in histories]
    if max(lengths) >= LENGTH_RATIO_WARNING * min(lengths):
        parts.append("lengths differ (" + " vs ".join(f"{n:,}" for n in lengths) + " points)")
    if not parts:
        return None
    return ("curves not comparable: " + " and ".join(parts) + "; a coarser, averaged or shorter curve shows less noise, "
            "so the ranking is not only about batch size")


def _with_interval(noise: CurveNoise) -> str:
    return f"{noise.residual_std_log:.3g} ({noise.residual_std_log_low:.3g} to {noise.residual_std_log_high:.3g})"


def _percent(log_std: float) -> str:
    return f"{np.expm1(log_std):.0%}"


def _json_number(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None
