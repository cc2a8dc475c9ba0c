"""The words and records `batchlab diagnose` prints, checked against the numbers they quote."""

from __future__ import annotations

import json

import numpy as np
from rich.console import Console

from batchlab.analysis.diagnose import diagnose
from batchlab.interop.logs import LossHistory
from batchlab.report.diagnose import (
    comparability_warning,
    curve_table,
    diagnosis_document,
    diagnosis_records,
    diagnosis_warnings,
    verdict,
)


def history(path: str, sigma: float, n: int, *, seed: int, unit: str = "step", spacing: float = 1.0,
            run: str | None = None, notes: tuple[str, ...] = ()) -> LossHistory:
    t = np.arange(n)
    loss = np.exp(np.log(0.1 + 2 * np.exp(-t / (n / 2))) + np.random.default_rng(seed).normal(0, sigma, n))
    return LossHistory(path, "csv", "loss", spacing * t, unit, loss, run=run, notes=notes)


def test_records_are_plain_json_with_ranks_and_the_call():
    hs = [history("a.csv", 0.05, 300, seed=0), history("b.csv", 0.3, 300, seed=1)]
    d = diagnose([h.loss for h in hs])
    records = json.loads(json.dumps(diagnosis_records(hs, d), allow_nan=False))
    assert [r["path"] for r in records] == ["a.csv", "b.csv"]
    assert [r["rank"] for r in records] == [2, 1]
    assert [r["most_likely_smallest_batch"] for r in records] == [False, True]
    assert records[1]["residual_std_log"] == d.noise[1].residual_std_log
    assert set(records[0]) == {"label", "path", "run", "format", "source", "resolution", "n_points", "residual_std_log",
                               "residual_std_log_low", "residual_std_log_high", "mean_abs_first_difference",
                               "fraction_rising", "residual_lag1_autocorrelation", "rank",
                               "most_likely_smallest_batch"}


def test_nan_metric_becomes_null():
    smooth = LossHistory("s.json", "keras", "loss", np.arange(1.0, 21), "epoch", np.exp(-np.arange(20) / 5))
    (record,) = diagnosis_records([smooth], diagnose([smooth.loss]))
    assert record["residual_lag1_autocorrelation"] is None and record["residual_std_log"] == 0.0


def test_verdict_names_the_noisiest_with_its_numbers():
    hs = [history("large.csv", 0.05, 300, seed=0), history("small.csv", 0.3, 300, seed=1)]
    d = diagnose([h.loss for h in hs])
    text = verdict(hs, d)
    ratio = d.noise[1].residual_std_log / d.noise[0].residual_std_log
    assert text.startswith(f"small.csv has a residual std of log-loss of {d.noise[1].residual_std_log:.3g}")
    assert f"{ratio:.3g}x as noisy" in text and "small.csv most likely came from the smallest batch" in text
    assert "Caution" not in text


def test_verdict_too_close_to_call_and_the_order_of_three():
    hs = [history("a.csv", 0.1, 300, seed=0), history("b.csv", 0.1, 300, seed=1), history("c.csv", 0.01, 300, seed=2)]
    text = verdict(hs, diagnose([h.loss for h in hs]))
    assert text.startswith("Too close to call:") and "most likely came" not in text
    assert "Noisiest first:" in text
    assert text.rstrip(".").split("Noisiest first: ")[1].split(", ")[2].startswith("c.csv")


def test_verdict_of_one_curve_asks_for_more():
    h = history("only.csv", 0.1, 300, seed=0)
    text = verdict([h], diagnose([h.loss]))
    assert text.startswith("One curve: only.csv") and "two or more curves" in text


def test_comparability_warning():
    step = history("steps.csv", 0.1, 300, seed=0)
    epoch = history("epochs.json", 0.1, 300, seed=1, unit="epoch")
    every_50 = history("lightning.csv", 0.1, 300, seed=2, spacing=50.0)
    assert comparability_warning([step, history("b.csv", 0.2, 200, seed=3)]) is None
    assert comparability_warning([step]) is None
    warning = comparability_warning([step, epoch, every_50])
    assert "steps.csv: per step; epochs.json: per epoch; lightning.csv: every 50 steps" in warning
    assert "\n" not in warning and "lengths" not in warning
    assert "lengths differ (300 vs 30 points)" in comparability_warning([step, history("s.csv", 0.1, 30, seed=4)])
    hs = [step, epoch]
    assert "Caution" in verdict(hs, diagnose([h.loss for h in hs]))


