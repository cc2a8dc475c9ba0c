"""The terminal tables of a study: the runs and the sweep grid, laid out for the width they are printed at.

A run has 15 measured numbers, about 150 columns of text in one row. On a terminal narrower than that, the runs are
printed as two tables with the same rows in the same order: the outcome (batch size, learning rate, status, update
count in full, time, final losses and metric) and the details (run id, updates per epoch, compile time, train
metric, noise). A wide terminal, or `wide=True` (`--wide`), gets the single table with every column. Cells are
never shortened with an ellipsis: a table that cannot fit is printed at its natural width instead. Numbers are
compact (:func:`batchlab.report.labels.number`: ``0.0871``, ``1.35e6``), update counts in full.

Piped output (`plain=True`) has the same layout with ASCII rules and no colour, one line per row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from batchlab.analysis.runs import EPOCH_NOISE_WINDOW, STEP_NOISE_WINDOW, RunSummary
from batchlab.analysis.sweeps import Cell
from batchlab.report.labels import count, metric_label, metric_text, number, seconds

PLAIN_BOX = box.Box("    \n    \n -- \n    \n    \n -- \n    \n    \n")
"""Box.SIMPLE_HEAD in ASCII: a rule under the header, spaces between columns (for files and pipes)."""
DEFAULT_WIDTH = 80
"""Width to lay out for when nothing says otherwise (rich's own default when no terminal is attached)."""

RUNS_CAPTION = ("noise = residual std of log-loss around a centred running median: per-epoch train and test "
                f"loss (window {EPOCH_NOISE_WINDOW} epochs), per-step minibatch loss (window {STEP_NOISE_WINDOW} "
                "steps); train s = training time without compile")
REGRESSION_CAPTION = ("; R² = 1 - SSE / SST of the standardized target on each set, loss = its mean squared "
                      "error")
GRID_CAPTION = "final test loss, mean ± std over seeds; * = best learning rate of the batch size"


@dataclass(frozen=True)
class RunColumn:
    """One column of the runs tables: its header (a newline splits it over two lines in narrow tables), how it is
    aligned, and how one run's cell is written."""

    name: str
    short: str
    cell: Callable[[RunSummary, str], str]
    justify: str = "right"


def _status(s: RunSummary, task: str) -> str:
    return s.status + (f" @{s.diverged_epoch}" if s.diverged_epoch is not None and s.status != "completed" else "")


RUN_COLUMN_SPECS: tuple[RunColumn, ...] = (
    RunColumn("run", "run", lambda s, t: s.run_id, "left"),
    RunColumn("batch", "batch", lambda s, t: count(s.batch_size)),
    RunColumn("lr", "lr", lambda s, t: f"{s.lr:.3g}"),
    RunColumn("status", "status", _status, "left"),
    RunColumn("upd/epoch", "upd/\nepoch", lambda s, t: count(s.updates_per_epoch)),
    RunColumn("updates", "updates", lambda s, t: count(s.total_updates)),
    RunColumn("train s", "train\ns", lambda s, t: seconds(s.wall_time_s)),
    RunColumn("compile s", "compile\ns", lambda s, t: seconds(s.compile_time_s)),
    RunColumn("train loss", "train\nloss", lambda s, t: number(s.final_train_loss)),
    RunColumn("train acc", "train\nacc", lambda s, t: metric_text(s.final_train_acc, t)),
    RunColumn("test loss", "test\nloss", lambda s, t: number(s.final_test_loss)),
    RunColumn("test acc", "test\nacc", lambda s, t: metric_text(s.final_test_acc, t)),
    RunColumn("noise train", "noise\ntrain", lambda s, t: number(s.epoch_noise)),
    RunColumn("noise test", "noise\ntest", lambda s, t: number(s.test_epoch_noise)),
    RunColumn("noise step", "noise\nstep", lambda s, t: number(s.step_noise)),
)
RUN_COLUMNS = tuple(c.name for c in RUN_COLUMN_SPECS)
SEED_COLUMN = RunColumn("seed", "seed", lambda s, t: str(s.seed))
OUTCOME_COLUMNS = ("batch", "lr", "seed", "status", "updates", "train s", "train loss", "test loss", "test acc")
"""The first of the two narrow tables: what happened to each run (seed only when the study has several)."""
DETAIL_COLUMNS = ("run", "lr", "upd/epoch", "compile s", "train acc", "noise train", "noise test", "noise step")
"""The second: the run's id (named in figures and exports) and the rest (lr only when it varies)."""


def run_columns(task: str = "classification") -> tuple[str, ...]:
    """RUN_COLUMNS with the metric named for the task."""
    return tuple(_named(c, task) for c in RUN_COLUMNS)


def run_row(s: RunSummary, *, task: str = "classification") -> list[str]:
    """One run's cells, in RUN_COLUMNS order (shared by the wide terminal table and the HTML report)."""
    return [c.cell(s, task) for c in RUN_COLUMN_SPECS]


def runs_tables(summaries: Sequence[RunSummary], *, task: str = "classification", title: str = "Runs",
                width: int | None = DEFAULT_WIDTH, wide: bool = False, plain: bool = False) -> list[Table]:
    """The runs as one table with every column when `wide`, when `width` is None or when it fits in `width`;
    otherwise as the outcome and detail tables (same rows, same order). See the module docstring."""
    caption = RUNS_CAPTION + (REGRESSION_CAPTION if task == "regression" else "")
    if task == "next_token":
        caption += "; " + perplexity_note(summaries)
    full = _runs_table(summaries, RUN_COLUMN_SPECS, task=task, title=title, caption=caption, plain=plain,
                       two_line=False)
    if wide or width is None or table_width(full) <= width:
        return [full]
    by_name = {c.name: c for c in (*RUN_COLUMN_SPECS, SEED_COLUMN)}
    several_seeds = len({s.seed for s in summaries}) > 1
    several_lrs = len({s.lr for s in summaries}) > 1
    outcome = [by_name[n] for n in OUTCOME_COLUMNS if n != "seed" or several_seeds]
    detail = [by_name[n] for n in DETAIL_COLUMNS if n != "lr" or several_lrs]
    return [_runs_table(summaries, outcome, task=task, title=title, caption=None, plain=plain, two_line=True),
            _runs_table(summaries, detail, task=task, title="Details (same runs, same order)", caption=caption,
                        plain=plain, two_line=True)]


def grid_tables(cells: Sequence[Cell], best: dict[int, float], *, title: str = "Sweep",
                width: int | None = DEFAULT_WIDTH, wide: bool = False, plain: bool = False) -> list[Table]:
    """Batch sizes down, learning rates across: mean +/- std of the final test loss over seeds (* = best rate).
    One table when it fits in `width` (or `wide`, or `width` None); else the mean and the spread go on two lines
    of each cell, and learning rates that still do not fit continue in further tables."""
    lrs = sorted({c.lr for c in cells})
    one = _grid_table(cells, best, lrs, title=title, plain=plain, stacked=False)
    if wide or width is None or table_width(one) <= width:
        return [one]
    tables: list[Table] = []
    start = 0
    while start < len(lrs):
        end = start + 1
        while end < len(lrs) and table_width(_grid_table(cells, best, lrs[start:end + 1], title=title, plain=plain,
                                                         stacked=True)) <= width:
            end += 1
        part = title if start == 0 else f"{title} (continued)"
        tables.append(_grid_table(cells, best, lrs[start:end], title=part, plain=plain, stacked=True))
        start = end
    return tables


def grid_cell_text(cell: Cell | None, *, best: bool, stacked: bool = False) -> str:
    """A grid cell: mean ± std final test loss ("*" first when `best`), the diverged count, or "" for no cell;
    `stacked` puts the spread and the diverged count on lines of their own."""
    if cell is None:
        return ""
    if not cell.usable:
        return f"diverged\n{cell.n_diverged}/{cell.n}" if stacked else f"diverged {cell.n_diverged}/{cell.n}"
    mean, std = number(cell.mean_test_loss), number(cell.std_test_loss)
    star = "*" if best else ""
    if stacked:
        return f"{star}{mean}\n± {std}" + (f"\n{cell.n_diverged}/{cell.n} div." if cell.n_diverged else "")
    return f"{star}{mean} ± {std}" + (f" ({cell.n_diverged}/{cell.n} div.)" if cell.n_diverged else "")


def table_width(table: Table) -> int:
    """The width `table` takes at its natural size, in terminal cells."""
    console = Console(width=10_000, color_system=None, legacy_windows=False)
    return Measurement.get(console, console.options, table).maximum


def print_tables(console: Console, tables: Sequence[Table]) -> None:
    """Print each table at the console's width, or at its own when wider, so no cell is ever cut short; a blank
    line after each."""
    for table in tables:
        width = console.width
        console.width = max(width, table_width(table))  # rich caps a print's width at the console's
        try:
            console.print(table, crop=False)
        finally:
            console.width = width
        console.print()


def _named(name: str, task: str) -> str:
    return name.replace("acc", metric_label(task))


def _new_table(title: str, plain: bool) -> Table:
    return Table(title=title, title_justify="left", caption_justify="left", box=PLAIN_BOX if plain else box.SIMPLE_HEAD,
                 show_edge=False, pad_edge=False, padding=(0, 0, 0, 1), header_style="" if plain else "bold",
                 title_style="" if plain else "bold", caption_style="" if plain else "dim")


def _runs_table(summaries: Sequence[RunSummary], columns: Sequence[RunColumn], *, task: str, title: str,
                caption: str | None, plain: bool, two_line: bool) -> Table:
    table = _new_table(title, plain)
    for c in columns:
        table.add_column(_named(c.short if two_line else c.name, task), justify=c.justify,  # type: ignore[arg-type]
                         no_wrap=True, overflow="fold")
    for s in summaries:
        table.add_row(*(c.cell(s, task) for c in columns))
    table.caption = caption
    return table


def _grid_table(cells: Sequence[Cell], best: dict[int, float], lrs: Sequence[float], *, title: str, plain: bool,
                stacked: bool) -> Table:
    table = _new_table(title, plain)
    table.add_column("batch", justify="right", no_wrap=True)
    for lr in lrs:
        table.add_column(f"lr {lr:.3g}", justify="right", no_wrap=True, overflow="fold")
    for b in sorted({c.batch_size for c in cells}):
        row = [count(b)]
        for lr in lrs:
            cell = next((c for c in cells if c.batch_size == b and c.lr == lr), None)
            row.append(grid_cell_text(cell, best=best.get(b) == lr, stacked=stacked))
        table.add_row(*row, end_section=stacked)
    table.caption = GRID_CAPTION
    return table


def perplexity_note(summaries: Sequence[RunSummary]) -> str:
    """Text: what the loss is, and each run's perplexity exp(loss) (per token, train / test)."""
    ppl = ", ".join(f"{s.run_id} {math.exp(s.final_train_loss):.2f} / {math.exp(s.final_test_loss):.2f}"
                    for s in summaries if math.isfinite(s.final_train_loss) and math.isfinite(s.final_test_loss)
                    and max(s.final_train_loss, s.final_test_loss) < 700)
    return (f"loss = cross-entropy per token (character) in nats, acc = next-token accuracy; perplexity "
            f"exp(loss), train / test: {ppl}")
