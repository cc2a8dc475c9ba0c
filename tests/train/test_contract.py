"""The shared epoch loop's divergence accounting (issue 10, "Blow-ups are named"), on a scripted backend."""

from __future__ import annotations

from typing import Any

import numpy as np

from batchlab.train.contract import BLOWUP_FACTOR, Checkpoint, GroupRun, diverged_now


class Scripted:
    """A backend whose epoch-end train losses are given per (epoch, replica); other metrics are constant."""

    asynchronous = False
    compile_time_s = 0.0

    def __init__(self, train_losses: np.ndarray):
        self.losses = np.asarray(train_losses, float)  # (epochs + 1, replicas), row 0 = epoch 0

    def _metrics(self, epoch: int) -> list[np.ndarray]:
        loss = self.losses[epoch]
        return [loss, np.full_like(loss, 0.5), loss, np.full_like(loss, 0.5)]

    def initial_state(self, initial_params: Any, resume: Checkpoint | None) -> Any:
        return 0 if resume is None else resume.epoch

    def prepare(self, state: Any, first_epoch: int) -> None:
        pass

    def evaluate(self, state: Any) -> list[np.ndarray]:
        return self._metrics(state)

    def dispatch(self, state: Any, epoch: int) -> tuple[Any, Any]:
        return epoch, epoch

    def fetch(self, outputs: Any):
        m = self._metrics(outputs)
        return m[0][:, None].copy(), m, np.zeros(0, np.int64), np.zeros((len(m[0]), 0, 4))

    def block(self, state: Any) -> None:
        pass

    def params(self, state: Any) -> Any:
        return state

    def leaves(self, state: Any) -> list[np.ndarray]:
        return [np.array(state)]


def run(losses: np.ndarray, **kwargs: Any) -> list:
    n = losses.shape[1]
    loop = GroupRun(Scripted(losses), n_replicas=n, epochs=len(losses) - 1, n_train=10, steps_per_epoch=1)
    return list(loop.epochs_iter(**kwargs))


def test_a_train_loss_above_100x_its_initial_value_is_diverged_from_that_epoch():
    """Replica 0 trains; replica 1 reaches 100x its start exactly (not above: still training), then 1.35e6;
    replica 2 turns NaN. Each is diverged at its own epoch, once, and inactive after it."""
    losses = np.array([[2.0, 2.0, 2.0],
                       [1.0, 200.0, 1.0],
                       [0.5, 1.35e6, np.nan],
                       [0.4, 3.0, 1.0]])
    records = run(losses)
    assert BLOWUP_FACTOR == 100.0
    diverged = np.array([r.diverged for r in records])
    np.testing.assert_array_equal(diverged, [[0, 0, 0], [0, 0, 0], [0, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(records[-1].active, [True, False, False])  # not trained on after divergence
    np.testing.assert_array_equal(records[2].active, [True, True, True])  # the diverged epoch is still recorded


def test_the_rule_needs_a_positive_finite_reference():
    step = np.ones((3, 1))
    metrics = [np.array([1e9, 1e9, 5.0]), np.zeros(3), np.zeros(3), np.zeros(3)]
    np.testing.assert_array_equal(diverged_now(step, metrics, np.array([0.0, np.nan, 0.04])), [False, False, True])
    np.testing.assert_array_equal(diverged_now(step, metrics, None), [False, False, False])


def test_a_resumed_loop_keeps_the_initial_loss_it_was_given():
    """After a resume the reference is the checkpoint's epoch-0 loss: the blow-up at epoch 3 is found there too."""
    losses = np.array([[2.0], [1.0], [1.0], [500.0]])
    whole = run(losses, checkpoints=True)
    cp = whole[2].checkpoint
    np.testing.assert_array_equal(cp.initial_train_loss, [2.0])
    resumed = run(losses, resume=cp)
    assert [r.epoch for r in resumed] == [3] and resumed[0].diverged.tolist() == [True]
    without = run(losses, resume=Checkpoint(cp.epoch, cp.wall_time_s, cp.leaves, cp.active))
    assert without[0].diverged.tolist() == [False]  # no reference: only non-finite losses count
