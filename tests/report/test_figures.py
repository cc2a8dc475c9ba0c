"""Figures are written, sized and not blank, and read at a glance: one colour per batch size, nothing clipped,
legends outside the data, labelled log ticks, the per-step panel's epoch mean and zero count."""

from __future__ import annotations

import matplotlib.colors as mcolors
import matplotlib.image as mpimg
import numpy as np
import pytest

from batchlab.analysis.runs import RunSummary
from batchlab.report import figures
from batchlab.report.colors import batch_size_colors
from batchlab.results import StudyResults


def test_figures_for_every_run_plus_overlay_cost_and_scaling(wine_study):
    results = StudyResults.load(wine_study)
    paths = results.write_figures()
    names = sorted(p.name for p in paths)
    assert names == sorted([f"lena_{s.run_id}.png" for s in results.summaries] + ["overlay.png", "cost.png", "scaling.png"])
    for p in paths:
        image = mpimg.imread(p)
        assert image.shape[1] > 1000 and image.shape[0] > 400
        assert np.std(image[..., :3]) > 0.05  # not a blank canvas


def test_figures_drawn_in_parallel_processes_equal_those_drawn_here(wine_study, monkeypatch, tmp_path):
    data = StudyResults.load(wine_study)
    jobs = [(s, data.epochs[s.run_id], data.steps[s.run_id], tmp_path / f"here_{s.run_id}.png", data.task,
             data.n_train, data.setup) for s in data.summaries]
    here = figures._draw_lena_figures(jobs)
    monkeypatch.setattr(figures, "PARALLEL_FIGURES", 1)
    monkeypatch.setattr("batchlab.runner.cores.allowed_cores", lambda: [0, 0])  # two processes even on one core
    there = figures._draw_lena_figures([(*job[:3], tmp_path / f"there_{job[0].run_id}.png", *job[4:]) for job in jobs])
    assert [p.name for p in there] == [f"there_{s.run_id}.png" for s in data.summaries]
    for a, b in zip(here, there):
        assert np.array_equal(mpimg.imread(a), mpimg.imread(b))


# ---------------------------------------------------------------------------------------------------------
# Read at a glance: colours, legends, titles, ticks, the per-step panel.



TWELVE = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 120)


@pytest.fixture
def drawn(monkeypatch):
    """The matplotlib Figure objects the figure functions draw, kept (rendered) instead of closed."""
    kept = []

    def keep(fig, path):
        fig.canvas.draw()
        kept.append(fig)
        return path

    monkeypatch.setattr(figures, "_save", keep)
    return kept


