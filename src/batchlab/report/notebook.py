"""What a notebook shows for a study: a heading and the table of runs, as HTML (`StudyResults._repr_html_`).

Every string from the study (directory, dataset name, run ids, status) is HTML-escaped.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchlab.study_data import StudyData

MAX_ROWS = 60
"""Rows shown; a longer study says how many more there are (all of them: `results.runs_df()`)."""


def runs_html(results: StudyData) -> str:
    """A heading (directory, setup) and one row per run: batch size, lr, seed, status, updates, training time
    and the final losses and accuracy (R² for a regression task)."""
    score = "R²" if results.task == "regression" else "acc"
    header = ("run", "batch size", "lr", "seed", "status", "epochs", "updates", "training time (s)",
              "final train loss", "final test loss", f"final test {score}")
    rows = []
    for s in results.summaries[:MAX_ROWS]:
        cells = (s.run_id, f"{s.batch_size:,}", f"{s.lr:g}", str(s.seed), s.status, str(s.epochs_done),
                 f"{s.total_updates:,}", f"{s.wall_time_s:.3f}", f"{s.final_train_loss:.4g}",
                 f"{s.final_test_loss:.4g}", f"{s.final_test_acc:.4g}")
        rows.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
    more = len(results.summaries) - MAX_ROWS
    note = f"<p>... and {more} more runs (results.runs_df() has them all)</p>" if more > 0 else ""
    return (f"<div><p><b>StudyResults</b> {escape(str(results.directory))}: {len(results.summaries)} runs; "
            f"{escape(results.setup)}</p><table><thead><tr>"
            + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr></thead><tbody>" + "".join(rows)
            + f"</tbody></table>{note}</div>")
