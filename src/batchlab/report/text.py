"""The terminal report's tables: one row per run, and the sweep's grid (the words are :mod:`batchlab.report.answer`'s)."""

from __future__ import annotations

from rich.table import Table

from batchlab.analysis.runs import EPOCH_NOISE_WINDOW, STEP_NOISE_WINDOW, RunSummary
from batchlab.analysis.sweeps import Cell
from batchlab.report.labels import metric_label, metric_text

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
    return table


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
