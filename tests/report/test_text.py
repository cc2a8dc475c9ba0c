"""The explanation states measured numbers, read back from the store."""

from __future__ import annotations

import re

from rich.console import Console

from batchlab.results import StudyResults


def test_explanation_answers_the_puzzle_with_the_measured_numbers(wine_study):
    results = StudyResults.load(wine_study)
    text = results.explanation()
    small = [s for s in results.summaries if s.batch_size == 1]
    full = [s for s in results.summaries if s.batch_size == 142]
    assert len(small) == len(full) == 2
    assert "142 updates per epoch, 1,704 in all, against 1 per epoch and 12 in all" in text
    assert "142x as many" in text and "(means over 2 seeds)" in text
    t_small = sum(s.wall_time_s for s in small) / 2
    t_full = sum(s.wall_time_s for s in full) / 2
    assert f"{max(t_small, t_full):.3f} s of training against {min(t_small, t_full):.3f} s" in text
    start = sum(s.initial_train_loss for s in full) / 2
    end = sum(s.final_train_loss for s in full) / 2
    assert f"from {start:.4f} to {end:.4f}" in text
    assert "no sampling noise at all" in text
    noise = sum(s.step_noise for s in small) / 2
    assert f"jitter step to step by {noise:.3f}" in text


def test_table_lists_every_run(wine_study):
    results = StudyResults.load(wine_study)
    console = Console(width=250, record=True)
    console.print(results.table())
    out = console.export_text()
    for s in results.summaries:
        assert s.run_id in out
    assert len(re.findall(r"completed", out)) == 4
