"""What the driver tells a progress display (:class:`Progress`), the live view on a terminal
(:class:`RichProgress`, rich, on stderr: a bar per group with epochs, replica-steps per second, ETA, and counts
of diverged runs), and plain lines where there is no terminal (:class:`LineProgress`: a log file, a pipe, CI, a
notebook without ipywidgets). :func:`default_progress` picks one. Both also show the measurements that run after
a group's last epoch (curvature), which can take longer than the training of a small model."""

from __future__ import annotations

import importlib.util
import sys
import time
from typing import Protocol, Self, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as Bars


class Progress(Protocol):
    """What the driver tells a progress display (see :class:`RichProgress`)."""

    def start_group(self, group_id: str, *, batch_size: int, epochs: int, steps_per_epoch: int,
                    n_replicas: int, done_epochs: int = 0) -> None: ...
    def epoch_done(self, group_id: str, *, epoch: int, wall_time_s: float, diverged: int) -> None: ...
    def end_group(self, group_id: str) -> None: ...
    # Optional (called only where present): the measurements after a group's last epoch, `done` of `total` units.
    # def measuring(self, group_id: str, *, done: int, total: int, elapsed_s: float) -> None: ...


def default_progress(stream: TextIO | None = None) -> RichProgress | LineProgress:
    """Bars on a terminal (and in a notebook that has ipywidgets, which rich's live display needs); plain lines
    otherwise, on `stream` (default stderr)."""
    from rich.console import Console

    stream = stream or sys.stderr
    console = Console(file=stream)
    if console.is_jupyter:  # rich's live display is an ipywidgets widget there: an empty box without it
        return RichProgress(console) if importlib.util.find_spec("ipywidgets") is not None else LineProgress(stream)
    return RichProgress(console) if console.is_terminal else LineProgress(stream)


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def eta_s(done: float, total: float, elapsed_s: float) -> float | None:
    """Seconds left at the rate so far; None before any progress."""
    if done <= 0 or elapsed_s <= 0:
        return None
    return max(total - done, 0) * elapsed_s / done


