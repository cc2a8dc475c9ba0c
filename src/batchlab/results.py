"""A finished (or interrupted) study, read back from its directory: summaries, explanation, figures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from batchlab.analysis.runs import RunSummary, summarize_run
from batchlab.store import Store


@dataclass(frozen=True)
class StudyResults:
    """Everything `show` and the figures need, loaded once from the store."""

    directory: Path
    meta: dict[str, Any]
    summaries: list[RunSummary]
    epochs: dict[str, dict[str, np.ndarray]]
    steps: dict[str, tuple[np.ndarray, np.ndarray]]
    end_metrics: dict[str, dict[str, float]]
    """End-of-training measurements per run (top Hessian eigenvalue, Hessian trace, ...)."""

    @classmethod
    def load(cls, directory: str | Path) -> StudyResults:
        store = Store.open(directory)
        try:
            runs = [r for r in store.runs() if r["epochs_done"] > 0 or r["status"] != "pending"]
            epochs = {r["run_id"]: store.epochs(r["run_id"]) for r in runs}
            steps = {r["run_id"]: store.step_losses(r["run_id"]) for r in runs}
            runs = [r for r in runs if len(epochs[r["run_id"]]["epoch"])]
            summaries = [summarize_run(r, epochs[r["run_id"]], steps[r["run_id"]][1]) for r in runs]
            return cls(Path(directory), store.meta(), summaries, epochs, steps, store.run_metrics())
        finally:
            store.close()

    def __repr__(self) -> str:
        return f"StudyResults({str(self.directory)!r}, runs={len(self.summaries)})"

    @property
    def n_train(self) -> int:
        return int(self.meta["dataset"]["n_train"])

    @property
    def task(self) -> str:
        """`classification` or `regression`: whether the `*_acc` curves hold accuracy or R²."""
        return self.meta["dataset"].get("task", "classification")

    @property
    def setup(self) -> str:
        """One line describing the controlled setup, for figure titles."""
        spec, ds = self.meta["spec"], self.meta["dataset"]
        opt = spec["optimizer"] + (f" (momentum {spec['momentum']})" if spec["optimizer"] == "momentum" else "")
        rule = "" if spec["lr_scaling"] == "none" else f", {spec['lr_scaling']} lr scaling from B={spec['base_batch_size']}"
        return (f"{ds['name']} (N = {ds['n_train']:,} train, {ds['n_test']:,} test), {self.meta['model']}, "
                f"{opt}{rule}")

    def table(self):
        from batchlab.report.text import runs_table

        return runs_table(self.summaries, title=f"{self.directory}: {self.setup}", task=self.task)

    @property
    def cells(self):
        """Per (batch size, learning rate): seeds aggregated (see `batchlab.analysis.sweeps`)."""
        from batchlab.analysis.sweeps import aggregate

        return aggregate(self.summaries)

    def best_runs(self) -> list[RunSummary]:
        """The runs at each batch size's best learning rate (all runs when the study has one rate)."""
        from batchlab.analysis.sweeps import best_lr_per_batch_size

        best = best_lr_per_batch_size(self.cells)
        return [s for s in self.summaries if best.get(s.batch_size) == s.lr]

    def grid(self):
        from batchlab.analysis.sweeps import best_lr_per_batch_size
        from batchlab.report.text import grid_table

        cells = self.cells
        return grid_table(cells, best_lr_per_batch_size(cells), title=f"{self.directory}: final test loss")

    def analysis(self, *, target_metric: str = "train_loss", target: float | None = None):
        """Steps-to-target, the S(B) fit, noise scale, gaps and curvature (see `batchlab.analysis.study`)."""
        from batchlab.analysis.study import analyze

        spec = self.meta.get("spec", {})
        return analyze(self.summaries, self.epochs, self.end_metrics, compared=self.best_runs(),
                       target_metric=target_metric, target=target, budget_steps=spec.get("budget_steps"),
                       budget_examples=spec.get("budget_examples"))

    def explanation(self, *, target_metric: str = "train_loss", target: float | None = None) -> str:
        from batchlab.report.findings import (
            generalization_paragraph,
            noise_ratio_paragraph,
            noise_scale_paragraph,
            scaling_paragraph,
        )
        from batchlab.report.text import explain

        a = self.analysis(target_metric=target_metric, target=target)
        findings = [p for p in (noise_ratio_paragraph(self.best_runs(), n_train=self.n_train),
                                scaling_paragraph(a), noise_scale_paragraph(a),
                                generalization_paragraph(a, self.best_runs(), task=self.task)) if p]
        text = explain(self.best_runs(), self.epochs, n_train=self.n_train, device=self.meta["device"],
                       task=self.task)
        if len({s.lr for s in self.summaries}) > 1:
            best = sorted({(s.batch_size, s.lr) for s in self.best_runs()})
            text = ("Each batch size is compared at its own best learning rate (lowest mean final test loss): "
                    + ", ".join(f"{lr:g} at batch size {b}" for b, lr in best) + ".\n\n" + text)
        return "\n\n".join([text, *findings])

    def write_figures(self) -> list[Path]:
        """figures/lena_<run_id>.png per run (in a sweep: the runs at each batch size's best learning rate),
        figures/overlay.png (seed means with a +/- std band) and figures/cost.png."""
        from batchlab.report import figures

        folder = self.directory / "figures"
        folder.mkdir(exist_ok=True)
        kw = {"n_train": self.n_train, "setup": self.setup}
        best = self.best_runs()
        paths = [figures.lena_figure(s, self.epochs[s.run_id], self.steps[s.run_id], path=folder / f"lena_{s.run_id}.png",
                                     task=self.task, **kw) for s in best]
        paths.append(figures.overlay_figure(best, self.epochs, path=folder / "overlay.png", **kw))
        paths.append(figures.cost_figure(best, path=folder / "cost.png", **kw))
        paths.append(figures.scaling_figure(self.analysis(), self.epochs, best, setup=self.setup,
                                            path=folder / "scaling.png"))
        return paths

    # -- tables, single figures, the report and exports (the Python API; see `batchlab.api`) ------------------
    def runs_df(self, format: str = "pandas") -> Any:
        """One row per run, the columns of runs.csv (see `batchlab.tables`), as a pandas or polars DataFrame.

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

    def to_pandas(self) -> dict[str, Any]:
        """{"runs": ..., "epochs": ..., "steps": ...} as pandas DataFrames."""
        return {name: self._dataframe(name, "pandas") for name in ("runs", "epochs", "steps")}

    def to_polars(self) -> dict[str, Any]:
        """{"runs": ..., "epochs": ..., "steps": ...} as polars DataFrames (a missing value is null)."""
        return {name: self._dataframe(name, "polars") for name in ("runs", "epochs", "steps")}

    def _dataframe(self, table: str, library: str) -> Any:
        from batchlab.tables import read_tables, to_dataframe

        return to_dataframe(read_tables(self.directory, (table,))[table], library)

    def figure(self, name: str, *, run_id: str | None = None, path: str | Path | None = None) -> Path:
        """Draw one figure of `write_figures` and return its PNG: `overlay`, `cost`, `scaling`, or `lena` (one
        run's train/test loss beside every minibatch loss: `run_id`, default the first run). Written to `path`,
        default the study's figures/ folder under the name `write_figures` uses.

        Example::

            from IPython.display import Image
            Image(results.figure("overlay"))
        """
        from batchlab.errors import invalid
        from batchlab.report import figures

        names = ("lena", "overlay", "cost", "scaling")
        if name not in names:
            raise invalid("figure", name, ", ".join(names))
        runs = {s.run_id: s for s in self.summaries}
        if run_id is not None and (name != "lena" or run_id not in runs):
            raise invalid("run_id", run_id, "with figure 'lena' only: one of " + ", ".join(runs))
        run_id = run_id or next(iter(runs), None)
        if run_id is None:
            raise invalid("figure", name, "a figure of a study that has finished at least one epoch")
        default = self.directory / "figures" / (f"lena_{run_id}.png" if name == "lena" else f"{name}.png")
        out = Path(path) if path is not None else default
        out.parent.mkdir(parents=True, exist_ok=True)
        kw = {"n_train": self.n_train, "setup": self.setup}
        if name == "lena":
            return figures.lena_figure(runs[run_id], self.epochs[run_id], self.steps[run_id], path=out,
                                       task=self.task, **kw)
        if name == "overlay":
            return figures.overlay_figure(self.best_runs(), self.epochs, path=out, **kw)
        if name == "cost":
            return figures.cost_figure(self.best_runs(), path=out, **kw)
        return figures.scaling_figure(self.analysis(), self.epochs, self.best_runs(), setup=self.setup, path=out)

    def write_report(self, path: str | Path | None = None) -> Path:
        """The self-contained report.html (default in the study directory); see `batchlab.report.html`."""
        from batchlab.report.html import write_report

        return write_report(self, Path(path) if path is not None else None)

    def export(self, format: str, to: str | Path, *, max_step_points: int | None = None) -> Any:
        """`batchlab export` from Python: format csv, parquet, tensorboard (`to`: a directory) or mlflow (`to`:
        a tracking URI ``sqlite:///FILE.db``); see `batchlab.export.export`.

        Example::

            results.export("mlflow", "sqlite:///mlflow.db")
        """
        from batchlab.export import export

        return export(self.directory, format=format, to=to, max_step_points=max_step_points)

    def _repr_html_(self) -> str:
        """Jupyter shows the study as a table of its runs."""
        from batchlab.report.notebook import runs_html

        return runs_html(self)
