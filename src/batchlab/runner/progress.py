"""What the driver tells a progress display (:class:`Progress`), and the live view on a terminal
(:class:`RichProgress`, rich, on stderr): a bar per group with epochs, replica-steps per second, ETA, and counts
of diverged runs."""

from __future__ import annotations

from typing import Protocol, Self

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as Bars


class Progress(Protocol):
    """What the driver tells a progress display (see :class:`RichProgress`)."""

    def start_group(self, group_id: str, *, batch_size: int, epochs: int, steps_per_epoch: int,
                    n_replicas: int, done_epochs: int = 0) -> None: ...
    def epoch_done(self, group_id: str, *, epoch: int, wall_time_s: float, diverged: int) -> None: ...
    def end_group(self, group_id: str) -> None: ...


class RichProgress:
    """One bar per group. The rate is replica-steps (minibatch updates summed over a group's replicas) per second
    of training time. The display starts with the first group, so input errors print nothing before their line."""

    def __init__(self, console: Console | None = None):
        self._progress = Bars(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("epochs"),
            TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[diverged]}"), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=console or Console(stderr=True))
        self._tasks: dict[str, tuple[TaskID, int, int]] = {}  # group -> (task id, replica-steps per epoch, first epoch)
        self._started = False
        self.diverged_runs = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        if self._started:
            self._progress.stop()

    def start_group(self, group_id: str, *, batch_size: int, epochs: int, steps_per_epoch: int, n_replicas: int,
                    done_epochs: int = 0) -> None:
        if not self._started:
            self._progress.start()
            self._started = True
        label = f"batch size {batch_size}" + (f" x{n_replicas} replicas" if n_replicas > 1 else "")
        task = self._progress.add_task(label, total=epochs, completed=done_epochs, rate="compiling", diverged="")
        self._tasks[group_id] = (task, steps_per_epoch * n_replicas, done_epochs)

    def epoch_done(self, group_id: str, *, epoch: int, wall_time_s: float, diverged: int) -> None:
        task, steps, _ = self._tasks[group_id]
        rate = epoch * steps / wall_time_s if wall_time_s > 0 else float("inf")
        self.diverged_runs += diverged
        self._progress.update(task, completed=epoch, rate=f"{rate:,.0f} steps/s",
                              diverged=f"{self.diverged_runs} diverged" if self.diverged_runs else "")

    def end_group(self, group_id: str) -> None:
        """A finished group's bar stays, complete."""
