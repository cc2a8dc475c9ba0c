"""The words and tables on the optimal rate, the scaling rules and the edge of stability, from planted results."""

from __future__ import annotations

import math

import numpy as np

from batchlab.analysis.optimal_lr import FORMS, optimal_lr
from batchlab.analysis.rule_check import PhaseGap, RulePair
from batchlab.analysis.sharpness import edge_of_stability
from batchlab.report.optimal_lr import optimal_lr_paragraph, optimal_lr_rows, surged
from batchlab.report.rules import rule_paragraph
from batchlab.report.sharpness import sharpness_paragraph

SIZES = [4, 8, 16, 32, 64, 128, 256, 512, 1024]


def planted(form: str, *params: float):
    grid = np.geomspace(1e-6, 10, 29)
    optima = FORMS[form][1](np.array(SIZES, float), *params)
    return optimal_lr([(b, float(lr), float((math.log(lr) - math.log(o)) ** 2)) for b, o in zip(SIZES, optima)
                       for lr in grid])


def test_surge_is_reported_when_the_optimum_rises_and_falls():
    rising_falling = planted("surge", 0.01, 64.0)
    assert surged(rising_falling) is True
    text = optimal_lr_paragraph([rising_falling])
    assert "end of training: surge" in text and "b_noise = 64" in text and "the optimum surged" in text
    saturating = planted("saturating", 0.5, 100.0)
    assert surged(saturating) is False and "no surge" in optimal_lr_paragraph([saturating])
    header, rows = optimal_lr_rows([saturating])
    assert header == ["batch size", "end of training"] and rows[-1] == ["best form", "saturating"]
    assert rows[0][1].startswith("~")  # interpolated between grid rates


def test_rule_and_sharpness_paragraphs_say_what_was_measured():
    pair = RulePair(16, 64, PhaseGap("early", (1, 5), math.log(1.2), 4.0, False),
                    PhaseGap("late", (6, 10), math.log(1.01), 0.5, True), 1.9, 2.0, True)
    text = rule_paragraph([pair], rule="sqrt")
    assert "16 vs 64: early (epochs 1-5) +20.0%, +4.0 seed spreads (breaks); late (epochs 6-10) +1.0%" in text
    assert "(follows)" in text and rule_paragraph([pair], rule="none") == ""
    r = edge_of_stability("r", batch_size=100, lr=0.1, epochs=np.arange(5), top_eigenvalue=np.array(
        [4.0, 10.0, 19.0, 21.0, 20.0]))
    assert r is not None
    words = sharpness_paragraph([r], n_train=100)
    assert "full batch, lr 0.1: lambda_max x lr / 2 went from 0.200 to 1.025" in words
    assert "reached the edge of stability" in words and "progressive sharpening" in words


def test_the_report_shows_sharpness_and_optimal_rates(monkeypatch):
    from types import SimpleNamespace

    from batchlab.report import html

    r = edge_of_stability("bs8-x", batch_size=8, lr=0.1, epochs=np.arange(3), top_eigenvalue=np.array(
        [4.0, 19.0, 20.0]), batch_sharpness=np.array([5.0, 19.5, 20.5]))
    data = SimpleNamespace(edges_of_stability=lambda: [r], optimal_lr=lambda: [planted("sqrt", 0.002)])
    anchor, _, content = html._sharpness(data)  # type: ignore[arg-type]
    assert anchor == "sharpness" and "<td>1.000</td>" in content and "<td>1.025</td>" in content
    assert "reached" in content
    anchor, _, content = html._optimal_lr(data)  # type: ignore[arg-type]
    assert anchor == "optimal-lr" and "sqrt" in content and "c = 0.002" in content
