"""The written explanation of a study: first the puzzle answered in plain words (:mod:`batchlab.report.answer`:
which curve is noisy and why, which run took longer and why, what the updates achieved, what diverged), then the
paragraphs with the terms of the field, each explained where it first appears (:mod:`batchlab.report.findings`:
steps to target, the noise scale, step noise against the sampling prediction, generalization). Every statement
comes from a measured number by a rule stated in those modules."""

from __future__ import annotations

from batchlab.report.answer import answer
from batchlab.report.findings import (
    generalization_paragraph,
    noise_ratio_paragraph,
    noise_scale_paragraph,
    scaling_paragraph,
)
from batchlab.report.optimal_lr import optimal_lr_paragraph
from batchlab.report.rules import rule_paragraph
from batchlab.report.sharpness import sharpness_paragraph
from batchlab.study_data import StudyData


def explanation(data: StudyData, *, target_metric: str = "train_loss", target: float | None = None) -> str:
    """The whole explanation, paragraphs separated by blank lines."""
    a = data.analysis(target_metric=target_metric, target=target)
    best_runs = data.best_runs()
    paragraphs = answer(best_runs, data.epochs, all_runs=data.summaries, n_train=data.n_train,
                        device=data.meta.get("device", "cpu"), task=data.task,
                        optimizer=data.meta.get("spec", {}).get("optimizer", "sgd"))
    if len({s.lr for s in data.summaries}) > 1:
        best = sorted({(s.batch_size, s.lr) for s in best_runs})
        paragraphs.insert(0, "Each batch size is compared at its own best learning rate (lowest mean final test "
                          "loss, preferring rates at which no run diverged): "
                          + ", ".join(f"{lr:g} at batch size {b:,}" for b, lr in best) + ".")
    findings = [scaling_paragraph(a, tokens_per_example=data.tokens_per_example), noise_scale_paragraph(a),
                noise_ratio_paragraph(best_runs, n_train=data.n_train),
                generalization_paragraph(a, best_runs, task=data.task)]
    rule = str(data.meta.get("spec", {}).get("lr_scaling", "none"))
    extra = [optimal_lr_paragraph(data.optimal_lr()),
             rule_paragraph(data.rule_check(), rule=rule) if rule != "none" else "",
             sharpness_paragraph(data.edges_of_stability(), n_train=data.n_train)]
    return "\n\n".join(p for p in paragraphs + findings + extra if p)
