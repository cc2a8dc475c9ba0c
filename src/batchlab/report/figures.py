"""Static figures (matplotlib, Agg): Lena's figure per run, an overlay of all runs, the cost of each run, and the
scaling view.

Made to be read at a glance: one colour per batch size in every figure (:func:`batchlab.report.colors.batch_size_colors`, ordered from
the smallest batch, dark, to the largest, light), legends outside the data, titles that fit, log axes with labelled
ticks, no negative ticks for counts. Curves are drawn raw; the per-step panel adds, over the raw cloud of minibatch
losses, their running mean over one epoch (the "epoch loss" that Keras and Lightning print) and says how many step
losses were exactly zero (a log axis cannot show them).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from batchlab.analysis.runs import RunSummary
from batchlab.analysis.sweeps import mean_and_band
from batchlab.report.colors import batch_size_colors
from batchlab.report.labels import loss_name, number
from batchlab.study_data import StudyData

TRAIN_COLOR, TEST_COLOR, STEP_COLOR, EPOCH_MEAN_COLOR = "#1f77b4", "#d62728", "#7f7f7f", "#000000"
"""Lena's figure shows one run: its curves are coloured by what they measure."""
DPI = 110


def epoch_running_mean(step_loss: np.ndarray, updates_per_epoch: int) -> np.ndarray:
    """The mean of the last `updates_per_epoch` minibatch losses at each step (fewer in the first epoch): at each
    epoch's last step it is the mean over that epoch's minibatches, what Keras and Lightning report as the epoch
    loss. Exact zeros count as the zeros they are."""
    y = np.asarray(step_loss, np.float64)
    window = max(int(updates_per_epoch), 1)
    c = np.concatenate([[0.0], np.cumsum(y)])
    i = np.arange(1, len(y) + 1)
    start = np.maximum(i - window, 0)
    return (c[i] - c[start]) / (i - start)


def batch_label(b: int, n_train: int) -> str:
    return f"B = N = {b:,}" if b == n_train else f"B = {b:,}"


def _label(s: RunSummary, n_train: int) -> str:
    return f"{batch_label(s.batch_size, n_train)}, seed {s.seed}" + (f", lr {s.lr:g}" if s.lr else "")


def _tick(value: float, _pos: object = None) -> str:
    """A log-axis tick label: 0.2, 5, 300, 2000, 1e-4, 3e6."""
    if value <= 0 or not math.isfinite(value):
        return ""
    return f"{value:g}" if 1e-3 <= value < 1e5 else number(value, 1)


def readable_log_axis(axis, *, decades_with_subticks: float = 3.0) -> None:
    """Label a log axis that spans few decades at 1, 2 and 5 of each decade (matplotlib labels only powers of
    ten, so an axis within one decade can show a single label, or none)."""
    lo, hi = sorted(axis.get_view_interval())
    if not (lo > 0 and math.isfinite(hi)):
        return
    decades = math.log10(hi / lo)
    if decades <= decades_with_subticks:
        subs = (1.0, 2.0, 5.0) if decades > 1 else (1.0, 2.0, 3.0, 5.0, 7.0)
        axis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
        axis.set_major_formatter(ticker.FuncFormatter(_tick))
        axis.set_minor_formatter(ticker.NullFormatter())