class LineProgress:
    """One line per group start and finish, and while a group trains one each tenth of its epochs or
    LINE_EVERY_S seconds, whichever comes first; the same for the measurements after training. For output that
    is not a terminal: each line is complete when written (a log reader or `tail -f` sees it at once)."""

    LINES_PER_GROUP = 10
    """A line each time another tenth of a group's epochs (or of its measurements) is done..."""
    LINE_EVERY_S = 30.0
    """...or this many seconds after the group's last line, whichever comes first."""

    def __init__(self, stream: TextIO | None = None, *, clock=time.monotonic):
        self._stream = stream
        self._clock = clock
        self._groups: dict[str, dict] = {}
        self.diverged_runs = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def _line(self, text: str) -> None:
        stream = self._stream or sys.stderr
        print(f"batchlab: {text}", file=stream, flush=True)

    def _due(self, g: dict, key: str, done: int, total: int) -> bool:
        """Whether `done` of `total` starts a new tenth (integer arithmetic: no tenth skipped by rounding) or
        LINE_EVERY_S have passed since the last line of this kind; remembers the line when it is due."""
        tenth, now = done * self.LINES_PER_GROUP // max(total, 1), self._clock()
        if tenth > g[f"{key}_tenth"] or now - g[f"{key}_time"] >= self.LINE_EVERY_S:
            g[f"{key}_tenth"], g[f"{key}_time"] = tenth, now
            return True
        return False

    def start_group(self, group_id: str, *, batch_size: int, epochs: int, steps_per_epoch: int, n_replicas: int,
                    done_epochs: int = 0) -> None:
        label = f"batch size {batch_size:,}" + (f" x{n_replicas} replicas" if n_replicas > 1 else "")
        now = self._clock()
        self._groups[group_id] = {"label": label, "epochs": epochs, "steps": steps_per_epoch * n_replicas,
                                  "first": done_epochs, "epoch": done_epochs, "wall": 0.0,
                                  "epoch_tenth": done_epochs * self.LINES_PER_GROUP // max(epochs, 1),
                                  "epoch_time": now, "measure_tenth": 0, "measure_time": now}
        resumed = f", resuming after epoch {done_epochs}" if done_epochs else ""
        updates = f"{steps_per_epoch:,} update{'s' if steps_per_epoch != 1 else ''}"
        self._line(f"{label}: started, {epochs} epochs of {updates}{resumed}")

    def epoch_done(self, group_id: str, *, epoch: int, wall_time_s: float, diverged: int) -> None:
        g = self._groups[group_id]
        g["epoch"], g["wall"] = epoch, wall_time_s
        self.diverged_runs += diverged
        if epoch >= g["epochs"] or not self._due(g, "epoch", epoch, g["epochs"]):
            return
        rate = epoch * g["steps"] / wall_time_s if wall_time_s > 0 else float("inf")
        left = eta_s(epoch - g["first"], g["epochs"] - g["first"], wall_time_s * (epoch - g["first"]) / epoch)
        eta = f", ETA {_duration(left)}" if left is not None else ""
        div = f", {self.diverged_runs} diverged" if self.diverged_runs else ""
        self._line(f"{g['label']}: epoch {epoch}/{g['epochs']} ({epoch / g['epochs']:.0%}), {rate:,.0f} steps/s"
                   f"{div}{eta}")

    def measuring(self, group_id: str, *, done: int, total: int, elapsed_s: float) -> None:
        g = self._groups.get(group_id)
        if g is None or total <= 0:
            return
        if done == 0 and elapsed_s == 0:
            self._line(f"{g['label']}: trained {g['epoch']}/{g['epochs']} epochs in {g['wall']:.1f} s; measuring "
                       "curvature (top Hessian eigenvalue, trace)")
            return
        if not self._due(g, "measure", done, total) and done < total:
            return
        left = eta_s(done, total, elapsed_s)
        eta = f", ETA {_duration(left)}" if left is not None and done < total else ""
        self._line(f"{g['label']}: measuring curvature {done / total:.0%} ({elapsed_s:.1f} s{eta})")

    def end_group(self, group_id: str) -> None:
        g = self._groups.get(group_id)
        if g is None:
            return
        div = f", {self.diverged_runs} diverged so far" if self.diverged_runs else ""
        how = "finished" if g["epoch"] >= g["epochs"] else "stopped"
        self._line(f"{g['label']}: {how}, {g['epoch']}/{g['epochs']} epochs in {g['wall']:.1f} s of training{div}")


class RichProgress:
    """One bar per group. The rate is replica-steps (minibatch updates summed over a group's replicas) per second
    of training time. The display starts with the first group, so input errors print nothing before their line."""

    def __init__(self, console: Console | None = None):
        self._progress = Bars(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
            TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[diverged]}"), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=console or Console(stderr=True))
        self._tasks: dict[str, tuple[TaskID, int, int]] = {}  # group -> (task id, replica-steps per epoch, first epoch)
        self._measuring: dict[str, TaskID] = {}
        self._labels: dict[str, str] = {}
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
        self._labels[group_id] = label
        task = self._progress.add_task(label, total=epochs, completed=done_epochs, rate="compiling", diverged="",
                                       unit="epochs")
        self._tasks[group_id] = (task, steps_per_epoch * n_replicas, done_epochs)

    def epoch_done(self, group_id: str, *, epoch: int, wall_time_s: float, diverged: int) -> None:
        task, steps, _ = self._tasks[group_id]
        rate = epoch * steps / wall_time_s if wall_time_s > 0 else float("inf")
        self.diverged_runs += diverged
        self._progress.update(task, completed=epoch, rate=f"{rate:,.0f} steps/s",
                              diverged=f"{self.diverged_runs} diverged" if self.diverged_runs else "")

    def measuring(self, group_id: str, *, done: int, total: int, elapsed_s: float) -> None:
        """A bar of its own for the measurements after a group's last epoch, with ETA; it stays when done."""
        if group_id not in self._measuring:
            self._measuring[group_id] = self._progress.add_task(f"{self._labels.get(group_id, group_id)}: curvature", total=total, completed=0,
                                                                rate="", diverged="", unit="units")
        self._progress.update(self._measuring[group_id], completed=done, total=total)

    def end_group(self, group_id: str) -> None:
        """A finished group's bar stays, complete."""