def summary(b: int, seed: int = 0, n_train: int = 120, epochs: int = 30) -> RunSummary:
    u = -(-n_train // b)
    return RunSummary(f"bs{b}-seed{seed}-abcdef12", b, 0.03, seed, "completed", None, u, epochs, u * epochs,
                      n_train * epochs, 0.01 * u * epochs / 10 + 0.1, 1.0, 1.1, 0.1, 0.9, 0.2, 0.8, 0.15, 10, 0.01,
                      0.01, 0.5)


def curves(s: RunSummary) -> dict[str, np.ndarray]:
    e = np.arange(s.epochs_done + 1)
    return {"epoch": e, "updates": e * s.updates_per_epoch, "examples_seen": e * 120,
            "wall_time_s": e * s.wall_time_s / s.epochs_done, "train_loss": 1.1 * np.exp(-e * s.lr * 20 / s.batch_size ** 0.5),
            "test_loss": 1.2 * np.exp(-e / 40), "train_acc": np.full(e.shape, 0.5), "test_acc": np.full(e.shape, 0.5)}


def assert_nothing_clipped_and_legends_outside_the_data(fig):
    renderer = fig.canvas.get_renderer()
    drawn, box = fig.get_tightbbox(renderer), fig.bbox_inches  # everything drawn, in inches
    assert drawn.x0 >= box.x0 - 0.01 and drawn.x1 <= box.x1 + 0.01, (drawn, box)
    assert drawn.y0 >= box.y0 - 0.01 and drawn.y1 <= box.y1 + 0.01, (drawn, box)
    for text in fig.texts:  # the suptitle
        assert text.get_window_extent(renderer).x0 >= 0 and text.get_window_extent(renderer).x1 <= fig.bbox.x1
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    for legend in legends:
        extent = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert not extent.overlaps(ax.get_window_extent(renderer)), "a legend covers the data"


def test_batch_size_colors_are_one_distinct_ordered_colour_per_batch_size():
    colors = batch_size_colors(reversed(TWELVE))
    assert list(colors) == list(TWELVE) and len(set(colors.values())) == 12
    rgb = np.array([mcolors.to_rgb(c) for c in colors.values()])
    assert np.min(np.linalg.norm(np.diff(rgb, axis=0), axis=1)) > 0.05  # neighbours tell apart
    assert batch_size_colors([1, 120]) == batch_size_colors([120, 1, 1])
    assert batch_size_colors([5]) == {5: batch_size_colors([5, 6])[5]}


def test_twelve_batch_sizes_keep_their_colour_in_every_figure_and_stay_legible(drawn, tmp_path):
    runs = [summary(b, seed) for b in TWELVE for seed in (0, 1)]
    data = {s.run_id: curves(s) for s in runs}
    figures.overlay_figure(runs, data, n_train=120, setup="iris", path=tmp_path / "o.png")
    figures.cost_figure(runs, n_train=120, setup="iris", path=tmp_path / "c.png")
    overlay, cost = drawn
    colors = batch_size_colors(TWELVE)
    legend = overlay.legends[0]
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels[:12] == [("B = N = 120" if b == 120 else f"B = {b:,}") + " (2 seeds)" for b in TWELVE]
    for handle, b in zip(legend.legend_handles[:12], TWELVE, strict=True):
        assert mcolors.to_hex(handle.get_color()) == colors[b]
    for ax in cost.axes:
        bars = [p for p in ax.patches]
        assert [mcolors.to_hex(p.get_facecolor()[:3]) for p in bars] == [colors[b] for b in TWELVE]
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels[0] == "1" and labels[-1] == "120\n(full)"
    for fig in drawn:
        assert_nothing_clipped_and_legends_outside_the_data(fig)


def test_real_study_figures_nothing_clipped_counts_not_negative(wine_study, drawn, tmp_path):
    results = StudyResults.load(wine_study)
    for name in ("lena", "overlay", "cost", "scaling"):
        results.figure(name, path=tmp_path / f"{name}.png")
    for fig in drawn:
        assert_nothing_clipped_and_legends_outside_the_data(fig)
    gns = drawn[3].axes[2]
    assert gns.get_xlim()[0] == 0
    assert all(t >= 0 for t in gns.get_xticks() if gns.get_xlim()[0] <= t <= gns.get_xlim()[1])
    step_legend = [t.get_text() for t in drawn[0].axes[1].get_legend().get_texts()]
    assert any("exactly 0" in t for t in step_legend)
    assert any("running mean over one epoch (142 steps" in t for t in step_legend)


def test_epoch_running_mean_is_the_epoch_loss_at_each_epoch_end():
    rng = np.random.default_rng(0)
    u, losses = 7, rng.exponential(size=7 * 5)
    losses[3] = 0.0
    mean = figures.epoch_running_mean(losses, u)
    for e in range(5):
        assert mean[(e + 1) * u - 1] == pytest.approx(losses[e * u:(e + 1) * u].mean())
    assert mean[2] == pytest.approx(losses[:3].mean())  # the first epoch: the steps so far
    assert mean[10] == pytest.approx(losses[4:11].mean())  # a trailing window of one epoch


def test_a_log_axis_within_a_decade_gets_several_labelled_ticks():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2], [0.3, 2.0])
    ax.set_yscale("log")
    figures.readable_log_axis(ax.yaxis)
    fig.canvas.draw()
    lo, hi = ax.get_ylim()
    shown = [t.get_text() for t, v in zip(ax.get_yticklabels(), ax.get_yticks(), strict=True) if lo <= v <= hi]
    plt.close(fig)
    assert len([s for s in shown if s]) >= 3 and "0.5" in shown and "1" in shown
