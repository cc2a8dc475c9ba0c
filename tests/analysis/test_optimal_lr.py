"""The optimal rate against batch size on synthetic optima with planted parameters: the sub-grid parabola, each
form's fit with its intervals, and the AIC choice between forms."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from batchlab.analysis.optimal_lr import (
    FORMS,
    automatic_targets,
    best_rate,
    fit_form,
    optimal_lr,
    optimal_lr_dict,
    optimal_lr_study,
    parabola_vertex,
)

SIZES = np.array([2, 4, 8, 16, 32, 64, 128, 256, 512, 1024], float)
PLANTED = {"linear": {"c": 1e-3}, "sqrt": {"c": 2e-3}, "saturating": {"lr_max": 0.5, "b_noise": 100.0},
           "surge": {"lr_peak": 0.01, "b_noise": 64.0}, "constant": {"c": 0.03}}


def test_parabola_vertex_hand_values():
    assert parabola_vertex([0.0, 1.0, 3.0], [(0 - 1.2) ** 2, (1 - 1.2) ** 2, (3 - 1.2) ** 2]) == pytest.approx(1.2)
    assert parabola_vertex([0.0, 1.0, 2.0], [0.0, 1.0, 0.0]) is None  # opens downward
    assert parabola_vertex([0.0, 1.0, 2.0], [3.0, 2.0, 1.0]) is None  # a line: no vertex


def test_best_rate_interpolates_between_grid_points():
    lrs = np.geomspace(1e-3, 1, 7)  # a factor of ~3.16 apart
    planted = 0.042
    p = best_rate(lrs, (np.log(lrs) - math.log(planted)) ** 2 + 0.3, 32)
    assert p is not None and p.interpolated and not p.at_edge
    assert p.lr == pytest.approx(planted, rel=1e-9) and p.grid_lr == pytest.approx(lrs[3])
    edge = best_rate(lrs, -np.log(lrs), 32)  # still improving at the largest rate
    assert edge is not None and edge.at_edge and not edge.interpolated and edge.lr == pytest.approx(1.0)
    infeasible = best_rate(lrs, np.where(lrs > 0.1, np.inf, (np.log(lrs) - math.log(0.1)) ** 2), 8)
    assert infeasible is not None and not infeasible.interpolated and infeasible.grid_lr == pytest.approx(lrs[4])


@pytest.mark.parametrize("form", sorted(PLANTED))
def test_each_form_recovers_its_planted_parameters_within_its_intervals(form):
    rng = np.random.default_rng(0)
    truth = PLANTED[form]
    lr = FORMS[form][1](SIZES, *truth.values()) * np.exp(rng.normal(0, 0.05, len(SIZES)))
    fit = fit_form(form, SIZES, lr)
    assert fit is not None
    for name, value in truth.items():
        assert fit.low[name] <= value <= fit.high[name], (name, fit)
        assert fit.params[name] == pytest.approx(value, rel=0.15)


@pytest.mark.parametrize("form", ["linear", "sqrt", "saturating", "surge"])
def test_aic_chooses_the_planted_form_from_a_grid_sweep(form):
    """Cells on an lr grid whose objective is a parabola in log-lr around the planted optimum lr*(B): the
    sub-grid optimum recovers lr*(B) exactly, and AIC picks the planted form."""
    truth = PLANTED[form]
    optima = FORMS[form][1](SIZES, *truth.values()) * np.exp(np.random.default_rng(1).normal(0, 0.03, len(SIZES)))
    grid = np.geomspace(1e-6, 10, 29)
    cells = [(int(b), float(lr), float((math.log(lr) - math.log(o)) ** 2)) for b, o in zip(SIZES, optima)
             for lr in grid]
    result = optimal_lr(cells)
    assert [p.batch_size for p in result.points] == list(SIZES.astype(int))
    np.testing.assert_allclose([p.lr for p in result.points], optima, rtol=1e-9)
    assert result.best is not None and result.best.form == form and result.decisive
    doc = optimal_lr_dict([result])[0]
    assert doc["best_form"] == form and doc["fits"][0]["params"].keys() == truth.keys()


def test_surge_peak_is_where_the_optimum_turns():
    fit = fit_form("surge", SIZES, FORMS["surge"][1](SIZES, 0.01, 64.0))
    assert fit is not None and fit.params["b_noise"] == pytest.approx(64.0, rel=1e-6)
    assert float(fit.predict(64.0)) == pytest.approx(0.01, rel=1e-6)  # the peak value at B = B_noise


def run(b, lr, seed, losses, status="completed"):
    return SimpleNamespace(run_id=f"{b}-{lr}-{seed}", batch_size=b, lr=lr, seed=seed, status=status,
                           final_train_loss=losses[-1])


def test_study_level_optima_at_the_end_and_at_targets():
    # loss(t) = exp(-rate t / 100) with rate peaking at lr* = 0.01 sqrt(B): steps-to-target and the final loss
    # are both best at lr*(B), so every objective gives the sqrt form.
    runs, curves = [], {}
    updates = np.arange(0, 1001)
    for b in (4, 16, 64, 256):
        for lr in np.geomspace(1e-3, 1, 17):
            rate = 1.0 / (1.0 + (math.log(lr) - math.log(0.01 * math.sqrt(b))) ** 2)
            for seed in (0, 1):
                losses = 2.0 * np.exp(-rate * updates / 200.0) * (1 + 0.01 * seed)
                r = run(b, float(lr), seed, losses)
                runs.append(r)
                curves[r.run_id] = {"updates": updates, "train_loss": losses}
    targets = automatic_targets(runs, curves)
    assert len(targets) == 3 and targets[0] > targets[1] > targets[2]
    results = optimal_lr_study(runs, curves)
    assert [r.target for r in results] == [None, *targets]
    for r in results:  # steps to a target are whole updates, so those optima carry a quantization error
        assert len(r.points) == 4
        np.testing.assert_allclose([p.lr for p in r.points], [0.01 * math.sqrt(b) for b in (4, 16, 64, 256)],
                                   rtol=0.25)
        sqrt = next(f for f in r.fits if f.form == "sqrt")
        assert sqrt.params["c"] == pytest.approx(0.01, rel=0.15)
    assert results[0].best is not None and results[0].best.form == "sqrt"
    assert optimal_lr_study(runs[:1], curves) == []


def test_steps_to_target_use_the_evaluations_between_epoch_ends():
    from batchlab.analysis.optimal_lr import sweep_cells

    r = run(8, 0.1, 0, np.array([2.0, 1.0, 0.5]))
    curves = {r.run_id: {"updates": np.array([0, 10, 20]), "train_loss": np.array([2.0, 1.0, 0.5])}}
    evals = {r.run_id: {"step": np.array([5, 15]), "train_loss": np.array([1.5, 0.7])}}
    assert sweep_cells([r], curves, target=0.8) == [(8, 0.1, math.log(20))]
    assert sweep_cells([r], curves, target=0.8, evals=evals) == [(8, 0.1, math.log(15))]
