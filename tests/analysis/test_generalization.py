"""Generalization gaps against hand-made curves."""

from __future__ import annotations

import numpy as np
import pytest

from batchlab.analysis.generalization import (
    gap_at_matched_train_loss,
    generalization_gap,
    matched_train_loss_target,
)
from batchlab.errors import BatchlabError


def curves(train_loss, test_loss, train_acc, test_acc):
    return {"epoch": np.arange(len(train_loss)), "train_loss": np.array(train_loss, float),
            "test_loss": np.array(test_loss, float), "train_acc": np.array(train_acc, float),
            "test_acc": np.array(test_acc, float)}


SMALL = curves([2.0, 1.0, 0.5, 0.25], [2.1, 1.2, 0.8, 0.7], [0.2, 0.6, 0.8, 0.9], [0.2, 0.55, 0.7, 0.75])
LARGE = curves([2.0, 1.6, 1.2, 0.8], [2.1, 1.8, 1.5, 1.2], [0.2, 0.4, 0.5, 0.7], [0.2, 0.35, 0.45, 0.6])
DIVERGED = curves([2.0, 1.5, np.nan, np.nan], [2.1, 1.7, np.nan, np.nan], [0.2, 0.5, np.nan, np.nan],
                  [0.2, 0.4, np.nan, np.nan])


def test_generalization_gap_at_the_end():
    gap = generalization_gap(SMALL["train_loss"], SMALL["test_loss"], SMALL["train_acc"], SMALL["test_acc"])
    assert (gap.loss_gap, gap.acc_gap, gap.index) == (pytest.approx(0.45), pytest.approx(0.15), 3)
    assert generalization_gap(0.25, 0.7, 0.9, 0.75).loss_gap == pytest.approx(0.45)
    # a diverged run is read at its last finite evaluation
    gap = generalization_gap(DIVERGED["train_loss"], DIVERGED["test_loss"], DIVERGED["train_acc"],
                             DIVERGED["test_acc"])
    assert (gap.loss_gap, gap.acc_gap, gap.index) == (pytest.approx(0.2), pytest.approx(0.1), 1)
    with pytest.raises(BatchlabError):
        generalization_gap(SMALL["train_loss"], SMALL["test_loss"][:2], SMALL["train_acc"], SMALL["test_acc"])


def test_gap_at_matched_train_loss_interpolates_between_epochs():
    out = gap_at_matched_train_loss({"small": SMALL, "large": LARGE, "diverged": DIVERGED}, 0.8)
    # small: 1.0 -> 0.5 between epochs 1 and 2, t = 0.4: test loss 1.2 - 0.4 * 0.4, test acc 0.55 + 0.4 * 0.15
    small = out["small"]
    assert small.epoch == pytest.approx(1.4) and small.train_loss == pytest.approx(0.8)
    assert small.test_loss == pytest.approx(1.04) and small.test_acc == pytest.approx(0.61)
    assert small.train_acc == pytest.approx(0.68) and small.loss_gap == pytest.approx(0.24)
    assert small.acc_gap == pytest.approx(0.07)
    # large reaches 0.8 exactly at its last epoch (t = 1): the values there, no extrapolation
    large = out["large"]
    assert large.epoch == pytest.approx(3.0) and large.test_loss == pytest.approx(1.2)
    assert large.loss_gap == pytest.approx(0.4)
    assert out["diverged"] is None
    # a target above the initial loss is met at epoch 0
    assert gap_at_matched_train_loss({"small": SMALL}, 5.0)["small"].epoch == 0.0


def test_matched_target_is_the_largest_final_train_loss_so_every_run_reaches_it():
    runs = {"small": SMALL, "large": LARGE}
    target = matched_train_loss_target(runs)
    assert target == 0.8
    assert all(v is not None for v in gap_at_matched_train_loss(runs, target).values())
    assert matched_train_loss_target({**runs, "diverged": DIVERGED}) == 1.5  # its last finite train loss
    with pytest.raises(BatchlabError):
        matched_train_loss_target({"nan": curves([np.nan], [np.nan], [np.nan], [np.nan])})
