"""What `batchlab diagnose` prints: a table per curve, a verdict paragraph, warnings, the JSON document.

The numbers come from :mod:`batchlab.analysis.diagnose`; this module only words and lays them out. Curves are
named by their label: the path, and the run for files and directories that hold several
(``steps.csv:bs1-seed0-abc``, ``tb/bs1_lr0.03_seed0``).
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


def diagnosis_document(histories: Sequence[LossHistory], diagnosis: Diagnosis) -> dict[str, Any]:
    """What ``batchlab diagnose --json`` prints, one JSON object::

        {"curves": [record, ...],            # diagnosis_records, in input order
         "smallest_batch": label | null,     # the curve called the most likely smallest batch; null when not called
         "too_close_to_call": bool,          # two or more curves and no call
         "verdict": str,                     # the paragraph the table view ends with
         "warnings": [str, ...]}             # diagnosis_warnings: each also printed on stderr

    Plain JSON throughout (NaN is null)."""
    call = diagnosis.smallest_batch
    return {"curves": diagnosis_records(histories, diagnosis),
            "smallest_batch": None if call is None else histories[call].label,
            "too_close_to_call": diagnosis.too_close_to_call, "verdict": verdict(histories, diagnosis),
            "warnings": diagnosis_warnings(histories)}


def diagnosis_records(histories: Sequence[LossHistory], diagnosis: Diagnosis) -> list[dict[str, Any]]:
    """One JSON-ready dict per curve, in input order: label, path, run (null for a file of one curve), format,
    source, resolution, n_points, the metrics, rank (1 = noisiest; tied curves share one) and
    most_likely_smallest_batch (true for at most one curve). NaN becomes None."""
    records = []
    for i, (history, noise) in enumerate(zip(histories, diagnosis.noise, strict=True)):
        record: dict[str, Any] = {"label": history.label, "path": history.path, "run": history.run,
                                  "format": history.format, "source": history.source,
                                  "resolution": history.resolution, "n_points": noise.n_points}
        record.update({m: _json_number(getattr(noise, m)) for m in METRICS})
        record["rank"] = diagnosis.ranks[i]
        record["most_likely_smallest_batch"] = diagnosis.smallest_batch == i
        records.append(record)
    return records


def diagnosis_warnings(histories: Sequence[LossHistory]) -> list[str]:
    """Every one-line warning, in order: how each curve was read (its notes, e.g. a fallback to the epoch series),
    then the :func:`comparability_warning`."""
    notes = [note for h in histories for note in h.notes]
    comparability = comparability_warning(histories)
    return notes + ([comparability] if comparability else [])


def curve_table(history: LossHistory, noise: CurveNoise, *, rank: int, n_curves: int, n_tied: int = 1) -> Table:
    """One curve's metrics, each with what it means; `n_tied` curves (this one included) share its rank."""
    table = Table(title=history.label, title_justify="left",
                  caption=f"{history.format}, {history.source!r}: {noise.n_points:,} points, {history.resolution}",
                  caption_justify="left")
    for name in ("metric", "value", "meaning"):
        table.add_column(name, justify="right" if name == "value" else "left")
    table.add_row("residual std of log-loss", f"{noise.residual_std_log:.4g}",
                  f"jitter around a running median of {DIAGNOSE_WINDOW} points, in log units (0.1: about 10%)")
    table.add_row(f"  {CONFIDENCE:.0%} interval",
                  f"{noise.residual_std_log_low:.4g} to {noise.residual_std_log_high:.4g}",
                  "block bootstrap of the residuals")
    table.add_row("mean |change of log-loss|", f"{noise.mean_abs_first_difference:.4g}",
                  "typical move from one point to the next, trend included")
    table.add_row("fraction rising", f"{noise.fraction_rising:.3f}",
                  "share of points where the loss went up (about 0.5 for noise around a flat trend)")
    table.add_row("lag-1 autocorrelation", f"{noise.residual_lag1_autocorrelation:.3f}",
                  "of the residuals: 0 independent jitter, +1 slow wandering, -1 alternating")
    if n_curves > 1:
        tie = f", tied with {n_tied - 1} other{'s' if n_tied > 2 else ''}" if n_tied > 1 else ""
        table.add_row("rank", f"{rank} of {n_curves}{tie}",
                      "by residual std; 1 = noisiest = most likely the smallest batch; a tie decides nothing")
    return table


