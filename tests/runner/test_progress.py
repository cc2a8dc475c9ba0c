"""Progress where there is no terminal: a line per group start and finish, one per tenth or 30 s; the
measurements after training reported while they run; the right display picked for the output."""

from __future__ import annotations

import io
import sys

import pytest

from batchlab.runner import progress as progress_module
from batchlab.runner.progress import LineProgress, RichProgress, default_progress, eta_s
from batchlab.runner.tasks import Measuring
from batchlab.runner.worker import _measuring


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_lines_at_start_each_tenth_and_finish():
    out, clock = io.StringIO(), Clock()
    p = LineProgress(out, clock=clock)
    p.start_group("g", batch_size=1, epochs=30, steps_per_epoch=120, n_replicas=2)
    for epoch in range(1, 31):
        clock.t += 0.1
        p.epoch_done("g", epoch=epoch, wall_time_s=0.1 * epoch, diverged=0)
    p.end_group("g")
    lines = out.getvalue().splitlines()
    assert lines[0] == "batchlab: batch size 1 x2 replicas: started, 30 epochs of 120 updates"
    progress_lines = [line for line in lines if ": epoch " in line]
    assert [line.split("epoch ")[1].split(" ")[0] for line in progress_lines] == [f"{3 * k}/30" for k in range(1, 10)]
    assert "(10%), 2,400 steps/s, ETA 0:03" in progress_lines[0]
    assert lines[-1] == "batchlab: batch size 1 x2 replicas: finished, 30/30 epochs in 3.0 s of training"


def test_a_slow_group_gets_a_line_every_30_seconds_and_a_stopped_one_says_so():
    out, clock = io.StringIO(), Clock()
    p = LineProgress(out, clock=clock)
    p.start_group("g", batch_size=64, epochs=1000, steps_per_epoch=1, n_replicas=1, done_epochs=10)
    for epoch in range(11, 21):  # 10 epochs of 1000: no new tenth, but 31 s apart
        clock.t += 31
        p.epoch_done("g", epoch=epoch, wall_time_s=31.0 * (epoch - 10), diverged=1 if epoch == 15 else 0)
    p.end_group("g")
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("started, 1000 epochs of 1 update, resuming after epoch 10")
    assert sum(": epoch " in line for line in lines) == 10
    assert "1 diverged" in lines[6]
    assert lines[-1].startswith("batchlab: batch size 64: stopped, 20/1000 epochs")


def test_measuring_lines_say_what_runs_with_an_eta():
    out, clock = io.StringIO(), Clock()
    p = LineProgress(out, clock=clock)
    p.start_group("g", batch_size=8, epochs=2, steps_per_epoch=15, n_replicas=1)
    p.epoch_done("g", epoch=2, wall_time_s=1.0, diverged=0)
    p.measuring("g", done=0, total=130, elapsed_s=0.0)
    for done in range(1, 131):
        clock.t += 0.1
        p.measuring("g", done=done, total=130, elapsed_s=0.1 * done)
    lines = out.getvalue().splitlines()
    assert "trained 2/2 epochs in 1.0 s; measuring curvature" in lines[1]
    measuring = [line for line in lines if "measuring curvature " in line and "%" in line]
    assert len(measuring) == 10 and measuring[-1].endswith("measuring curvature 100% (13.0 s)")
    assert "measuring curvature 10% (1.3 s, ETA 0:12)" in measuring[0]


def test_eta():
    assert eta_s(0, 10, 5.0) is None
    assert eta_s(2, 10, 4.0) == pytest.approx(16.0)


def test_measuring_generator_yields_progress_and_returns_the_result():
    import threading

    release = threading.Event()

    def measure(tell):
        for i in range(1, 4):
            tell(i, 3)
            release.wait(0.05)
        return [{"top_eigenvalue": 1.0}]

    gen = _measuring("g", measure, total=3, every_s=0.01)
    messages = []
    try:
        while True:
            messages.append(next(gen))
    except StopIteration as stop:
        result = stop.value
    assert result == [{"top_eigenvalue": 1.0}]
    assert all(isinstance(m, Measuring) and m.group_id == "g" and m.total == 3 for m in messages)
    assert messages[0].done == 0 and messages[-1].done == 3
    assert [m.done for m in messages] == sorted(m.done for m in messages)


def test_measuring_generator_raises_the_measurements_error():
    def measure(tell):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        list(_measuring("g", measure, total=1, every_s=0.01))


def test_default_progress_is_lines_without_a_terminal_or_without_ipywidgets(monkeypatch):
    assert isinstance(default_progress(io.StringIO()), LineProgress)
    monkeypatch.setattr("rich.console._is_jupyter", lambda: True)
    real = progress_module.importlib.util.find_spec
    monkeypatch.setattr(progress_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "ipywidgets" else real(name, *a))
    assert isinstance(default_progress(sys.stderr), LineProgress)


def test_rich_progress_shows_a_bar_for_the_measurements():
    from rich.console import Console

    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with RichProgress(console) as p:
        p.start_group("g", batch_size=1, epochs=2, steps_per_epoch=10, n_replicas=1)
        p.epoch_done("g", epoch=2, wall_time_s=0.5, diverged=0)
        p.measuring("g", done=65, total=130, elapsed_s=2.0)
        tasks = p._progress.tasks
    assert [t.description for t in tasks] == ["batch size 1", "batch size 1: curvature"]
    assert tasks[1].completed == 65 and tasks[1].total == 130
