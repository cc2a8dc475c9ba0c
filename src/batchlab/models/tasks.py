"""The learning task: what a model's outputs mean, the loss it is trained on, and the metric reported beside it.

- classification: K outputs (logits); per-example loss cross-entropy; metric accuracy.
- next_token (text, :mod:`batchlab.data.text`): an example is a sequence of T tokens with a target at every
  position; outputs (T, V) logits; per-example loss the mean over positions of the cross-entropy in nats, so a
  minibatch or set mean is the per-token cross-entropy (perplexity = exp(loss)); metric per-token accuracy.
- regression: 1 output, a prediction of the standardized target z = (y - mean) / std (training statistics, see
  :mod:`batchlab.data.load`); per-example loss the squared error (prediction - z)^2, so a mean loss is the mean
  squared error in units of the training variance of y (MSE in the target's own units = loss * std^2; a model
  that always predicts the training mean has train loss 1); metric the coefficient of determination
  R^2 = 1 - sum (z_i - pred_i)^2 / sum (z_i - mean(z))^2 over the evaluated set, its mean taken over that set
  (`sklearn.metrics.r2_score`'s definition; R^2 is the same in standardized and original units).

The store keeps the metric in its `train_acc` / `test_acc` columns for both tasks; the study's
`meta["dataset"]["task"]` says which it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

TASKS = ("classification", "regression", "next_token")


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example cross-entropy -log softmax(logits)[label]."""
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], axis=-1)[..., 0]


@dataclass(frozen=True)
class Task:
    """A task as pure functions on (outputs, targets), outputs being `model.apply(params, x)`.

    The metric of a set is `metric(mean over its examples of score(outputs, targets), targets)`, which lets an
    evaluation sum `score` chunk by chunk and still report R^2 (whose denominator is a property of the set)."""

    name: str
    loss: Callable[[jax.Array, jax.Array], jax.Array]
    """Per-example loss, the training objective (its mean over a minibatch is the step loss)."""
    score: Callable[[jax.Array, jax.Array], jax.Array]
    """Per-example term of the metric: 1.0 for a correct class, or the squared error."""
    metric: Callable[[jax.Array, jax.Array], jax.Array]
    """(mean score over the set, the set's targets) -> the reported metric (accuracy or R^2)."""
    target_dtype: jnp.dtype
    """int32 class indices or float32 standardized values."""

    def __repr__(self) -> str:
        return f"Task({self.name!r})"


def squared_error(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-example (outputs[:, 0] - target)^2 for a one-output model."""
    return (outputs[..., 0] - targets) ** 2


def correct(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-example 1.0 where the largest logit is the target class, else 0.0."""
    return (jnp.argmax(outputs, -1) == targets).astype(jnp.float32)


def r_squared(mean_squared_error: jax.Array, targets: jax.Array) -> jax.Array:
    """R^2 = 1 - MSE / Var(targets) (variance with 1/n): 1 for a perfect fit, 0 for predicting the mean of the
    set, negative for worse; equal to sklearn.metrics.r2_score (NaN if the set's targets are all equal)."""
    return 1.0 - mean_squared_error / jnp.var(targets)


CLASSIFICATION = Task("classification", cross_entropy, correct, lambda mean, targets: mean, jnp.int32)
REGRESSION = Task("regression", squared_error, squared_error, r_squared, jnp.float32)
NEXT_TOKEN = Task("next_token", lambda logits, targets: jnp.mean(cross_entropy(logits, targets), -1),
                  lambda logits, targets: jnp.mean(correct(logits, targets), -1), lambda mean, targets: mean,
                  jnp.int32)


def get_task(name: str) -> Task:
    """The task named `name` (`classification`, `regression` or `next_token`)."""
    return {"classification": CLASSIFICATION, "regression": REGRESSION, "next_token": NEXT_TOKEN}[name]


def torch_task_loss(outputs: Any, y: Any, *, regression: bool) -> Any:
    """The same per-example loss on PyTorch tensors, for the PyTorch backend: cross-entropy of the logits, or the
    squared error of the one output for regression; `outputs` (..., outputs), `y` (...)."""
    import torch  # the PyTorch backend's twin of `Task.loss`; torch is imported by then

    if regression:
        return (outputs[..., 0] - y) ** 2
    return torch.nn.functional.cross_entropy(outputs.flatten(0, -2), y.flatten(), reduction="none").reshape(y.shape)
