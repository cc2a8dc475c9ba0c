"""Interactive figures (plotly) for the HTML report: the same views as the PNGs, plus the optional analyses.

Curves are drawn raw. A curve longer than `MAX_POINTS` is min/max-decimated (see `batchlab.analysis.decimate`),
and its legend entry and title say so. Only SVG traces (`go.Scatter`, `go.Bar`): WebGL traces render several
times slower in a headless browser and not at all without a GPU context.
Plotly renders a small subset of HTML in titles and legends, so every user-provided string is HTML-escaped.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from batchlab.analysis.decimate import minmax_indices
from batchlab.analysis.runs import RunSummary
from batchlab.analysis.sweeps import mean_and_band
from batchlab.report.colors import batch_size_colors

LOSS_FLOOR = 1e-8
"""Losses are floored here for the log scale (as in the PNG figures)."""
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")
X_CHOICES = (("epoch", "epoch", "epoch", "linear"),
             ("updates", "step", "step (optimizer updates, log scale)", "log"),
             ("examples_seen", "examples seen", "examples seen", "linear"),
             ("wall_time_s", "wall time", "wall time, s (training, compile excluded; log scale)", "log"))
"""Overlay x-axes: (per-epoch array, button label, axis title, axis type)."""
LAYOUT = {"template": "plotly_white", "font": {"size": 12}, "margin": {"l": 60, "r": 20, "t": 80, "b": 60},
          "legend": {"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0}}


def run_label(s: RunSummary, n_train: int) -> str:
    b = f"B = N = {s.batch_size:,}" if s.batch_size == n_train else f"B = {s.batch_size:,}"
    return f"{b}, seed {s.seed}, lr {s.lr:g}"


def _finish(fig: go.Figure, **layout: Any) -> None:
    """The common layout; powers of ten (not SI prefixes such as 100µ) on log axes."""
    fig.update_layout(LAYOUT, **layout)
    fig.update_xaxes(exponentformat="power")
    fig.update_yaxes(exponentformat="power")


def _floor(y: np.ndarray) -> np.ndarray:
    return np.maximum(np.asarray(y, float), LOSS_FLOOR)


def _decimation_note(n: int, kept: int) -> str:
    return "raw" if kept == n else f"min/max-decimated to {kept:,} points: each bucket's lowest and highest kept"


def step_positions(step_epoch: np.ndarray, updates_per_epoch: int) -> np.ndarray:
    """Where each step's minibatch loss was measured, in epochs: the loss of the k-th update of epoch e (k = 1..U)
    is computed before that update, at the parameters reached after e - 1 + (k - 1) / U epochs. (So with the full
    batch, the step loss of epoch e lies on the train loss evaluated after epoch e - 1.)"""
    step_epoch = np.asarray(step_epoch)
    first_of_epoch = np.searchsorted(step_epoch, step_epoch)
    k = np.arange(len(step_epoch)) - first_of_epoch + 1
    return step_epoch - 1 + (k - 1) / updates_per_epoch


def lena_figure(s: RunSummary, epochs: Mapping[str, np.ndarray], steps: tuple[np.ndarray, np.ndarray], *,
                n_train: int, task: str = "classification") -> go.Figure:
    """Train and test loss per epoch (Lena's plot), beside every minibatch loss against (fractional) epoch."""
    step_epoch, step_loss = steps
    n = len(step_loss)
    keep = minmax_indices(step_loss) if n else np.arange(0)
    note = _decimation_note(n, len(keep))
    step_title = f"Every update: {s.updates_per_epoch:,} per epoch, {s.total_updates:,} in all"
    if len(keep) < n:
        step_title += "<br>(min/max-decimated, not smoothed)"
    elif s.updates_per_epoch == 1:
        step_title += "<br>(the minibatch is the training set: each step's loss lies on the train loss)"
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=("Lena's plot: loss after each epoch", step_title))
    train = {"x": epochs["epoch"], "y": _floor(epochs["train_loss"]), "line": {"color": COLORS[0]}, "legendgroup": "train"}
    fig.add_trace(go.Scatter(name="train loss (whole training set)", **train), 1, 1)
    fig.add_trace(go.Scatter(x=epochs["epoch"], y=_floor(epochs["test_loss"]), name="test loss",
                             line={"color": COLORS[3]}), 1, 1)
    if n:
        x = step_positions(step_epoch, s.updates_per_epoch)
        if (np.asarray(step_loss) < LOSS_FLOOR).any():
            note += f"; floored at {LOSS_FLOOR:g} for the log scale"
        fig.add_trace(go.Scatter(x=x[keep], y=_floor(step_loss[keep]), opacity=0.8,
                                 line={"color": "#7f7f7f", "width": 0.7 if len(keep) > 2000 else 2},
                                 name=f"minibatch loss, each of {n:,} steps ({note})"), 1, 2)
        dotted = train | {"line": {"color": COLORS[0], "dash": "dot", "width": 2.5}, "mode": "lines"}
        fig.add_trace(go.Scatter(showlegend=False, **dotted), 1, 2)  # dotted: the step losses show through
    status = "" if s.status == "completed" else f" [{html.escape(s.status)}]"
    from batchlab.report.labels import loss_name

    fig.update_yaxes(type="log", title_text=f"{loss_name(task)} (log scale)")
    fig.update_xaxes(title_text="epoch")
    _finish(fig, height=460, title_text=f"{run_label(s, n_train)}{status}: {s.total_updates:,} "
                      f"updates in {s.wall_time_s:.2f} s of training")
    return fig


