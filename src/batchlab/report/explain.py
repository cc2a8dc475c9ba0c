"""The written explanation of a study: the puzzle answered (:func:`batchlab.report.text.explain`), then the
paragraphs on noise, scaling, the noise scale and generalization (:mod:`batchlab.report.findings`), every claim
from a measured number."""

from __future__ import annotations

from batchlab.report.findings import (
    generalization_paragraph,
    noise_ratio_paragraph,
    noise_scale_paragraph,
    scaling_paragraph,
)
from batchlab.report.text import explain
from batchlab.study_data import StudyData


def explanation(data: StudyData, *, target_metric: str = "train_loss", target: float | None = None) -> str:
    """The whole explanation, paragraphs separated by blank lines."""
    a = data.analysis(target_metric=target_metric, target=target)
    best_runs = data.best_runs()
    findings = [p for p in (noise_ratio_paragraph(best_runs, n_train=data.n_train), scaling_paragraph(a, tokens_per_example=data.tokens_per_example),
                            noise_scale_paragraph(a), generalization_paragraph(a, best_runs, task=data.task)) if p]
    text = explain(best_runs, data.epochs, n_train=data.n_train, device=data.meta["device"], task=data.task)
    if len({s.lr for s in data.summaries}) > 1:
        best = sorted({(s.batch_size, s.lr) for s in best_runs})
        text = ("Each batch size is compared at its own best learning rate (lowest mean final test loss): "
                + ", ".join(f"{lr:g} at batch size {b}" for b, lr in best) + ".\n\n" + text)
    return "\n\n".join([text, *findings])
