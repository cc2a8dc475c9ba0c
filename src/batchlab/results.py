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

    @classmethod
    def load(cls, directory: str | Path) -> StudyResults:
        store = Store.open(directory)
        try:
            runs = [r for r in store.runs() if r["epochs_done"] > 0 or r["status"] != "pending"]
            epochs = {r["run_id"]: store.epochs(r["run_id"]) for r in runs}
            steps = {r["run_id"]: store.step_losses(r["run_id"]) for r in runs}
            runs = [r for r in runs if len(epochs[r["run_id"]]["epoch"])]
            summaries = [summarize_run(r, epochs[r["run_id"]], steps[r["run_id"]][1]) for r in runs]
            return cls(Path(directory), store.meta(), summaries, epochs, steps)
        finally:
            store.close()

    def __repr__(self) -> str:
        return f"StudyResults({str(self.directory)!r}, runs={len(self.summaries)})"

    @property
    def n_train(self) -> int:
        return int(self.meta["dataset"]["n_train"])

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

        return runs_table(self.summaries, title=f"{self.directory}: {self.setup}")

    def explanation(self) -> str:
        from batchlab.report.text import explain

        curves = {rid: e["train_loss"] for rid, e in self.epochs.items()}
        return explain(self.summaries, curves, n_train=self.n_train, device=self.meta["device"])

    def write_figures(self) -> list[Path]:
        """figures/lena_<run_id>.png per run, figures/overlay.png and figures/cost.png."""
        from batchlab.report import figures

        folder = self.directory / "figures"
        folder.mkdir(exist_ok=True)
        kw = {"n_train": self.n_train, "setup": self.setup}
        paths = [figures.lena_figure(s, self.epochs[s.run_id], self.steps[s.run_id], path=folder / f"lena_{s.run_id}.png",
                                     **kw) for s in self.summaries]
        paths.append(figures.overlay_figure(self.summaries, self.epochs, path=folder / "overlay.png", **kw))
        paths.append(figures.cost_figure(self.summaries, path=folder / "cost.png", **kw))
        return paths
