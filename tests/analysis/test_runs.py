"""Run summaries computed from stored curves."""

from __future__ import annotations

import numpy as np

from batchlab.analysis.runs import first_epoch_reaching, summarize_run
from batchlab.store.db import Store


def test_first_epoch_reaching():
    curve = np.array([2.0, 1.5, 1.0, 1.2, 0.9])
    assert first_epoch_reaching(curve, 1.0) == 2
    assert first_epoch_reaching(curve, 2.0) == 0
    assert first_epoch_reaching(curve, 0.5) is None


def test_summary_quotes_the_stored_numbers(wine_study):
    store = Store.open(wine_study)
    run = store.runs()[0]
    epochs = store.epochs(run["run_id"])
    s = summarize_run(run, epochs, store.step_losses(run["run_id"])[1])
    assert s.final_test_loss == epochs["test_loss"][-1] and s.initial_train_loss == epochs["train_loss"][0]
    assert s.best_test_loss == epochs["test_loss"].min()
    assert epochs["test_loss"][s.best_test_loss_epoch] == s.best_test_loss
    assert s.total_updates == 12 * 142 and s.time_per_update_s == s.wall_time_s / s.total_updates
    assert s.step_noise > 0 and "bs1-" in repr(s)
