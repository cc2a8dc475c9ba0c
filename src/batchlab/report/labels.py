"""How the report names and formats what a study measured, in one place: the metric (accuracy or R²), its
values, and the loss."""

from __future__ import annotations


def metric_label(task: str) -> str:
    """How tables and text name the metric stored in the `*_acc` fields: `acc`, or `R²` for regression."""
    return "R²" if task == "regression" else "acc"


def metric_text(value: float, task: str) -> str:
    """A metric value as shown: a percentage for accuracy, four decimals for R²."""
    return f"{value:.4f}" if task == "regression" else f"{value:.1%}"


def loss_name(task: str) -> str:
    """What the loss is, for axis labels."""
    if task == "next_token":
        return "cross-entropy per token, nats"
    return "squared error, standardized target" if task == "regression" else "cross-entropy loss"
