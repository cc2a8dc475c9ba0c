"""A text study end to end (issue 13): a transformer on a small .txt corpus through training (exact noise scale
and curvature on sequence targets), the token column of the exports, a token budget, the explanation in tokens,
resume, and a sweep over the learning rate."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from batchlab.api import open as open_study
from batchlab.data.text import default_corpus
from batchlab.runner.driver import resume_study, run_study, run_sweep
from batchlab.spec import build_spec
from batchlab.store.db import Store
from batchlab.store.tables import read_tables
from batchlab.sweep import build_sweep

CONTEXT = 8


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "pydoc.txt"
    path.write_text(default_corpus()[:2000], encoding="utf-8")  # 1,800 train characters: 224 sequences of 8
    return path


def tiny(corpus, **fields):
    values = {"dataset": str(corpus), "model": "transformer", "context": CONTEXT, "layers": 1, "width": 8,
              "heads": 2, "optimizer": "adam", "lr": 0.01, "batch_sizes": "16,full", "epochs": 2, "device": "cpu"}
    return build_spec({**values, **fields})


@pytest.mark.slow
def test_text_study_records_tokens(corpus, tmp_path):
    spec = tiny(corpus, budget_tokens=4000)  # ceil(4000 / 8) = 500 sequences: 3 epochs of 224
    assert spec.epochs_for(16, 224) == 3
    out = tmp_path / "study"
    run_study(spec, out)
    tables = read_tables(out)
    epochs, evals = tables["epochs"], tables["evals"]
    assert list(epochs)[:5] == ["run_id", "epoch", "updates", "examples_seen", "tokens_seen"]
    np.testing.assert_array_equal(epochs["tokens_seen"], epochs["examples_seen"] * CONTEXT)
    assert epochs["tokens_seen"].max() == 3 * 224 * CONTEXT and "tokens_seen" in evals
    assert np.all(np.isfinite(epochs["train_loss"])) and epochs["train_loss"][-1] < epochs["train_loss"][0]
    assert np.isfinite(epochs["b_simple"][0])  # exact, per sequence
    assert np.all(np.isfinite(tables["runs"]["hessian_top_eigenvalue"]))
    store = Store.open(out)
    try:
        meta = store.meta()
    finally:
        store.close()
    assert meta["dataset"]["task"] == "next_token" and meta["dataset"]["tokens_per_example"] == CONTEXT
    results = open_study(out)
    text = results.explanation()
    assert "tokens" in text and "sequences" in text
    assert "budget of 500 sequences (4,000 tokens)" in text
    exported = results.export("csv", tmp_path / "export")
    with open(tmp_path / "export" / "epochs.csv", newline="") as f:
        header = next(csv.reader(f))
    assert "tokens_seen" in header, exported


@pytest.mark.slow
def test_text_study_resumes_and_sweeps_bit_identically(corpus, tmp_path):
    spec = tiny(corpus, gns="off", sharpness=False, batch_sizes="16", epochs=3)
    whole = tmp_path / "whole"
    run_study(spec, whole)
    reference = read_tables(whole, ("epochs",))["epochs"]
    stopped = tmp_path / "stopped"
    run_study(spec, stopped, should_stop=lambda: True)  # stops at the first epoch boundary
    assert len(read_tables(stopped, ("epochs",))["epochs"]["epoch"]) < len(reference["epoch"])
    resume_study(stopped)
    resumed = read_tables(stopped, ("epochs",))["epochs"]
    np.testing.assert_array_equal(resumed["train_loss"], reference["train_loss"])
    np.testing.assert_array_equal(resumed["tokens_seen"], reference["tokens_seen"])
    sweep = build_sweep({**{k: v for k, v in spec.to_dict().items() if v is not None}, "lr": [0.003, 0.01]})
    out = tmp_path / "sweep"
    run_sweep(sweep, out)
    swept = read_tables(out, ("epochs",))["epochs"]
    same = [i for i, rid in enumerate(swept["run_id"]) if rid == reference["run_id"][0]]
    assert len(set(swept["run_id"])) == 2 and len(same) == len(reference["epoch"])
    np.testing.assert_array_equal(swept["test_loss"][same], reference["test_loss"])  # same run id, same numbers