def overlay_figure(summaries: list[RunSummary], curves: Mapping[str, Mapping[str, np.ndarray]], *,
                   n_train: int) -> go.Figure:
    """Train (solid) and test (dashed) loss of every batch size and learning rate: the mean over seeds with a
    +/- one standard deviation band; buttons switch the x-axis between epoch, step, examples seen and wall time
    (points at x = 0 are left out on the log axes)."""
    groups: dict[tuple[int, float], list[RunSummary]] = {}
    for s in summaries:
        groups.setdefault((s.batch_size, s.lr), []).append(s)
    traces: list[dict[str, Any]] = []
    data: dict[str, list[tuple[list, list]]] = {key: [] for key, *_ in X_CHOICES}
    decimated = False
    palette = batch_size_colors(b for b, _ in groups)
    for (b, lr), runs in sorted(groups.items()):
        n = min(len(curves[r.run_id]["epoch"]) for r in runs)
        xs = {key: np.mean([curves[r.run_id][key][:n] for r in runs], axis=0) for key, *_ in X_CHOICES}
        name = (f"B = N = {b:,}" if b == n_train else f"B = {b:,}") + f", lr {lr:g}"
        name += f" ({len(runs)} seeds)" if len(runs) > 1 else ""
        for metric, dash in (("train_loss", "solid"), ("test_loss", "dash")):
            mean, band = mean_and_band([curves[r.run_id][metric][:n] for r in runs])
            keep = minmax_indices(mean)
            decimated |= len(keep) < n
            color = palette[b]
            group = f"{name} {metric}"
            if len(runs) > 1:
                traces.append({"fill": "toself", "mode": "lines", "fillcolor": color, "opacity": 0.15, "line": {"width": 0},
                                   "hoverinfo": "skip",
                                   "showlegend": False, "legendgroup": group, "name": f"{group} ± std"})
                lower, upper = _floor((mean - band)[keep]), _floor((mean + band)[keep])
                for key, *_, axis_type in X_CHOICES:
                    x, ok = xs[key][keep], _shown(xs[key][keep], axis_type)
                    data[key].append((np.concatenate([x[ok], x[ok][::-1]]).tolist(),
                                      np.concatenate([upper[ok], lower[ok][::-1]]).tolist()))
            traces.append({"mode": "lines", "line": {"color": color, "dash": dash}, "legendgroup": group,
                               "name": f"{name}: {metric.split('_')[0]} loss"})
            for key, *_, axis_type in X_CHOICES:
                x, ok = xs[key][keep], _shown(xs[key][keep], axis_type)
                data[key].append((x[ok].tolist(), _floor(mean[keep][ok]).tolist()))
    fig = go.Figure([go.Scatter(x=x, y=y, **t) for t, (x, y) in zip(traces, data["epoch"], strict=True)])
    buttons = [{"label": label, "method": "update",
                    "args": [{"x": [x for x, _ in data[key]], "y": [y for _, y in data[key]]},
                          {"xaxis.title.text": title, "xaxis.type": axis_type}]}
               for key, label, title, axis_type in X_CHOICES]
    title = "Train (solid) and test (dashed) loss: mean over seeds ± std band"
    _finish(fig, height=520, title_text=title + (" (min/max-decimated)" if decimated else ""),
                      xaxis_title_text=X_CHOICES[0][2], yaxis_type="log", yaxis_title_text="loss (log scale)",
                      updatemenus=[{"type": "buttons", "direction": "right", "buttons": buttons, "active": 0, "x": 0.07,
                                        "xanchor": "left", "y": 1.02, "yanchor": "bottom", "pad": {"t": 0, "b": 0}}],
                      annotations=[{"text": "x-axis:", "x": 0, "xref": "paper", "xanchor": "left", "y": 1.035, "yref": "paper",
                                        "yanchor": "bottom", "showarrow": False}])
    return fig


