"""The explanation states measured numbers, read back from the store."""

from __future__ import annotations

import re

from rich.console import Console

from batchlab.results import StudyResults


def test_explanation_answers_the_puzzle_with_the_measured_numbers(wine_study):
    """The answer quotes the measured time, update counts and cost per update (time = updates x cost), and the
    full batch's train loss; the rules themselves are tested on constructed studies (test_answer.py)."""
    results = StudyResults.load(wine_study)
    text = re.sub(r"\s+", " ", results.explanation())
    small = [s for s in results.summaries if s.batch_size == 1]
    full = [s for s in results.summaries if s.batch_size == 142]
    assert len(small) == len(full) == 2 and all(s.group_replicas == 2 for s in small + full)
    assert "(means over 2 seeds)" in text
    t_small = sum(s.time_per_replica_s for s in small) / 2
    t_full = sum(s.time_per_replica_s for s in full) / 2
    longer = "Batch size 1" if t_small >= t_full else "The full batch"
    assert f"{longer} took longer: {max(t_small, t_full):.3g} s of training per run against " \
           f"{min(t_small, t_full):.3g} s" in text
    assert "(1,704 against 12)" in text or "(12 against 1,704)" in text
    start = sum(s.initial_train_loss for s in full) / 2
    assert f"took its train loss from {start:.4g} to" in text
    assert "Times are per run: the runs of one batch size (up to 2) train together" in text


def test_table_lists_every_run(wine_study):
    results = StudyResults.load(wine_study)
    console = Console(width=250, record=True)
    console.print(results.table())
    out = console.export_text()
    for s in results.summaries:
        assert s.run_id in out
    assert len(re.findall(r"completed", out)) == 4
