"""What travels between the driver and wherever a group trains: the task (plain, picklable data) and the
messages its training sends back (an :class:`EpochDone` per epoch, :class:`Measuring` while the measurements
after the last epoch run, then a :class:`GroupDone`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from batchlab.data.dataset import Dataset
from batchlab.spec import StudySpec
from batchlab.train.contract import Checkpoint, EpochRecord, Group


@dataclass(frozen=True)
class GroupTask:
    """Everything a worker needs to train one group, as plain data."""

    group_id: str
    point: StudySpec
    group: Group
    epochs: int
    data: Dataset
    resume: Checkpoint | None = None
    checkpoint_every_s: float = 0.0
    """0: attach the group's state to every epoch (a kill -9 loses at most the epoch in flight); else at most
    every that many seconds and at a stop (`batchlab run` and sweeps: epochs after the last checkpoint are trained
    again on resume, to the same numbers, and the ones already recorded are skipped)."""


@dataclass(frozen=True)
class WorkerReady:
    """A worker process started and waits for a task."""

    worker: int


@dataclass(frozen=True)
class WorkerError:
    """Training a group raised in a worker: a user error (its one line) or another exception (its last line;
    the traceback went to the worker's stderr)."""

    group_id: str
    message: str
    user_error: bool


@dataclass(frozen=True)
class EpochDone:
    group_id: str
    record: EpochRecord
    """With its checkpoint, when the task asked for them."""
    compile_time_s: float


@dataclass(frozen=True)
class Measuring:
    """Progress of the measurements after a group's last epoch (curvature): `done` of `total` units of work
    (Hessian-vector products and trace estimates, over the group's replicas), `elapsed_s` since they began."""

    group_id: str
    done: int
    total: int
    elapsed_s: float


@dataclass(frozen=True)
class GroupDone:
    group_id: str
    finished: bool
    final_params: list[dict[str, np.ndarray]]
    end_metrics: list[dict[str, float]]


Message = WorkerReady | WorkerError | EpochDone | Measuring | GroupDone