def _below(ax: Axes, ncols: int = 1, fontsize: float = 8.5, markerscale: float = 1.0, **kw) -> None:
    """The axes' legend under it, outside the data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        legend = ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=ncols,
                           fontsize=fontsize, frameon=False, markerscale=markerscale, **kw)
        for handle in legend.legend_handles:  # a faint cloud still gets a visible key
            if handle is not None:
                handle.set_alpha(1.0)


def _title(ax: Axes, text: str, width: int = 48) -> None:
    ax.set_title(textwrap.fill(text, width), fontsize=10.5)


def _suptitle(fig: Figure, text: str, width: int) -> None:
    fig.suptitle(textwrap.fill(text, width), fontsize=11)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def lena_figure(s: RunSummary, epochs: dict[str, np.ndarray], steps: tuple[np.ndarray, np.ndarray], *,
                n_train: int, setup: str, path: Path, task: str = "classification") -> Path:
    """Train and test loss against epoch (Lena's plot), beside every minibatch loss against (fractional) epoch
    with its running mean over one epoch and the whole-training-set loss."""
    fig, (ax, ax_steps) = plt.subplots(1, 2, figsize=(12, 5.2))  # laid out by hand below: see LENA_LAYOUT
    ax.plot(epochs["epoch"], epochs["train_loss"], label="train loss (whole training set)", color=TRAIN_COLOR)
    ax.plot(epochs["epoch"], epochs["test_loss"], label="test loss", color=TEST_COLOR)
    ax.set(xlabel="epoch", ylabel=f"{loss_name(task)} (log scale)", yscale="log")
    _title(ax, "Lena's plot: loss after each epoch", 60)
    ax.grid(alpha=0.3, which="both")
    _below(ax, ncols=2)
    step_epoch, step_loss = steps
    step_loss = np.asarray(step_loss, np.float64)
    if len(step_loss):
        # a step's loss is measured before its update: the k-th (k = 0..U-1) of epoch e at e - 1 + k / U
        x = step_epoch - 1 + (np.arange(len(step_loss)) % s.updates_per_epoch) / s.updates_per_epoch
        zero = step_loss == 0
        shown = np.isfinite(step_loss) & (step_loss > 0)
        n = len(step_loss)
        alpha = float(np.clip(20_000 / max(n, 1), 0.1, 0.8))
        share = f"{zero.mean():.0%}" if zero.mean() >= 0.01 else "<1%"
        zeros = (f"; {int(zero.sum()):,} ({share}) exactly 0, not drawn (a log axis has no 0)"
                 if zero.any() else "; none exactly 0")
        ax_steps.plot(x[shown], step_loss[shown], ".", ms=2.5 if n > 2000 else 4, color=STEP_COLOR, alpha=alpha,
                      mew=0, label=textwrap.fill(f"minibatch loss of each of {n:,} steps (raw{zeros})", 72))
        if s.updates_per_epoch > 1:
            ax_steps.plot(x, epoch_running_mean(step_loss, s.updates_per_epoch), color=EPOCH_MEAN_COLOR, lw=1.4,
                          label=f"running mean over one epoch ({s.updates_per_epoch:,} steps; Keras' epoch loss)")
        if shown.any():
            low = float(np.quantile(step_loss[shown], 0.001))
            ax_steps.set_ylim(bottom=low / 2)
    ax_steps.plot(epochs["epoch"], epochs["train_loss"], color=TRAIN_COLOR, lw=1.6,
                  label="train loss (whole training set, after each epoch)")
    ax_steps.set(xlabel="epoch", ylabel="loss (log scale)", yscale="log")
    _title(ax_steps, f"Every update: {s.updates_per_epoch:,} per epoch, {s.total_updates:,} in all", 60)
    ax_steps.grid(alpha=0.3, which="both")
    _below(ax_steps, markerscale=3)  # the cloud's dots are tiny
    for a in (ax, ax_steps):
        readable_log_axis(a.yaxis)
    status = "" if s.status == "completed" else f" [{s.status}]"
    title = textwrap.fill(f"{_label(s, n_train)}{status}: {s.total_updates:,} updates in {s.wall_time_s:.2f} s  |  "
                          f"{setup}", 130)
    fig.suptitle(title, fontsize=11)
    title_lines = title.count("\n") + 1
    legend_lines = max(sum(label.count("\n") + 1 for label in a.get_legend_handles_labels()[1]) for a in (ax, ax_steps))
    fig.subplots_adjust(**{**LENA_LAYOUT, "top": LENA_LAYOUT["top"] - 0.04 * (title_lines - 2),
                           "bottom": LENA_LAYOUT["bottom"] + 0.034 * max(legend_lines - 3, 0)})
    return _save(fig, path)


LENA_LAYOUT = {"left": 0.06, "right": 0.985, "bottom": 0.235, "top": 0.855, "wspace": 0.2}
"""Lena's figure's axes, fixed: matplotlib's constrained layout found the same places (legends under the axes,
the long one wrapped, the axes higher for more legend lines; for a title of two lines, lower for more) at the cost
of another drawing, a third of a figure's time (0.41 s -> 0.28 s at batch size 1), and a sweep draws 88 of them."""


