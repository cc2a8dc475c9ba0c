"""The terminal report: a table per run and a paragraph that answers Lena's puzzle from measured numbers only."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from rich.table import Table

from batchlab.analysis.runs import EPOCH_NOISE_WINDOW, STEP_NOISE_WINDOW, RunSummary, first_epoch_reaching
from batchlab.analysis.sweeps import Cell, mean_and_band
from batchlab.report.labels import metric_label, metric_text

MIN_EPOCHS_FOR_EPOCH_NOISE = 10
"""Below this many epochs, per-epoch noise is not reported (a running median needs points around it)."""
CONVERGED_RELATIVE_DROP = 0.01
"""A curve whose train loss fell by less than 1% over its last 10 epochs is called levelled off."""


RUN_COLUMNS = ("run", "batch", "lr", "status", "upd/epoch", "updates", "train s", "compile s", "train loss",
               "train acc", "test loss", "test acc", "noise train", "noise test", "noise step")
RUNS_CAPTION = ("noise = residual std of log-loss around a centred running median: per-epoch train and test "
                f"loss (window {EPOCH_NOISE_WINDOW} epochs), per-step minibatch loss (window {STEP_NOISE_WINDOW} "
                "steps); train s = training time without compile")


def run_columns(task: str = "classification") -> tuple[str, ...]:
    """RUN_COLUMNS with the metric named for the task."""
    return tuple(c.replace("acc", metric_label(task)) for c in RUN_COLUMNS)


def run_row(s: RunSummary, *, task: str = "classification") -> list[str]:
    """One run's cells, in RUN_COLUMNS order (shared by the terminal table and the HTML report)."""
    status = s.status + (f" @{s.diverged_epoch}" if s.status == "diverged" else "")
    return [s.run_id, str(s.batch_size), f"{s.lr:g}", status, f"{s.updates_per_epoch:,}", f"{s.total_updates:,}",
            f"{s.wall_time_s:.3f}", f"{s.compile_time_s:.2f}", f"{s.final_train_loss:.4f}",
            metric_text(s.final_train_acc, task), f"{s.final_test_loss:.4f}", metric_text(s.final_test_acc, task),
            f"{s.epoch_noise:.4f}", f"{s.test_epoch_noise:.4f}", f"{s.step_noise:.3f}"]


def runs_table(summaries: list[RunSummary], *, title: str = "Runs", task: str = "classification") -> Table:
    """One row per run: counts, time, final metrics and the two noise figures."""
    table = Table(title=title, title_justify="left")
    for name in run_columns(task):
        table.add_column(name, justify="left" if name in ("run", "status") else "right")
    for s in summaries:
        table.add_row(*run_row(s, task=task))
    table.caption = RUNS_CAPTION + ("; R² = 1 - SSE / SST of the standardized target on each set, loss = its mean "
                                    "squared error" if task == "regression" else "")
    if task == "next_token":
        table.caption += "; " + perplexity_note(summaries)
    return table


def perplexity_note(summaries: list[RunSummary]) -> str:
    """Text: what the loss is, and each run's perplexity exp(loss) (per token, train / test)."""
    ppl = ", ".join(f"{s.run_id} {np.exp(s.final_train_loss):.2f} / {np.exp(s.final_test_loss):.2f}"
                    for s in summaries)
    return (f"loss = cross-entropy per token (character) in nats, acc = next-token accuracy; perplexity "
            f"exp(loss), train / test: {ppl}")


@dataclass(frozen=True)
class BatchGroup:
    """The seed-averaged view of one batch size's usable (not diverged) runs."""

    batch_size: int
    runs: list[RunSummary]
    train_loss: np.ndarray
    """Seed-mean train loss per epoch, epoch 0 first."""
    test_loss: np.ndarray
    """Seed-mean test loss per epoch, epoch 0 first."""

    def mean(self, attr: str) -> float:
        return float(np.mean([getattr(r, attr) for r in self.runs]))


def group_by_batch_size(summaries: list[RunSummary], curves: dict[str, dict[str, np.ndarray]]) -> list[BatchGroup]:
    """Batch sizes in increasing order, averaging over seeds the runs that did not diverge."""
    by_b: dict[int, list[RunSummary]] = defaultdict(list)
    for s in summaries:
        if s.status != "diverged":
            by_b[s.batch_size].append(s)
    groups = []
    for b, runs in sorted(by_b.items()):
        train, _ = mean_and_band([curves[r.run_id]["train_loss"] for r in runs])
        test, _ = mean_and_band([curves[r.run_id]["test_loss"] for r in runs])
        groups.append(BatchGroup(b, runs, train, test))
    return groups


