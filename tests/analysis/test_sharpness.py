"""The edge-of-stability reading of sharpness over training: on planted curves (known answers), and end to end:
full-batch gradient descent with squared error on a small regression set sharpens from below half of 2 / lr to
within 10% of it (Cohen et al. 2021), measured with `sharpness_every` and read back from the store."""

from __future__ import annotations

import math

import numpy as np
import pytest

from batchlab.analysis.sharpness import edge_of_stability, edge_of_stability_dict


def test_planted_progressive_sharpening_reaches_the_edge():
    lr = 0.1  # threshold 20
    epochs = np.arange(0, 1001, 50)
    top = np.minimum(4.0 + epochs * 0.04, 20.0) + np.where(epochs >= 600, np.resize([1.5, -1.5], len(epochs)), 0)
    top = np.where(epochs % 50 == 0, top, np.nan)
    r = edge_of_stability("r", batch_size=100, lr=lr, epochs=epochs, top_eigenvalue=top)
    assert r is not None and r.threshold == 20.0
    assert r.first_ratio == pytest.approx(0.2)
    assert r.late_ratio == pytest.approx(1.0, abs=0.08)  # oscillation +-1.5 around 20, median of the last quarter
    assert r.peak_ratio == pytest.approx(21.5 / 20)
    assert r.reached and r.sharpened and math.isnan(r.late_batch_ratio)


def test_planted_run_that_stays_below_and_one_not_measured():
    epochs = np.arange(0, 11)
    r = edge_of_stability("r", batch_size=8, lr=0.01, epochs=epochs, top_eigenvalue=np.full(11, 50.0),
                          batch_sharpness=np.full(11, 190.0))
    assert r is not None and r.late_ratio == pytest.approx(0.25) and not r.reached and not r.sharpened
    assert r.late_batch_ratio == pytest.approx(0.95)
    assert edge_of_stability("r", batch_size=8, lr=0.01, epochs=epochs, top_eigenvalue=np.full(11, np.nan)) is None
    assert edge_of_stability_dict([r])[0]["late_ratio"] == pytest.approx(0.25)


@pytest.mark.slow
def test_full_batch_gd_on_a_regression_set_reaches_the_edge_of_stability(tmp_path):
    from sklearn.datasets import load_diabetes

    from batchlab.runner.driver import run_study
    from batchlab.spec import build_spec
    from batchlab.store.tables import read_tables
    from batchlab.study_data import StudyData

    load_diabetes(as_frame=True).frame.to_csv(tmp_path / "diabetes.csv", index=False)
    spec = build_spec({"dataset": str(tmp_path / "diabetes.csv"), "target": "target", "task": "regression",
                       "hidden": "64,64", "activation": "tanh", "batch_sizes": "full", "lr": 0.1, "epochs": 700,
                       "sharpness_every": 50, "gns": "off", "sharpness": False})
    run_study(spec, tmp_path / "study")
    (r,) = StudyData.load(tmp_path / "study").edges_of_stability()
    assert r.first_ratio < 0.5  # starts below half of 2 / lr (measured 0.296)
    assert abs(r.late_ratio - 1) <= 0.1 and r.reached  # ends within 10% of 2 / lr
    epochs = read_tables(tmp_path / "study", ("epochs",))["epochs"]
    measured = np.isfinite(epochs["hessian_top_eigenvalue"])
    assert list(epochs["epoch"][measured]) == list(range(0, 701, 50))
    assert np.isfinite(epochs["hessian_trace"][measured]).all()
