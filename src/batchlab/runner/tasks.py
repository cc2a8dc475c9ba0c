"""What travels between the driver and wherever a group trains: the task (plain, picklable data) and the
messages its training sends back (an :class:`EpochDone` per epoch, then a :class:`GroupDone`)."""

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
    checkpoints: bool = True
    """Attach the group's state to every epoch (needed to resume; `batchlab run` does not resume)."""


@dataclass(frozen=True)
class GroupStarted:
    group_id: str
    worker: int


@dataclass(frozen=True)
class EpochDone:
    group_id: str
    record: EpochRecord
    """With its checkpoint, when the task asked for them."""
    compile_time_s: float


@dataclass(frozen=True)
class GroupDone:
    group_id: str
    finished: bool
    final_params: list[dict[str, np.ndarray]]
    end_metrics: list[dict[str, float]]


Message = GroupStarted | EpochDone | GroupDone