def explain(summaries: list[RunSummary], curves: dict[str, dict[str, np.ndarray]], *, n_train: int,
            device: str, task: str = "classification") -> str:
    """Answer the puzzle for the smallest and largest batch size: which is noisier, which took longer, and why;
    what the large batch's updates did and did not achieve. Every claim quotes a measured number."""
    diverged = [s for s in summaries if s.status == "diverged"]
    notes = [f"Batch size {s.batch_size} (lr {s.lr:g}, seed {s.seed}) diverged in epoch {s.diverged_epoch}: its loss "
             "became non-finite, so it is left out below." for s in diverged]
    groups = group_by_batch_size(summaries, curves)
    if len(groups) < 2:
        return " ".join(notes + ["Only one batch size trained to the end, so there is nothing to compare."])
    small, large = groups[0], groups[-1]
    s_name = f"batch size {small.batch_size}"
    l_name = f"the full batch (B = N = {n_train:,})" if large.batch_size == n_train else f"batch size {large.batch_size}"
    seeds = f" (means over {len(small.runs)} seeds)" if len(small.runs) > 1 else ""
    return "\n\n".join([
        *([" ".join(notes)] if notes else []),
        _noise(small, large, s_name, l_name) + seeds,
        _time(small, large, s_name, l_name, device),
        _progress(small, large, s_name, l_name, task),
    ])


def _noise(small: BatchGroup, large: BatchGroup, s_name: str, l_name: str) -> str:
    st_s, st_l = small.mean("step_noise"), large.mean("step_noise")
    examples = "one example" if small.batch_size == 1 else f"{small.batch_size} examples"
    if large.runs[0].updates_per_epoch == 1:
        step_l = (f"while {l_name}'s minibatch is the whole training set, so its step losses carry no sampling noise "
                  f"at all ({st_l:.4f})")
    else:
        step_l = f"against {st_l:.4f} for {l_name}: {_ratio(st_s, st_l)} as much"
    parts = [(f"Which curve is noisy? {_upper_first(s_name)}: each of its updates follows the gradient of {examples}. "
              f"Its minibatch losses jitter step to step by {st_s:.3f} (residual std of log-loss around a running "
              f"median), {step_l}.")]
    e_s, e_l = small.mean("epoch_noise"), large.mean("epoch_noise")
    t_s, t_l = small.mean("test_epoch_noise"), large.mean("test_epoch_noise")
    n_epochs = min(len(small.train_loss), len(large.train_loss)) - 1
    if n_epochs < MIN_EPOCHS_FOR_EPOCH_NOISE:
        parts.append(f"With {n_epochs} epochs there are too few per-epoch evaluations to measure their noise.")
        return " ".join(parts)
    parts.append(f"Evaluated after each epoch, its train and test losses jitter by {e_s:.4f} and {t_s:.4f}, against "
                 f"{e_l:.4f} and {t_l:.4f} for {l_name}.")
    if e_s < 1e-3:
        parts.append("At epoch resolution its train-loss curve is smooth: the step-to-step noise shows in the per-step "
                     "curve (figures/lena_*.png, right panel), not in the per-epoch one.")
    return " ".join(parts)


def _time(small: BatchGroup, large: BatchGroup, s_name: str, l_name: str, device: str) -> str:
    u_s, u_l = small.mean("total_updates"), large.mean("total_updates")
    t_s, t_l = small.mean("wall_time_s"), large.mean("wall_time_s")
    longer, t_long, t_short = (s_name, t_s, t_l) if t_s >= t_l else (l_name, t_l, t_s)
    per_s, per_l = t_s / u_s * 1e6, t_l / u_l * 1e6
    return (f"Which took longer? {_upper_first(s_name)} made {small.runs[0].updates_per_epoch:,} updates per epoch, "
            f"{u_s:,.0f} in all, against {large.runs[0].updates_per_epoch:,} per epoch and {u_l:,.0f} in all for "
            f"{l_name}: {_ratio(u_s, u_l)} as many. {_upper_first(longer)} took longer: {t_long:.3f} s of training "
            f"against {t_short:.3f} s ({_ratio(t_long, t_short)}; compile time excluded; {device}). Why: one update "
            f"cost {per_s:,.1f} µs at {s_name} and {per_l:,.1f} µs at {l_name}, so a small update is cheaper but not "
            f"{_ratio(u_s, u_l)} cheaper; the number of updates per epoch sets the time.")


