"""Per-run summaries: the numbers the table, the explanation and the figures quote, computed from raw curves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from batchlab.analysis.noise import UNRESOLVED_LOSS, residual_std_log, unresolved_fraction
from batchlab.spec import BLOWUP_FACTOR

EPOCH_NOISE_WINDOW = 7
"""Running-median window (epochs) for the noise of per-epoch curves. A window of 4m+3 (not 4m+1) is used so that
a loss alternating up and down every epoch counts as noise rather than being tracked by the median."""
STEP_NOISE_WINDOW = 51
"""Running-median window (steps) for the noise of per-step minibatch losses."""


@dataclass(frozen=True)
class RunSummary:
    """One run's headline numbers, derived from its stored curves."""

    run_id: str
    batch_size: int
    lr: float
    seed: int
    status: str
    diverged_epoch: int | None
    updates_per_epoch: int
    epochs_done: int
    total_updates: int
    examples_seen: int
    wall_time_s: float
    compile_time_s: float
    initial_train_loss: float
    final_train_loss: float
    final_train_acc: float
    final_test_loss: float
    final_test_acc: float
    best_test_loss: float
    best_test_loss_epoch: int
    epoch_noise: float
    """Residual std of log train loss per epoch (window EPOCH_NOISE_WINDOW)."""
    test_epoch_noise: float
    """Residual std of log test loss per epoch (window EPOCH_NOISE_WINDOW)."""
    step_noise: float
    """Residual std of log minibatch loss per step (window STEP_NOISE_WINDOW), over the steps whose loss is
    resolvable (see :mod:`batchlab.analysis.noise`)."""
    step_zero_fraction: float = 0.0
    """Fraction of finite per-step losses that are 0 or below float32 resolution (UNRESOLVED_LOSS, ~1.2e-7), which
    `step_noise` leaves out; NaN without step losses."""
    n_zero_steps: int = 0
    """Number of those steps."""
    group_replicas: int = 1
    """Runs trained together with this one in one vmapped program (its group: one batch size, every seed and
    rate of it). They share one clock, so `wall_time_s` is the group's training time, not this run's alone."""

    @property
    def time_per_update_s(self) -> float:
        """The group's training time per update (a group's replicas update together)."""
        return self.wall_time_s / self.total_updates if self.total_updates else float("nan")

    @property
    def time_per_replica_s(self) -> float:
        """The group's training time divided by its replicas: the share of one run, for comparing groups of
        different sizes (an apportioned share, not a clock of its own)."""
        return self.wall_time_s / self.group_replicas

    @property
    def blown_up(self) -> bool:
        """Diverged by the blow-up rule (a finite train loss above BLOWUP_FACTOR x its initial value), not by a
        non-finite loss: the epoch that tripped the rule is the last recorded, and earlier ones stayed below it."""
        return self.status == "diverged" and bool(self.final_train_loss > BLOWUP_FACTOR * self.initial_train_loss)

    def __repr__(self) -> str:
        return (f"RunSummary({self.run_id!r}, batch_size={self.batch_size}, status={self.status!r}, "
                f"updates={self.total_updates}, wall_time_s={self.wall_time_s:.3g}, "
                f"final_test_loss={self.final_test_loss:.4g})")


def summarize_run(run: dict[str, Any], epochs: dict[str, np.ndarray], step_losses: np.ndarray) -> RunSummary:
    """Build a RunSummary from a run's row, its per-epoch arrays and its per-step losses. The row's optional
    `group_replicas` (default 1) is how many runs shared its group's clock (see :func:`group_sizes`)."""
    test_loss = epochs["test_loss"]
    finite = np.isfinite(test_loss)
    best = int(np.argmin(np.where(finite, test_loss, np.inf))) if finite.any() else 0
    last = _last_finite_index(epochs["train_loss"])
    return RunSummary(
        run_id=run["run_id"], batch_size=run["batch_size"], lr=run["lr"], seed=run["seed"], status=run["status"],
        diverged_epoch=run["diverged_epoch"], updates_per_epoch=run["updates_per_epoch"],
        epochs_done=run["epochs_done"], total_updates=run["total_updates"], examples_seen=run["examples_seen"],
        wall_time_s=run["wall_time_s"], compile_time_s=run["compile_time_s"] or 0.0,
        initial_train_loss=float(epochs["train_loss"][0]) if len(epochs["train_loss"]) else float("nan"),
        final_train_loss=float(epochs["train_loss"][last]), final_train_acc=float(epochs["train_acc"][last]),
        final_test_loss=float(epochs["test_loss"][last]), final_test_acc=float(epochs["test_acc"][last]),
        best_test_loss=float(test_loss[best]), best_test_loss_epoch=int(epochs["epoch"][best]),
        epoch_noise=residual_std_log(epochs["train_loss"][1:], EPOCH_NOISE_WINDOW),
        test_epoch_noise=residual_std_log(epochs["test_loss"][1:], EPOCH_NOISE_WINDOW),
        step_noise=residual_std_log(step_losses, STEP_NOISE_WINDOW),
        step_zero_fraction=unresolved_fraction(step_losses),
        n_zero_steps=int(np.sum(np.asarray(step_losses, float) < UNRESOLVED_LOSS)),
        group_replicas=int(run.get("group_replicas", 1)),
    )


def first_epoch_reaching(curve: np.ndarray, target: float) -> int | None:
    """Index of the first value <= target (an epoch number when the curve starts at epoch 0), else None."""
    hits = np.flatnonzero(np.asarray(curve) <= target)
    return int(hits[0]) if len(hits) else None


def _last_finite_index(x: np.ndarray) -> int:
    idx = np.flatnonzero(np.isfinite(x))
    return int(idx[-1]) if len(idx) else 0


def group_sizes(runs: list[dict[str, Any]]) -> dict[str, int]:
    """run_id -> the number of runs of the same `group_id` (store rows): the replicas that shared its clock."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.get("group_id", r["run_id"])] = counts.get(r.get("group_id", r["run_id"]), 0) + 1
    return {r["run_id"]: counts[r.get("group_id", r["run_id"])] for r in runs}