def _shown(x: np.ndarray, axis_type: str) -> np.ndarray:
    return x > 0 if axis_type == "log" else np.ones(len(x), bool)


def cost_figure(summaries: list[RunSummary], shown: list[RunSummary], *, n_train: int) -> go.Figure:
    """Time per update against batch size (every run, and the mean per batch size), then the training time,
    updates and examples seen of each run in `shown`."""
    fig = make_subplots(rows=2, cols=2, vertical_spacing=0.2, horizontal_spacing=0.1, subplot_titles=(
        "Cost of one update against batch size<br>(dots: runs; line: mean per batch size)",
        "Which took longer? Training time per run", "Updates per run: ceil(N / B) per epoch", "Examples seen per run"))
    b = np.array([s.batch_size for s in summaries], float)
    per_update = np.array([s.time_per_update_s * 1e6 for s in summaries])
    fig.add_trace(go.Scatter(x=b, y=per_update, mode="markers", name="each run", showlegend=False,
                             marker={"color": COLORS[0], "size": 9, "opacity": 0.7}), 1, 1)
    sizes = np.unique(b)
    fig.add_trace(go.Scatter(x=sizes, y=[np.mean(per_update[b == v]) for v in sizes], mode="lines",
                             name="mean per batch size", showlegend=False, line={"color": COLORS[1]}), 1, 1)
    labels = [run_label(s, n_train).replace(", ", "<br>") for s in shown]
    palette = batch_size_colors(s.batch_size for s in shown)
    colors = [palette[s.batch_size] for s in shown]
    for (row, col), values, fmt in (((1, 2), [s.wall_time_s for s in shown], "%{y:.3f} s"),
                                    ((2, 1), [s.total_updates for s in shown], "%{y:,}"),
                                    ((2, 2), [s.examples_seen for s in shown], "%{y:,}")):
        fig.add_trace(go.Bar(x=labels, y=values, marker_color=colors, texttemplate=fmt, textposition="outside",
                             showlegend=False, cliponaxis=False), row, col)
    fig.update_xaxes(type="log", title_text="batch size (log scale)", row=1, col=1)
    fig.update_yaxes(type="log", title_text="µs per update (log scale)", row=1, col=1)
    fig.update_yaxes(title_text="training time, s", row=1, col=2)
    fig.update_yaxes(type="log", title_text="updates (log scale)", row=2, col=1)
    fig.update_yaxes(type="log", title_text="examples (log scale)", row=2, col=2)
    _finish(fig, height=860, margin={"t": 130},
            title_text="Cost of each run (compile time excluded, per-epoch evaluation included)")
    return fig