def verdict(histories: Sequence[LossHistory], diagnosis: Diagnosis) -> str:
    """One paragraph: which curve most likely came from the smallest batch, with its numbers, or why not."""
    noise, labels = diagnosis.noise, [h.label for h in histories]
    if len(noise) == 1:
        n = noise[0]
        return (f"One curve: {labels[0]} jitters around its trend with a residual std of log-loss of "
                f"{n.residual_std_log:.3g} (typical deviations of about {_percent(n.residual_std_log)}). Ranking "
                "needs two or more curves: give the others as further FILE arguments.")
    order = diagnosis.order
    top, second = order[0], order[1]
    pair = (f"{labels[top]} has a residual std of log-loss of {_with_interval(noise[top])} against "
            f"{_with_interval(noise[second])} for {labels[second]}")
    if diagnosis.tied_for_noisiest:
        text = _tie_text([labels[i] for i in diagnosis.tied_for_noisiest], noise[top].residual_std_log)
    elif diagnosis.smallest_batch is not None:
        smoother = noise[second].residual_std_log
        ratio = (f"{noise[top].residual_std_log / smoother:.3g}x as noisy" if smoother > 0 else
                 "noisy where the other is smooth")
        text = (f"{pair}: {ratio}, and the {CONFIDENCE:.0%} intervals do not overlap, so "
                f"{labels[top]} most likely came from the smallest batch (minibatch sampling noise scales "
                "as 1/sqrt(B), so other things equal the smaller batch gives the noisier curve).")
    else:
        text = (f"Too close to call: {pair}, and the {CONFIDENCE:.0%} intervals overlap, so these curves do not show "
                "which came from the smaller batch.")
    if len(order) > 2 and len(set(diagnosis.ranks)) > 1:
        text += " Noisiest first: " + ", ".join(f"{labels[i]} ({noise[i].residual_std_log:.3g})" for i in order) + "."
    if comparability_warning(histories):
        text += (" Caution: the curves differ in resolution or length, so the ranking compares how they were logged "
                 "as well as their batch sizes.")
    return text


def _tie_text(labels: list[str], value: float) -> str:
    names = ", ".join(labels[:-1]) + f" and {labels[-1]}"
    if value == 0:
        why = ("each equals its running median at every point (a smooth, monotone curve, such as a per-epoch "
               "average or a full-batch run, has no jitter to compare)")
    else:
        why = "their jitter is the same"
    return (f"Too close to call: {names} share rank 1 with a residual std of log-loss of {value:.3g}: {why}, so "
            "these curves do not show which came from the smallest batch.")


def comparability_warning(histories: Sequence[LossHistory]) -> str | None:
    """One line when curves were logged at different resolutions (or differ in length by LENGTH_RATIO_WARNING
    times or more); None when they look comparable."""
    if len(histories) < 2:
        return None
    parts = []
    if len({h.resolution for h in histories}) > 1:
        parts.append("resolutions differ (" + "; ".join(f"{h.label}: {h.resolution}" for h in histories) + ")")
    lengths = [h.n_points for h in histories]
    if max(lengths) >= LENGTH_RATIO_WARNING * min(lengths):
        parts.append("lengths differ (" + " vs ".join(f"{n:,}" for n in lengths) + " points)")
    if not parts:
        return None
    return ("curves not comparable: " + " and ".join(parts) + "; a coarser, averaged or shorter curve shows less "
            "noise, so the ranking is not only about batch size")


def _with_interval(noise: CurveNoise) -> str:
    return f"{noise.residual_std_log:.3g} ({noise.residual_std_log_low:.3g} to {noise.residual_std_log_high:.3g})"


def _percent(log_std: float) -> str:
    return f"{np.expm1(log_std):.0%}"


def _json_number(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None