def test_curve_table_shows_the_metrics_and_rank():
    h = history("a.csv", 0.1, 300, seed=0)
    noise = diagnose([h.loss]).noise[0]
    console = Console(record=True, width=200)
    console.print(curve_table(h, noise, rank=2, n_curves=3))
    text = console.export_text()
    assert f"{noise.residual_std_log:.4g}" in text and f"{noise.fraction_rising:.3f}" in text
    assert "2 of 3" in text and "csv, 'loss': 300 points, per step" in text


def test_verdict_against_a_perfectly_smooth_curve_quotes_no_infinite_ratio():
    noisy = history("b1.csv", 0.5, 300, seed=0)
    smooth = LossHistory("full.csv", "csv", "loss", np.arange(300.0), "step", np.exp(-np.arange(300) / 100))
    text = verdict([smooth, noisy], diagnose([smooth.loss, noisy.loss]))
    assert "noisy where the other is smooth" in text and "inf" not in text
    assert "b1.csv most likely came from the smallest batch" in text


def test_records_and_words_name_each_run_of_a_multi_run_file():
    hs = [history("steps.csv", 0.3, 300, seed=0, run="bs1-seed0-abc"), history("steps.csv", 0.05, 300, seed=1,
                                                                             run="bs64-seed0-def")]
    d = diagnose([h.loss for h in hs])
    records = diagnosis_records(hs, d)
    assert [(r["label"], r["path"], r["run"]) for r in records] == [
        ("steps.csv:bs1-seed0-abc", "steps.csv", "bs1-seed0-abc"), ("steps.csv:bs64-seed0-def", "steps.csv",
                                                                    "bs64-seed0-def")]
    assert "steps.csv:bs1-seed0-abc most likely came from the smallest batch" in verdict(hs, d)
    console = Console(record=True, width=200)
    console.print(curve_table(hs[0], d.noise[0], rank=1, n_curves=2))
    assert "steps.csv:bs1-seed0-abc" in console.export_text()


def test_document_is_one_json_object_with_curves_call_and_warnings():
    note = "metrics.csv: 'train_loss_step' holds 4 values, too few to measure (at least 5), so ..."
    hs = [history("small.csv", 0.3, 300, seed=0, notes=(note,)), history("large.csv", 0.05, 30, seed=1, unit="epoch")]
    d = diagnose([h.loss for h in hs])
    document = json.loads(json.dumps(diagnosis_document(hs, d), allow_nan=False))
    assert set(document) == {"curves", "smallest_batch", "too_close_to_call", "verdict", "warnings"}
    assert document["curves"] == json.loads(json.dumps(diagnosis_records(hs, d)))
    assert (document["smallest_batch"], document["too_close_to_call"]) == ("small.csv", False)
    assert document["verdict"] == verdict(hs, d)
    assert document["warnings"] == diagnosis_warnings(hs) == [note, comparability_warning(hs)]
    assert "resolutions differ" in document["warnings"][1] and "lengths differ" in document["warnings"][1]
    close = [history("a.csv", 0.1, 300, seed=2), history("b.csv", 0.1, 300, seed=3)]
    document = diagnosis_document(close, diagnose([h.loss for h in close]))
    assert (document["smallest_batch"], document["too_close_to_call"], document["warnings"]) == (None, True, [])


def test_tied_curves_share_rank_one_and_the_verdict_calls_none():
    # issue 11: three smooth per-epoch curves were ranked 1, 2, 3 by argument order and the first was "most likely
    # the smallest batch"
    epochs = np.arange(1.0, 41)
    hs = [LossHistory(f"{name}.json", "keras", "loss", epochs, "epoch", np.exp(-epochs / tau) + 0.05)
          for name, tau in (("full", 5), ("b16", 10), ("b1", 20))]
    d = diagnose([h.loss for h in hs])
    text = verdict(hs, d)
    assert text.startswith("Too close to call: full.json, b16.json and b1.json share rank 1 with a residual std of "
                           "log-loss of 0: each equals its running median")
    assert "most likely came" not in text and "Noisiest first" not in text
    assert [r["rank"] for r in diagnosis_records(hs, d)] == [1, 1, 1]
    assert not any(r["most_likely_smallest_batch"] for r in diagnosis_records(hs, d))
    console = Console(record=True, width=200)
    console.print(curve_table(hs[0], d.noise[0], rank=1, n_curves=3, n_tied=3))
    assert "1 of 3, tied with 2 others" in console.export_text()