def gns_figure(summaries: list[RunSummary], curves: Mapping[str, Mapping[str, np.ndarray]], *, n_train: int,
               b_crit: tuple[float, float, float] | None = None) -> go.Figure | None:
    """B_simple (with its interval where one was measured) against epoch, one line per run; the S(B) fit's
    B_crit (with its interval) as a horizontal line when given. None when no run has a finite B_simple."""
    palette = batch_size_colors(s.batch_size for s in summaries)
    traces, values = [], []
    for s in summaries:
        c = curves[s.run_id]
        if "b_simple" not in c:
            continue
        y = np.asarray(c["b_simple"], float)
        ok = np.isfinite(y)
        if not ok.any():
            continue
        low = np.asarray(c.get("b_simple_low", np.full_like(y, np.nan)), float)[ok]
        high = np.asarray(c.get("b_simple_high", np.full_like(y, np.nan)), float)[ok]
        measured = np.isfinite(low) & np.isfinite(high)
        error = {"type": "data", "symmetric": False, "array": np.where(measured, high - y[ok], 0.0),
                     "arrayminus": np.where(measured, y[ok] - low, 0.0), "visible": bool((measured & (high > low)).any())}
        color = palette[s.batch_size]
        traces.append(go.Scatter(x=np.asarray(c["epoch"])[ok], y=y[ok], error_y=error, mode="lines+markers",
                                 line={"color": color}, name=f"B_simple, {run_label(s, n_train)}"))
        values.append(y[ok])
    if not traces:
        return None
    if b_crit is not None and np.isfinite(b_crit[0]):
        value, low, high = b_crit
        span = [min(float(np.min(c["epoch"])) for c in curves.values()),
                max(float(np.max(c["epoch"])) for c in curves.values())]
        if np.isfinite(low) and np.isfinite(high):
            traces.append(go.Scatter(x=[*span, *span[::-1]], y=[high, high, low, low], fill="toself", mode="none",
                                     fillcolor="rgba(0,0,0,0.08)", hoverinfo="skip",
                                     name=f"B_crit interval [{low:,.3g}, {high:,.3g}]"))
        traces.append(go.Scatter(x=span, y=[value, value], mode="lines", line={"color": "black", "dash": "dash"},
                                 name=f"B_crit from the S(B) fit: {value:,.4g} (measured from steps to target)"))
        values.append(np.array([value]))
    fig = go.Figure(traces)
    shown = np.concatenate(values)
    log_y = bool((shown > 0).all())
    # The axis spans the noise scales and B_crit; a wide B_crit interval may run off it rather than flatten them.
    y_range = [np.log10(shown.min() / 3), np.log10(shown.max() * 3)] if log_y else None
    _finish(fig, height=480, title_text="Gradient noise scale B_simple = tr(Σ) / |G|² during training (bars: "
            "interval where measured)", xaxis_title_text="epoch", yaxis_type="log" if log_y else "linear",
            yaxis_range=y_range, yaxis_title_text="B_simple (examples)")
    return fig


