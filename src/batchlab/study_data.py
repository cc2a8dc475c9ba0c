"""A study read back from its directory, as plain data: what the report, the tables and the API work from.

:class:`StudyData` is frozen: the store's runs, per-epoch arrays, per-step losses and end-of-training
measurements, loaded once, plus the per-run summaries and the scaling analysis (computed once per target and
cached). It knows nothing of figures or text (:mod:`batchlab.report` takes it as input); the Python API's
:class:`batchlab.results.StudyResults` adds the presentation methods on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np

from batchlab.analysis.optimal_lr import OptimalLr, optimal_lr_study
from batchlab.analysis.rule_check import RulePair, rule_check
from batchlab.analysis.runs import RunSummary, group_sizes, summarize_run
from batchlab.analysis.sharpness import EdgeOfStability, edges_of_stability
from batchlab.analysis.study import StudyAnalysis, analyze
from batchlab.analysis.sweeps import Cell, aggregate, best_lr_per_batch_size
from batchlab.store.db import Store

REQUIRED_META = {"spec": dict, "dataset": dict, "model": str}
"""Metadata every reader needs: without it study.db is damaged (see `batchlab.store.db.StudyDamaged`)."""


@dataclass(frozen=True)
class StudyData:
    """Everything a study recorded, loaded once from the store (see the module docstring)."""

    directory: Path
    meta: dict[str, Any]
    summaries: list[RunSummary]
    epochs: dict[str, dict[str, np.ndarray]]
    steps: dict[str, tuple[np.ndarray, np.ndarray]]
    end_metrics: dict[str, dict[str, float]]
    """End-of-training measurements per run (top Hessian eigenvalue, Hessian trace, ...)."""
    evals: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    """Evaluations between epoch ends per run (`eval_every_steps`; empty arrays when there were none)."""
    branches: list[dict[str, Any]] = field(default_factory=list)
    """Branch runs of `batchlab branch` (kept out of the summaries and the scaling analysis): their runs-table
    rows (with `parent_run_id`, `branch_epoch`, `multiplier`), their per-epoch arrays under `epochs`."""
    _analyses: dict[tuple[str, float | None], StudyAnalysis] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        store = Store.open(directory)
        try:
            stored = store.runs()
            sizes = group_sizes(stored)
            every = [{**r, "group_replicas": sizes[r["run_id"]]} for r in stored
                     if r["epochs_done"] > 0 or r["status"] != "pending"]
            branches = [r for r in every if r.get("parent_run_id") is not None]
            runs = [r for r in every if r.get("parent_run_id") is None]
            epochs = {r["run_id"]: store.epochs(r["run_id"]) for r in every}
            steps = {r["run_id"]: store.step_losses(r["run_id"]) for r in runs}
            runs = [r for r in runs if len(epochs[r["run_id"]]["epoch"])]
            summaries = [summarize_run(r, epochs[r["run_id"]], steps[r["run_id"]][1]) for r in runs]
            evals = {r["run_id"]: store.evals(r["run_id"]) for r in runs}
            return cls(Path(directory), store.meta(required=REQUIRED_META), summaries, epochs, steps,
                       store.run_metrics(), evals, branches)
        finally:
            store.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.directory)!r}, runs={len(self.summaries)})"

    @property
    def n_train(self) -> int:
        return int(self.meta["dataset"]["n_train"])

    @property
    def task(self) -> str:
        """`classification`, `regression` or `next_token` (text): whether the `*_acc` curves hold accuracy, R² or
        next-token accuracy."""
        return str(self.meta["dataset"].get("task", "classification"))

    @property
    def tokens_per_example(self) -> int:
        """Text: tokens in one example (its context); 1 for every other dataset."""
        return int(self.meta["dataset"].get("tokens_per_example") or 1)

    @property
    def token_budget_examples(self) -> int | None:
        """A text study's `budget_tokens` as whole sequences (what the runs trained on), None without one."""
        tokens = self.meta.get("spec", {}).get("budget_tokens")
        return None if tokens is None else -(-int(tokens) // self.tokens_per_example)

    @property
    def setup(self) -> str:
        """One line describing the controlled setup, for figure titles."""
        spec, ds = self.meta["spec"], self.meta["dataset"]
        opt = spec["optimizer"] + (f" (momentum {spec['momentum']})" if spec["optimizer"] == "momentum" else "")
        rule = "" if spec["lr_scaling"] == "none" else f", {spec['lr_scaling']} lr scaling from B={spec['base_batch_size']}"
        return (f"{ds['name']} (N = {ds['n_train']:,} train, {ds['n_test']:,} test), {self.meta['model']}, "
                f"{opt}{rule}")

    @property
    def cells(self) -> list[Cell]:
        """Per (batch size, learning rate): seeds aggregated (see `batchlab.analysis.sweeps`)."""
        return aggregate(self.summaries)

    def best_runs(self) -> list[RunSummary]:
        """The runs at each batch size's best learning rate (all runs when the study has one rate)."""
        best = best_lr_per_batch_size(self.cells)
        return [s for s in self.summaries if best.get(s.batch_size) == s.lr]

    def optimal_lr(self) -> list[OptimalLr]:
        """The optimal rate against batch size at the end and at target losses (see `batchlab.analysis.optimal_lr`);
        [] for a study without two rates at two batch sizes."""
        return optimal_lr_study(self.summaries, self.epochs, evals=self.evals)

    def rule_check(self) -> list[RulePair]:
        """Whether the study's lr scaling rule held, per neighbouring pair of batch sizes at each one's best rate
        (see `batchlab.analysis.rule_check`)."""
        return rule_check(self.best_runs(), self.epochs, n_train=self.n_train)

    def edges_of_stability(self) -> list[EdgeOfStability]:
        """Sharpness during training against 2 / lr, per run that measured it (see `batchlab.analysis.sharpness`)."""
        return edges_of_stability(self.summaries, self.epochs)

    def analysis(self, *, target_metric: str = "train_loss", target: float | None = None) -> StudyAnalysis:
        """Steps-to-target, the S(B) fit, noise scale, gaps and curvature (see `batchlab.analysis.study`),
        computed once per (metric, target)."""
        key = (target_metric, target)
        if key not in self._analyses:
            spec = self.meta.get("spec", {})
            self._analyses[key] = analyze(self.summaries, self.epochs, self.end_metrics, compared=self.best_runs(),
                                          target_metric=target_metric, target=target,
                                          budget_steps=spec.get("budget_steps"),
                                          budget_examples=spec.get("budget_examples") or self.token_budget_examples,
                                          evals=self.evals)
        return self._analyses[key]
