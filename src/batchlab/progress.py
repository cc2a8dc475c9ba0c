"""A live progress bar (rich, on stderr) with epochs done, replica-steps per second and ETA."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RichProgress:
    """One bar per batch-size group; the rate is replica-steps (minibatch updates summed over replicas) per second
    of training time."""

    def __init__(self, console: Console | None = None):
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("epochs"),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console or Console(stderr=True), transient=False)
        self._task = None
        self._steps = 0
        self._started = False

    def __enter__(self) -> RichProgress:
        return self  # the display starts with the first group, so input errors print nothing before their line

    def __exit__(self, *exc) -> None:
        if self._started:
            self._progress.stop()

    def start_group(self, *, batch_size: int, epochs: int, steps_per_epoch: int, n_replicas: int) -> None:
        if not self._started:
            self._progress.start()
            self._started = True
        self._steps = steps_per_epoch * n_replicas
        label = f"batch size {batch_size}" + (f" x{n_replicas}" if n_replicas > 1 else "")
        self._task = self._progress.add_task(label, total=epochs, rate="compiling")

    def epoch_done(self, *, epoch: int, wall_time_s: float) -> None:
        rate = epoch * self._steps / wall_time_s if wall_time_s > 0 else float("inf")
        self._progress.update(self._task, completed=epoch, rate=f"{rate:,.0f} steps/s")

    def end_group(self) -> None:
        self._task = None