def steps_to_target_figure(stt: Mapping[int, Any], fit: Any = None) -> go.Figure | None:
    """Steps to the target against batch size (log-log) with the fitted S(B) = S_min (1 + B_crit / B) when
    given, beside the training time to the target. None when no batch size reached the target."""
    reached = sorted((int(b), r) for b, r in stt.items() if getattr(r, "feasible", getattr(r, "steps", None)))
    if not reached:
        return None
    b = np.array([x for x, _ in reached], float)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("Steps to target", "Training time to target"))
    hover = [f"lr {getattr(r, 'lr', float('nan')):g}, {getattr(r, 'examples', 0) or 0:,} examples" for _, r in reached]
    fig.add_trace(go.Scatter(x=b, y=[float(r.steps) for _, r in reached], mode="markers", text=hover,
                             marker={"size": 10, "color": COLORS[0]}, name="measured (best over lr and seeds)"), 1, 1)
    s_min, b_crit = getattr(fit, "s_min", None), getattr(fit, "b_crit", None)
    if s_min is not None and b_crit is not None and np.isfinite([s_min, b_crit]).all():
        grid = np.geomspace(b.min(), b.max(), 200)
        low, high = getattr(fit, "b_crit_low", float("nan")), getattr(fit, "b_crit_high", float("nan"))
        fig.add_trace(go.Scatter(x=grid, y=s_min * (1 + b_crit / grid), mode="lines", line={"color": COLORS[3]},
                                 name=f"fit S(B) = S_min (1 + B_crit / B): S_min = {s_min:,.4g}, "
                                      f"B_crit = {b_crit:,.4g} [{low:,.3g}, {high:,.3g}]"), 1, 1)
    fig.add_trace(go.Scatter(x=b, y=[float(getattr(r, "wall_time_s", np.nan)) for _, r in reached],
                             mode="markers", marker={"size": 10, "color": COLORS[1]}, text=hover,
                             name="training time to target"), 1, 2)
    missed = sorted(int(x) for x, r in stt.items() if not getattr(r, "feasible", getattr(r, "steps", None)))
    title = "Steps to target (Shallue et al. 2018) and the S(B) fit (McCandlish et al. 2018)"
    if missed:
        title += "<br>not reached at batch size " + ", ".join(f"{m:,}" for m in missed)
    fig.update_xaxes(type="log", title_text="batch size (log scale)")
    fig.update_yaxes(type="log", title_text="steps (log scale)", row=1, col=1)
    fig.update_yaxes(type="log", title_text="training time, s (log scale)", row=1, col=2)
    _finish(fig, height=480, title_text=title)
    return fig


def cbs_figure(rows: list[dict[str, Any]], b_simple: Mapping[int, float], *,
               b_crit: float | None = None) -> go.Figure | None:
    """CBS(t) from branched runs (Merrill et al. 2025; with the seed interval) against the branch epoch, beside
    the parents' B_simple at those epochs and the sweep's B_crit when there is one. None without CBS rows."""
    known = [r for r in rows if r["cbs"] is not None]
    if not known:
        return None
    x = [r["epoch"] for r in known]
    y = np.array([r["cbs"] for r in known], float)
    low = np.array([r["cbs_low"] if r["cbs_low"] is not None else r["cbs"] for r in known], float)
    high = np.array([r["cbs_high"] if r["cbs_high"] is not None else r["cbs"] for r in known], float)
    traces = [go.Scatter(x=x, y=y, mode="lines+markers", line={"color": COLORS[3]},
                         error_y={"type": "data", "symmetric": False, "array": high - y, "arrayminus": y - low},
                         name="CBS(t): branched at k x B (seed-mean; bars: range over seeds)")]
    gx = sorted(e for e in b_simple if np.isfinite(b_simple[e]))
    if gx:
        traces.append(go.Scatter(x=gx, y=[b_simple[e] for e in gx], mode="lines+markers", line={"color": COLORS[0]},
                                 name="B_simple of the parent runs (a proxy)"))
    if b_crit is not None and np.isfinite(b_crit):
        span = [min(x + gx), max(x + gx)]
        traces.append(go.Scatter(x=span, y=[b_crit, b_crit], mode="lines", line={"color": "black", "dash": "dash"},
                                 name=f"B_crit from the S(B) fit: {b_crit:,.4g}"))
    fig = go.Figure(traces)
    fig.update_layout(xaxis_title="epoch branched from", yaxis_title="batch size (log scale)", yaxis_type="log",
                      title="Critical batch size over training, measured by branching", height=420,
                      legend={"orientation": "h", "y": -0.25})
    return fig