def overlay_figure(summaries: list[RunSummary], curves: dict[str, dict[str, np.ndarray]], *, n_train: int,
                   setup: str, path: Path) -> Path:
    """Train (solid) and test (dashed) loss against epoch, updates and training time; one line per batch size and
    learning rate: the mean over seeds, with a +/- one standard deviation band when there are several."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.6), layout="constrained")
    axes_x = (("epoch", "epoch", "linear"), ("updates", "updates (optimizer steps, log scale)", "log"),
              ("wall_time_s", "training time, s (log scale)", "log"))
    groups: dict[tuple[int, float], list[RunSummary]] = {}
    for s in summaries:
        groups.setdefault((s.batch_size, s.lr), []).append(s)
    colors = batch_size_colors(b for b, _ in groups)
    several_lrs = len({lr for _, lr in groups}) > 1
    handles = []
    for (b, lr), runs in sorted(groups.items()):
        n = min(len(curves[r.run_id]["epoch"]) for r in runs)
        label = batch_label(b, n_train) + (f", lr {lr:g}" if several_lrs else "") + (
            f" ({len(runs)} seeds)" if len(runs) > 1 else "")
        for metric, ls in (("train_loss", "-"), ("test_loss", "--")):
            mean, band = mean_and_band([curves[r.run_id][metric][:n] for r in runs])
            for ax, (key, _, xscale) in zip(axes, axes_x, strict=True):
                x = np.mean([curves[r.run_id][key][:n] for r in runs], axis=0)
                keep = x > 0 if xscale == "log" else np.ones_like(x, bool)
                (line,) = ax.plot(x[keep], mean[keep], color=colors[b], ls=ls, lw=1.4)
                if key == "epoch" and metric == "train_loss":
                    line.set_label(label)
                    handles.append(line)
                if len(runs) > 1:
                    ax.fill_between(x[keep], np.maximum((mean - band)[keep], 1e-8), (mean + band)[keep],
                                    color=colors[b], alpha=0.15, lw=0)
    for ax, (_, xlabel, xscale) in zip(axes, axes_x, strict=True):
        ax.set(xlabel=xlabel, ylabel="loss (log scale)", yscale="log", xscale=xscale)
        ax.grid(alpha=0.3, which="both")
        readable_log_axis(ax.yaxis)
        if xscale == "log":
            readable_log_axis(ax.xaxis)
    _title(axes[0], "against epochs (passes over the data)")
    _title(axes[1], "against updates")
    _title(axes[2], "against training time")
    style = [plt.Line2D([], [], color="0.3", ls="-", label="train loss"),
             plt.Line2D([], [], color="0.3", ls="--", label="test loss")]
    fig.legend(handles=[*handles, *style], loc="outside lower center", ncols=min(len(handles) + 2, 7), fontsize=9,
               frameon=False)
    _suptitle(fig, f"Train (solid) and test (dashed) loss, mean over seeds ± std band  |  {setup}", 170)
    return _save(fig, path)


def cost_figure(summaries: list[RunSummary], *, n_train: int, setup: str, path: Path) -> Path:
    """Per batch size: training time, total updates and time per update; a bar at the mean over the runs shown
    (seeds), a dot per run."""
    sizes = sorted({s.batch_size for s in summaries})
    colors = batch_size_colors(sizes)
    runs = {b: [s for s in summaries if s.batch_size == b] for b in sizes}
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2), layout="constrained")
    shared = any(len(r) > 1 for r in runs.values())
    panels = ((axes[0], lambda s: s.wall_time_s, "training time, s", " s", "linear"),
              (axes[1], lambda s: float(s.total_updates), "updates (log scale)", "", "log"),
              (axes[2], lambda s: s.time_per_update_s * 1e6, "time per update, µs (log scale)", " µs", "log"))
    x = np.arange(len(sizes))
    ticks = [f"{b:,}" + ("\n(full)" if b == n_train else "") for b in sizes]
    many = len(sizes) > 6
    for ax, value, ylabel, unit, yscale in panels:
        per = [[value(s) for s in runs[b]] for b in sizes]
        means = [float(np.mean(v)) for v in per]
        bars = ax.bar(x, means, color=[colors[b] for b in sizes], alpha=0.85, width=0.7)
        for i, v in enumerate(per):
            if len(v) > 1:
                ax.plot(np.full(len(v), x[i]), v, "o", ms=3, color="black", alpha=0.6)
        text = [(f"{m:,.0f}" if unit == "" or m >= 100 else number(m)) + ("" if many else unit) for m in means]
        ax.bar_label(bars, labels=text, fontsize=7.5 if many else 8.5, rotation=90 if many else 0, padding=2)
        ax.set_xticks(x, ticks, fontsize=8 if many else 9)
        positive = all(math.isfinite(m) and m > 0 for m in means)
        ax.set(ylabel=ylabel, xlabel="batch size", yscale=yscale if positive else "linear")
        ax.margins(y=0.25 if many else 0.15)
        if yscale == "log" and positive:
            top = max(means)
            ax.set_ylim(min(means) / 3, top * (30 if many else 8))
            readable_log_axis(ax.yaxis)
        ax.grid(alpha=0.3, axis="y", which="both")
    note = " (each run's time is its group's: replicas train together)" if shared else ""
    _title(axes[0], f"Which took longer? Compile excluded, per-epoch evaluation included{note}")
    _title(axes[1], "Updates: ceil(N / B) per epoch")
    _title(axes[2], "Cost of one update")
    _suptitle(fig, f"Cost of each batch size  |  {setup}", 160)
    return _save(fig, path)


def scaling_figure(analysis, curves: dict[str, dict[str, np.ndarray]], summaries: list[RunSummary], *,
                   setup: str, path: Path) -> Path:
    """Steps-to-target against batch size with the S(B) fit; time per update against batch size; the gradient
    noise scale over training per batch size, with the fitted B_crit as a line for reference."""
    fig, (ax_s, ax_t, ax_g) = plt.subplots(1, 3, figsize=(16, 5.6), layout="constrained")
    colors = batch_size_colors({s.batch_size for s in summaries} | set(analysis.time_per_update_s))
    reached = [st for st in analysis.steps_to_target.values() if st.feasible]
    if reached:
        measured_b = np.array([st.batch_size for st in reached], float)
        ax_s.scatter(measured_b, [st.steps for st in reached], s=40, zorder=3,
                     c=[colors.get(st.batch_size, "C0") for st in reached], label="measured (best lr, seed)")
        if analysis.fit is not None:
            f = analysis.fit
            grid = np.geomspace(measured_b.min(), measured_b.max(), 200)
            ax_s.plot(grid, f.s_min * (1 + f.b_crit / grid), color="0.3",
                      label=f"S(B) = S_min (1 + B_crit / B): B_crit = {f.b_crit:,.1f} [{f.b_crit_low:,.1f}, "
                            f"{f.b_crit_high:,.1f}]")
            ax_s.axvline(f.b_crit, color="0.3", ls=":", lw=1)
    metric = analysis.target_metric.replace("_", " ")
    ax_s.set(xscale="log", yscale="log", xlabel="batch size (log scale)", ylabel="steps to target (log scale)")
    _title(ax_s, f"Steps to {metric} < {analysis.target:.4g}")
    _below(ax_s)
    sizes = sorted(analysis.time_per_update_s)
    ax_t.plot(sizes, [analysis.time_per_update_s[b] * 1e6 for b in sizes], "-", color="0.6", zorder=1)
    ax_t.scatter(sizes, [analysis.time_per_update_s[b] * 1e6 for b in sizes], s=40, zorder=3,
                 c=[colors.get(b, "C0") for b in sizes])
    ax_t.set(xscale="log", yscale="log", xlabel="batch size (log scale)",
             ylabel="µs per update (group of replicas, log scale)")
    _title(ax_t, "Training time per update (per-epoch evaluation amortized)")
    top = 1.0
    for b in sorted({s.batch_size for s in summaries}):
        runs = [s for s in summaries if s.batch_size == b]
        e = curves[runs[0].run_id]
        if "b_simple" not in e:
            continue
        measured = np.isfinite(e["b_simple"]) & (e["b_simple"] > 0)
        if measured.any():
            top = max(top, float(np.max(e["updates"][measured])))
            ax_g.plot(e["updates"][measured], e["b_simple"][measured], "o-", ms=3, color=colors[b],
                      label=f"B = {b:,}")
    if analysis.fit is not None:
        ax_g.axhline(analysis.fit.b_crit, color="0.3", ls=":", label="measured B_crit")
    # updates start at 0: linear from 0 to 1, logarithmic above, and nothing below 0 (counts are not negative)
    ax_g.set_xscale("symlog", linthresh=1.0)
    ax_g.set_xlim(0, top * 1.5)
    ax_g.set(yscale="log", xlabel="updates (0, then log scale)", ylabel="B_simple = tr(Σ) / |G|² (log scale)")
    _title(ax_g, "Gradient noise scale over training (a proxy; shown beside B_crit)")
    n_lines = len(ax_g.get_legend_handles_labels()[0])
    _below(ax_g, ncols=min(max(n_lines, 1), 4))
    for ax in (ax_s, ax_t, ax_g):
        ax.grid(alpha=0.3, which="both")
        readable_log_axis(ax.yaxis)
    for ax in (ax_s, ax_t):
        readable_log_axis(ax.xaxis)
    _suptitle(fig, f"Scaling  |  {setup}", 170)
    return _save(fig, path)


def sharpness_figure(data: StudyData, *, path: Path) -> Path:
    """Sharpness over training (`sharpness_every`) against the stability threshold: the top Hessian eigenvalue
    (left) and the batch sharpness (right) per run, each with its 2 / lr as a dashed line of the same colour
    (Cohen et al. 2021; Andreyev & Beneventano 2024)."""
    fig, (ax_top, ax_batch) = plt.subplots(1, 2, figsize=(13, 4.8), constrained_layout=True)
    rows = {r.run_id: r for r in data.edges_of_stability()}
    shown = [s for s in _shown(data) if s.run_id in rows] or [s for s in data.summaries if s.run_id in rows]
    for i, s in enumerate(shown[:10]):
        e, r, colour = data.epochs[s.run_id], rows[s.run_id], f"C{i % 10}"
        label = f"{_label(s, data.n_train)}: {r.first_ratio:.2f} -> {r.late_ratio:.2f} of 2/lr"
        for ax, field in ((ax_top, "hessian_top_eigenvalue"), (ax_batch, "batch_sharpness")):
            m = np.isfinite(e[field])
            ax.plot(e["epoch"][m], e[field][m], "o-", ms=3, color=colour,
                    label=label if ax is ax_top else _label(s, data.n_train))
            ax.axhline(r.threshold, color=colour, ls="--", lw=1)
    ax_top.set(xlabel="epoch", ylabel="top Hessian eigenvalue λ_max", title="λ_max over training (dashed: 2 / lr)")
    ax_batch.set(xlabel="epoch", ylabel="E_B[g_Bᵀ H_B g_B / |g_B|²]",
                 title="Batch sharpness over training (dashed: 2 / lr)")
    for ax in (ax_top, ax_batch):
        ax.grid(alpha=0.3)
        if shown:
            ax.legend(fontsize=8)
    fig.suptitle(f"Edge of stability  |  {data.setup}")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


FIGURES = ("lena", "overlay", "cost", "scaling", "sharpness")
""" "sharpness" is drawn only for studies that measured it during training (`sharpness_every`)."""


PARALLEL_FIGURES = 8
"""From this many Lena figures on, :func:`write_figures` draws them in parallel processes, one per core the
process was allowed before training pinned it (at most MAX_FIGURE_PROCESSES): a figure took ~0.9 s here, half
of it matplotlib's constrained layout (now laid out by hand: 0.15-0.34 s), and a sweep's 88 took 60 s of its 78 s.
Fewer are drawn in this process (a new process costs ~1 s to import matplotlib)."""
MAX_FIGURE_PROCESSES = 4


def write_figures(data: StudyData, *, meanwhile: Callable[[], Any] | None = None) -> list[Path]:
    """figures/lena_<run_id>.png per run (in a sweep: the runs at each batch size's best learning rate),
    figures/overlay.png (seed means with a +/- std band), figures/cost.png and figures/scaling.png.

    `meanwhile` (the HTML report, say) runs in this process while other processes draw the Lena figures, so
    that this core does not wait for them."""
    folder = data.directory / "figures"
    folder.mkdir(exist_ok=True)
    jobs = [(s, data.epochs[s.run_id], data.steps[s.run_id], folder / f"lena_{s.run_id}.png", data.task,
             data.n_train, data.setup) for s in _shown(data)]
    with _lena_figures(jobs) as lena_paths:
        others = [draw_figure(data, name, path=folder / f"{name}.png") for name in FIGURES[1:4]]
        if data.edges_of_stability():
            others.append(draw_figure(data, "sharpness", path=folder / "sharpness.png"))
        if meanwhile is not None:
            meanwhile()
        return lena_paths() + others


def _lena_job(job: tuple) -> Path:
    s, epochs, steps, path, task, n_train, setup = job
    return lena_figure(s, epochs, steps, path=path, task=task, n_train=n_train, setup=setup)


def _draw_lena_figures(jobs: list[tuple]) -> list[Path]:
    with _lena_figures(jobs) as paths:
        return paths()


@contextmanager
def _lena_figures(jobs: list[tuple]) -> Iterator[Callable[[], list[Path]]]:
    """A function giving each job's Lena figure, in order: drawn in this process when it is called, or from
    PARALLEL_FIGURES jobs on, started at once in spawned processes allowed every core this process was allowed (the
    same figures: drawing is deterministic), while this process goes on inside the block."""
    from batchlab.runner.cores import allowed_cores

    def here() -> list[Path]:
        return [_lena_job(job) for job in jobs]

    cores = allowed_cores()
    n = min(len(cores), MAX_FIGURE_PROCESSES)
    if len(jobs) < PARALLEL_FIGURES or n < 2:
        yield here
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    try:
        pool = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_allow_cores, initargs=(cores,))
        pending = pool.map(_lena_job, jobs, chunksize=max(1, len(jobs) // (4 * n)))
    except (OSError, AssertionError):  # no processes here (limits; a daemonic process): serially
        yield here
        return

    def there() -> list[Path]:
        try:
            return list(pending)
        except (OSError, BrokenProcessPool):
            return here()

    try:
        yield there
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _allow_cores(cores: list[int]) -> None:
    import os

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)


def draw_figure(data: StudyData, name: str, *, path: Path, run_id: str | None = None) -> Path:
    """One figure of :func:`write_figures` (`lena` needs `run_id`) written to `path`."""
    n_train, setup = data.n_train, data.setup
    if name == "lena":
        s = next(s for s in data.summaries if s.run_id == run_id)
        return lena_figure(s, data.epochs[s.run_id], data.steps[s.run_id], path=path, task=data.task, n_train=n_train,
                           setup=setup)
    best = _shown(data)
    if name == "overlay":
        return overlay_figure(best, data.epochs, path=path, n_train=n_train, setup=setup)
    if name == "cost":
        return cost_figure(best, path=path, n_train=n_train, setup=setup)
    if name == "sharpness":
        return sharpness_figure(data, path=path)
    return scaling_figure(data.analysis(), data.epochs, best, setup=data.setup, path=path)


def _shown(data: StudyData) -> list[RunSummary]:
    """The runs the figures show: each batch size's best learning rate, or every run when none has one (every
    run diverged), so such a study still gets its figures."""
    return data.best_runs() or list(data.summaries)
