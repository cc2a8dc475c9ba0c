"""Static figures (matplotlib, Agg): Lena's figure per run, an overlay of all runs, and the cost of each run.

Curves are drawn raw. The per-step panel shows every minibatch loss as measured; nothing is smoothed.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from batchlab.analysis.runs import RunSummary
from batchlab.analysis.sweeps import mean_and_band
from batchlab.report.labels import loss_name
from batchlab.study_data import StudyData


def _label(s: RunSummary, n_train: int) -> str:
    b = f"B = N = {s.batch_size:,}" if s.batch_size == n_train else f"B = {s.batch_size:,}"
    return f"{b}, seed {s.seed}" + (f", lr {s.lr:g}" if s.lr else "")


def lena_figure(s: RunSummary, epochs: dict[str, np.ndarray], steps: tuple[np.ndarray, np.ndarray], *,
                n_train: int, setup: str, path: Path, task: str = "classification") -> Path:
    """Train and test loss against epoch (Lena's plot), beside every minibatch loss against (fractional) epoch."""
    fig, (ax, ax_steps) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    ax.plot(epochs["epoch"], epochs["train_loss"], label="train loss (whole training set)", color="C0")
    ax.plot(epochs["epoch"], epochs["test_loss"], label="test loss", color="C3")
    ax.set(xlabel="epoch", ylabel=f"{loss_name(task)} (log scale)", yscale="log",
           title="Lena's plot: loss after each epoch")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    step_epoch, step_loss = steps
    if len(step_loss):
        # a step's loss is measured before its update: the k-th (k = 0..U-1) of epoch e at e - 1 + k / U
        x = step_epoch - 1 + (np.arange(len(step_loss)) % s.updates_per_epoch) / s.updates_per_epoch
        ax_steps.plot(x, np.maximum(step_loss, 1e-8), lw=0.3 if len(step_loss) > 2000 else 1.0, color="C7",
                      alpha=0.7, label=f"minibatch loss, each of {len(step_loss):,} steps (raw; floored at 1e-8 for the log scale)")
        ax_steps.plot(epochs["epoch"], epochs["train_loss"], color="C0", label="train loss (whole training set)")
    ax_steps.set(xlabel="epoch", ylabel="loss (log scale)", yscale="log",
                 title=f"Every update: {s.updates_per_epoch:,} per epoch, {s.total_updates:,} in all")
    ax_steps.legend(loc="upper right")
    ax_steps.grid(alpha=0.3, which="both")
    status = "" if s.status == "completed" else f" [{s.status}]"
    fig.suptitle(f"{_label(s, n_train)}{status}: {s.total_updates:,} updates in {s.wall_time_s:.2f} s  |  {setup}")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def overlay_figure(summaries: list[RunSummary], curves: dict[str, dict[str, np.ndarray]], *, n_train: int,
                   setup: str, path: Path) -> Path:
    """Train (solid) and test (dashed) loss against epoch, updates and training time; one line per batch size and
    learning rate: the mean over seeds, with a +/- one standard deviation band when there are several."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), constrained_layout=True)
    axes_x = (("epoch", "epoch", "linear"), ("updates", "updates (optimizer steps, log scale)", "log"),
              ("wall_time_s", "training time, s (log scale)", "log"))
    groups: dict[tuple[int, float], list[RunSummary]] = {}
    for s in summaries:
        groups.setdefault((s.batch_size, s.lr), []).append(s)
    for i, ((b, lr), runs) in enumerate(sorted(groups.items())):
        n = min(len(curves[r.run_id]["epoch"]) for r in runs)
        b_label = f"B = N = {b:,}" if b == n_train else f"B = {b:,}"
        label = f"{b_label}, lr {lr:g}" + (f" ({len(runs)} seeds)" if len(runs) > 1 else "")
        for metric, ls in (("train_loss", "-"), ("test_loss", "--")):
            mean, band = mean_and_band([curves[r.run_id][metric][:n] for r in runs])
            for ax, (key, _, xscale) in zip(axes, axes_x):
                x = np.mean([curves[r.run_id][key][:n] for r in runs], axis=0)
                keep = x > 0 if xscale == "log" else np.ones_like(x, bool)
                ax.plot(x[keep], mean[keep], color=f"C{i % 10}", ls=ls,
                        label=f"{label} {metric.split('_')[0]}" if key == "epoch" else None)
                if len(runs) > 1:
                    ax.fill_between(x[keep], np.maximum((mean - band)[keep], 1e-8), (mean + band)[keep],
                                    color=f"C{i % 10}", alpha=0.15, lw=0)
    for ax, (_, xlabel, xscale) in zip(axes, axes_x):
        ax.set(xlabel=xlabel, ylabel="loss (log scale)", yscale="log", xscale=xscale)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_title("against epochs (passes over the data)")
    axes[1].set_title("against updates")
    axes[2].set_title("against training time")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Train (solid) and test (dashed) loss, mean over seeds ± std band  |  {setup}")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cost_figure(summaries: list[RunSummary], *, n_train: int, setup: str, path: Path) -> Path:
    """Per run: training wall time, total updates and time per update (bars, log scale where counts span decades)."""
    labels = [_label(s, n_train).replace(", ", "\n") for s in summaries]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), constrained_layout=True)
    panels = ((axes[0], [s.wall_time_s for s in summaries], "training time, s", "{:.3f} s", "linear"),
              (axes[1], [s.total_updates for s in summaries], "total updates (log scale)", "{:,.0f}", "log"),
              (axes[2], [s.time_per_update_s * 1e6 for s in summaries], "time per update, µs (log scale)",
               "{:,.1f} µs", "log"))
    for ax, values, ylabel, fmt, yscale in panels:
        bars = ax.bar(range(len(values)), values, color=[f"C{i % 10}" for i in range(len(values))])
        ax.bar_label(bars, labels=[fmt.format(v) for v in values], fontsize=8)
        ax.set_xticks(range(len(values)), labels, fontsize=8)
        positive = bool(values) and all(np.isfinite(v) and v > 0 for v in values)
        ax.set(ylabel=ylabel, yscale=yscale if positive else "linear")
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_title("Which took longer? (compile excluded, per-epoch evaluation included)")
    axes[1].set_title("Updates: ceil(N / B) per epoch")
    axes[2].set_title("Cost of one update")
    fig.suptitle(f"Cost of each run  |  {setup}")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scaling_figure(analysis, curves: dict[str, dict[str, np.ndarray]], summaries: list[RunSummary], *,
                   setup: str, path: Path) -> Path:
    """Steps-to-target against batch size with the S(B) fit; time per update against batch size; the gradient
    noise scale over training per batch size, with the fitted B_crit as a line for reference."""
    fig, (ax_s, ax_t, ax_g) = plt.subplots(1, 3, figsize=(16, 4.8), constrained_layout=True)
    reached = [st for st in analysis.steps_to_target.values() if st.feasible]
    if reached:
        measured_b = np.array([st.batch_size for st in reached], float)
        ax_s.plot(measured_b, [st.steps for st in reached], "o", color="C0", label="measured (best lr, seed)")
        if analysis.fit is not None:
            f = analysis.fit
            grid = np.geomspace(measured_b.min(), measured_b.max(), 200)
            ax_s.plot(grid, f.s_min * (1 + f.b_crit / grid), color="C3",
                      label=f"S(B) = S_min (1 + B_crit / B): B_crit = {f.b_crit:,.1f} [{f.b_crit_low:,.1f}, "
                            f"{f.b_crit_high:,.1f}]")
            ax_s.axvline(f.b_crit, color="C3", ls=":", lw=1)
        ax_s.legend(fontsize=8)
    metric = analysis.target_metric.replace("_", " ")
    ax_s.set(xscale="log", yscale="log", xlabel="batch size", ylabel="steps to target",
             title=f"Steps to {metric} < {analysis.target:.4g}")
    sizes = sorted(analysis.time_per_update_s)
    ax_t.plot(sizes, [analysis.time_per_update_s[b] * 1e6 for b in sizes], "o-", color="C2")
    ax_t.set(xscale="log", yscale="log", xlabel="batch size", ylabel="µs per update (group of replicas)",
             title="Training time per update (per-epoch evaluation amortized)")
    for i, b in enumerate(sorted({s.batch_size for s in summaries})):
        runs = [s for s in summaries if s.batch_size == b]
        e = curves[runs[0].run_id]
        if "b_simple" not in e:
            continue
        measured = np.isfinite(e["b_simple"])
        if measured.any():
            ax_g.plot(e["updates"][measured], e["b_simple"][measured], "o-", ms=3, color=f"C{i % 10}",
                      label=f"B = {b:,}")
    if analysis.fit is not None:
        ax_g.axhline(analysis.fit.b_crit, color="C3", ls=":", label="measured B_crit")
    ax_g.set(yscale="log", xscale="symlog", xlabel="updates (symlog)", ylabel="B_simple = tr(Σ) / |G|²",
             title="Gradient noise scale (a proxy; shown beside B_crit)")
    ax_g.legend(fontsize=8)
    for ax in (ax_s, ax_t, ax_g):
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(f"Scaling  |  {setup}")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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


def write_figures(data: StudyData) -> list[Path]:
    """figures/lena_<run_id>.png per run (in a sweep: the runs at each batch size's best learning rate),
    figures/overlay.png (seed means with a +/- std band), figures/cost.png and figures/scaling.png."""
    folder = data.directory / "figures"
    folder.mkdir(exist_ok=True)
    paths = [draw_figure(data, "lena", run_id=s.run_id, path=folder / f"lena_{s.run_id}.png") for s in _shown(data)]
    paths += [draw_figure(data, name, path=folder / f"{name}.png") for name in FIGURES[1:4]]
    if data.edges_of_stability():
        paths.append(draw_figure(data, "sharpness", path=folder / "sharpness.png"))
    return paths


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
