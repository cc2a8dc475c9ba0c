"""The plan: every run of a sweep and the groups that train them (no JAX).

All (learning rate, seed) replicas of one batch size and one model/optimizer setting form a pack that trains as
one vmapped program, split into chunks that fit in memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass

from batchlab.errors import BatchlabError
from batchlab.spec import StudySpec, run_id
from batchlab.sweep import PER_REPLICA, Sweep


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    point: StudySpec
    batch_size: int
    seed_index: int
    lr: float
    epochs: int

    @property
    def init_seed(self) -> int:
        return self.point.seed + self.seed_index

    @property
    def order_seed(self) -> int:
        return self.point.order_seed + self.seed_index


@dataclass(frozen=True)
class PlannedGroup:
    """Runs trained together as one vmapped program: same batch size, model, optimizer and epochs."""

    group_id: str
    batch_size: int
    epochs: int
    runs: tuple[PlannedRun, ...]

    @property
    def point(self) -> StudySpec:
        """The spec shared by the group's runs (their learning rates may differ)."""
        return self.runs[0].point


def pack_key(point: StudySpec) -> str:
    return json.dumps({k: v for k, v in point.to_dict().items() if k not in PER_REPLICA}, sort_keys=True)


def plan(sweep: Sweep, *, n_train: int, max_replicas: int) -> list[PlannedGroup]:
    """Every run of the sweep, packed by (batch size, model/optimizer setting) and chunked to `max_replicas`."""
    if max_replicas < 1:
        raise BatchlabError("max_replicas: must be >= 1")
    packs: dict[tuple[int, str], list[PlannedRun]] = {}
    for point in sweep.points():
        for b in point.resolved_batch_sizes(n_train):
            for i in range(point.seeds):
                run = PlannedRun(run_id(point, batch_size=b, seed_index=i), point, b, i, point.lr_for(b),
                                 point.epochs_for(b, n_train))
                # Adam's coefficients in force are one per group (a scaling-rule axis may change them)
                adam = json.dumps(dataclasses.asdict(point.adam_for(b))) if point.optimizer == "adam" else ""
                packs.setdefault((b, pack_key(point) + adam), []).append(run)
    groups = []
    for (b, _), runs in sorted(packs.items(), key=lambda kv: kv[0][0]):
        n_chunks = math.ceil(len(runs) / max_replicas)
        size = math.ceil(len(runs) / n_chunks)
        for start in range(0, len(runs), size):
            chunk = tuple(runs[start:start + size])
            digest = hashlib.sha256(" ".join(r.run_id for r in chunk).encode()).hexdigest()[:10]
            groups.append(PlannedGroup(f"bs{b}-{digest}", b, chunk[0].epochs, chunk))
    return groups
