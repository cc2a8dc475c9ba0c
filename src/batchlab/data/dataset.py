"""The dataset a study trains on: plain NumPy arrays, split and standardized, with what they mean.

:func:`batchlab.data.load.load_dataset` builds it from a built-in set (:mod:`batchlab.data.builtin`) or a user's
data file (:mod:`batchlab.data.files`); everything downstream (models, training, the store's metadata) reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """A dataset, split and ready: float32 features; int32 labels in [0, n_classes) for classification, float32
    standardized targets (training mean 0, std 1) for regression."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    """Classification: the name of each class index; empty for regression."""
    feature_names: tuple[str, ...]
    task: str = "classification"
    """`classification` or `regression` (as decided, never `auto`)."""
    image_shape: tuple[int, ...] | None = None
    """(H, W) or (H, W, C) when each row is a flattened image (row-major), e.g. (8, 8) for digits."""
    target_mean: float | None = None
    """Regression: training mean of the target in its own units (y = (target - mean) / std)."""
    target_std: float | None = None
    """Regression: training standard deviation of the target; MSE in the target's units = loss * std^2."""
    context: int | None = None
    """Text (task `next_token`): tokens per example; features and targets are (examples, context) token indices,
    the loss of an example is the mean cross-entropy over its positions (see `batchlab.data.text`)."""
    corpus: dict[str, Any] | None = None
    """Text: the corpus's character counts and SHA-256 (recorded in the summary)."""

    @property
    def tokens_per_example(self) -> int:
        """Tokens in one example: `context` for text, 1 otherwise."""
        return self.context or 1

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_classes(self) -> int:
        """Number of classes (0 for regression)."""
        return len(self.class_names)

    @property
    def n_outputs(self) -> int:
        """Width of the model's output: one logit per class, or 1 for regression."""
        return 1 if self.task == "regression" else self.n_classes

    def summary(self) -> dict[str, Any]:
        """Plain, JSON-able description (stored as the study's `meta["dataset"]`)."""
        out: dict[str, Any] = {"name": self.name, "n_train": self.n_train, "n_test": len(self.y_test),
                               "n_features": self.n_features, "n_classes": self.n_classes, "task": self.task,
                               "image_shape": None if self.image_shape is None else list(self.image_shape)}
        if self.context is not None:
            out.update(context=self.context, tokens_per_example=self.context, vocab_size=self.n_classes,
                       corpus=self.corpus)
        if self.task == "regression":
            out.update(target_mean=self.target_mean, target_std=self.target_std)
        else:
            out["class_names"] = list(self.class_names)
        return out

    def __repr__(self) -> str:
        target = {"regression": "regression", "next_token": f"vocab={self.n_classes}, context={self.context}"}.get(
            self.task, f"n_classes={self.n_classes}")
        image = f", image_shape={self.image_shape}" if self.image_shape else ""
        return (f"Dataset({self.name!r}, n_train={self.n_train}, n_test={len(self.y_test)}, "
                f"n_features={self.n_features}, {target}{image})")
