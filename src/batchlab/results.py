"""A finished (or interrupted) study, read back from its directory, with everything a user does with it: the
tables, the explanation, figures, the report, DataFrames and exports. A thin facade: the data and analysis are
:class:`batchlab.study_data.StudyData`'s, the words and pictures :mod:`batchlab.report`'s."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchlab.study_data import StudyData

if TYPE_CHECKING:
    from rich.table import Table


class FigurePath(type(Path())):  # type: ignore[misc]  # the concrete PosixPath or WindowsPath
    """A figure's PNG path that Jupyter (IPython's display) shows as the image itself; elsewhere a plain Path."""

    def _repr_png_(self) -> bytes | None:
        return self.read_bytes() if self.suffix.lower() == ".png" and self.is_file() else None


class StudyResults(StudyData):
    """A study's data (see :class:`StudyData`) with the presentation methods of the Python API and the CLI."""

    def table(self) -> Table:
        from batchlab.report.text import runs_table

        return runs_table(self.summaries, title=f"{self.directory}: {self.setup}", task=self.task)

    def tables(self, *, width: int | None = None, wide: bool = False, plain: bool = False) -> list[Table]:
        """The runs table, then the sweep grid when the study has several learning rates or seeds, laid out for
        `width` terminal columns (None: one table each, every column); see `batchlab.report.tables`."""
        from batchlab.analysis.sweeps import best_lr_per_batch_size
        from batchlab.report.tables import grid_tables, runs_tables

        tables = runs_tables(self.summaries, task=self.task, title=f"{self.directory}: {self.setup}", width=width,
                             wide=wide, plain=plain)
        if len({(s.lr, s.seed) for s in self.summaries}) > 1:
            cells = self.cells
            tables += grid_tables(cells, best_lr_per_batch_size(cells), title=f"{self.directory}: final test loss",
                                  width=width, wide=wide, plain=plain)
        return tables

    def grid(self) -> Table:
        from batchlab.analysis.sweeps import best_lr_per_batch_size
        from batchlab.report.text import grid_table

        cells = self.cells
        return grid_table(cells, best_lr_per_batch_size(cells), title=f"{self.directory}: final test loss")

    def optimal_lr_table(self) -> Table | None:
        """The optimal rate per batch size at the end and at target losses; None for a study without a sweep."""
        from batchlab.report.optimal_lr import optimal_lr_table

        results = self.optimal_lr()
        return optimal_lr_table(results, title=f"{self.directory}: optimal learning rate") if results else None

    def explanation(self, *, target_metric: str = "train_loss", target: float | None = None) -> str:
        """What the measurements say, in words (see `batchlab.report.explain`)."""
        from batchlab.report.explain import explanation

        return explanation(self, target_metric=target_metric, target=target)

    def write_figures(self) -> list[Path]:
        """figures/lena_<run_id>.png per run (in a sweep: the runs at each batch size's best learning rate),
        figures/overlay.png (seed means with a +/- std band), figures/cost.png and figures/scaling.png."""
        from batchlab.report.figures import write_figures

        return write_figures(self)

    def write_figures_and_report(self) -> tuple[list[Path], Path]:
        """:meth:`write_figures` and :meth:`write_report` together: the report is written here while other
        processes draw the Lena figures (a 704-run sweep's 88 of them, 3 more and its report: 28.3 s -> 17.0 s,
        with Lena's figure laid out by hand)."""
        from batchlab.report.figures import write_figures
        from batchlab.report.html import write_report

        report: list[Path] = []
        figures = write_figures(self, meanwhile=lambda: report.append(write_report(self)))
        return figures, report[0]

    # -- tables, single figures, the report and exports (the Python API; see `batchlab.api`) ------------------
    def runs_df(self, format: str = "pandas") -> Any:
        """One row per run, the columns of runs.csv (see `batchlab.store.tables`), as a pandas or polars DataFrame.

        Example::

            results = batchlab.open("runs/wine")
            results.runs_df()[["run_id", "batch_size", "status", "wall_time_s"]]
        """
        return self._dataframe("runs", format)

    def epochs_df(self, format: str = "pandas") -> Any:
        """One row per run and epoch (epoch 0: before training), the columns of epochs.csv.

        Example::

            results.epochs_df().pivot(index="epoch", columns="run_id", values="test_loss")
        """
        return self._dataframe("epochs", format)

    def steps_df(self, format: str = "pandas") -> Any:
        """One row per update: run_id, step (from 1), epoch and the minibatch loss before the update (steps.csv).

        Example::

            results.steps_df(format="polars").group_by("run_id").agg(pl.col("batch_loss").std())
        """
        return self._dataframe("steps", format)

    def evals_df(self, format: str = "pandas") -> Any:
        """One row per evaluation between epoch ends (`eval_every_steps`): run_id, step, examples_seen, train and
        test loss and metric (evals.csv); empty when the study evaluated at epoch ends only."""
        return self._dataframe("evals", format)

    def to_pandas(self) -> dict[str, Any]:
        """{"runs": ..., "epochs": ..., "steps": ...} as pandas DataFrames."""
        return {name: self._dataframe(name, "pandas") for name in ("runs", "epochs", "steps")}

    def to_polars(self) -> dict[str, Any]:
        """{"runs": ..., "epochs": ..., "steps": ...} as polars DataFrames (a missing value is null)."""
        return {name: self._dataframe(name, "polars") for name in ("runs", "epochs", "steps")}

    def _dataframe(self, table: str, library: str) -> Any:
        from batchlab.store.tables import read_tables, to_dataframe

        return to_dataframe(read_tables(self.directory, (table,))[table], library)

    def figure(self, name: str, *, run_id: str | None = None, path: str | Path | None = None) -> FigurePath:
        """Draw one figure of `write_figures` and return its PNG's path: `overlay`, `cost`, `scaling`, or `lena`
        (one run's train/test loss beside every minibatch loss: `run_id`, default the first run). Written to
        `path`, default the study's figures/ folder under the name `write_figures` uses. The path is a
        :class:`FigurePath`: a Jupyter cell that ends with it shows the image.

        Example::

            results.figure("overlay")          # in Jupyter: the figure, inline
            str(results.figure("cost"))        # anywhere: 'runs/wine/figures/cost.png'
        """
        from batchlab.errors import invalid
        from batchlab.report.figures import FIGURES, draw_figure

        if name not in FIGURES:
            raise invalid("figure", name, ", ".join(FIGURES))
        runs = [s.run_id for s in self.summaries]
        if run_id is not None and (name != "lena" or run_id not in runs):
            raise invalid("run_id", run_id, "with figure 'lena' only: one of " + ", ".join(runs))
        run_id = run_id or next(iter(runs), None)
        if run_id is None:
            raise invalid("figure", name, "a figure of a study that has finished at least one epoch")
        default = self.directory / "figures" / (f"lena_{run_id}.png" if name == "lena" else f"{name}.png")
        out = Path(path) if path is not None else default
        out.parent.mkdir(parents=True, exist_ok=True)
        return FigurePath(draw_figure(self, name, run_id=run_id, path=out))

    def write_report(self, path: str | Path | None = None) -> Path:
        """The self-contained report.html (default in the study directory); see `batchlab.report.html`."""
        from batchlab.report.html import write_report

        return write_report(self, Path(path) if path is not None else None)

    def export(self, format: str, to: str | Path, *, max_step_points: int | None = None) -> Any:
        """`batchlab export` from Python: format csv, parquet, tensorboard (`to`: a directory) or mlflow (`to`:
        a tracking URI ``sqlite:///FILE.db``); see `batchlab.interop.export.export`.

        Example::

            results.export("mlflow", "sqlite:///mlflow.db")
        """
        from batchlab.interop.export import export

        return export(self.directory, format=format, to=to, max_step_points=max_step_points)

    def _repr_html_(self) -> str:
        """Jupyter shows the study as a table of its runs."""
        from batchlab.report.notebook import runs_html

        return runs_html(self)