def _progress(small: BatchGroup, large: BatchGroup, s_name: str, l_name: str, task: str) -> str:
    l_curve = large.train_loss
    metric = "R²" if task == "regression" else "accuracy"
    start, end = float(l_curve[0]), float(l_curve[-1])
    epochs = len(small.train_loss) - 1
    k = first_epoch_reaching(small.train_loss, end)
    reached = (f"{s_name} got there after {k} epoch{'s' if k != 1 else ''} ({k * small.runs[0].updates_per_epoch:,} "
               "updates)" if k is not None else f"{s_name} never got that low")
    tail = l_curve[-11:] if len(l_curve) > 10 else l_curve
    drop = float(tail[0] - tail[-1])
    if drop > CONVERGED_RELATIVE_DROP * float(tail[0]):
        state = (f"It was still falling by {drop / (len(tail) - 1):.4f} per epoch over its last {len(tail) - 1} epochs: "
                 "it had not converged, and more updates (not more epochs of the same data per update) would have "
                 "helped.")
    else:
        state = f"It had levelled off (it fell by {drop:.4f} over its last {len(tail) - 1} epochs)."
    best_epoch = int(np.argmin(small.test_loss))
    best, final_test = float(small.test_loss[best_epoch]), float(small.test_loss[-1])
    large_over = float(large.test_loss[-1]) > 1.1 * float(np.min(large.test_loss))
    over = (f" Its test loss was lowest at epoch {best_epoch} ({best:.4f}) and rose to {final_test:.4f} by the end as "
            f"it kept fitting the training set: overfitting{'' if large_over else f', which {l_name} never reached'}."
            if final_test > 1.1 * best else "")
    return (f"What did {l_name}'s {large.mean('total_updates'):,.0f} updates achieve? They brought the train loss "
            f"from {start:.4f} to {end:.4f} (test {metric} {metric_text(large.mean('final_test_acc'), task)}); "
            f"{reached}. {state} {_upper_first(s_name)} ended at train loss {small.mean('final_train_loss'):.4f} and "
            f"test {metric} {metric_text(small.mean('final_test_acc'), task)} after {epochs} epochs.{over}")


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def _ratio(a: float, b: float) -> str:
    if not (np.isfinite(a) and np.isfinite(b)) or b == 0:
        return "n/a times"
    r = a / b
    return f"{r:,.0f}x" if r >= 100 else f"{r:.1f}x" if r >= 1.05 else f"{r:.2f}x"


GRID_CAPTION = "final test loss, mean ± std over seeds; * = best learning rate of the batch size"


def grid_table(cells: list[Cell], best: dict[int, float], *, title: str = "Sweep") -> Table:
    """Batch sizes down, learning rates across: mean +/- std of the final test loss over seeds (* = best rate)."""
    lrs = sorted({c.lr for c in cells})
    table = Table(title=title, title_justify="left")
    table.add_column("batch")
    for lr in lrs:
        table.add_column(f"lr {lr:.3g}", justify="right")
    for b in sorted({c.batch_size for c in cells}):
        row = [str(b)]
        for lr in lrs:
            cell = next((c for c in cells if c.batch_size == b and c.lr == lr), None)
            row.append(grid_cell_text(cell, best=best.get(b) == lr))
        table.add_row(*row)
    table.caption = GRID_CAPTION
    return table


def grid_cell_text(cell: Cell | None, *, best: bool) -> str:
    """A grid cell: mean ± std final test loss ("*" first when `best`), the diverged count, or "" for no cell."""
    if cell is None:
        return ""
    if not cell.usable:
        return f"diverged {cell.n_diverged}/{cell.n}"
    div = f" ({cell.n_diverged}/{cell.n} div.)" if cell.n_diverged else ""
    return f"{'*' if best else ''}{cell.mean_test_loss:.4f} ± {cell.std_test_loss:.4f}{div}"
