"""The driver's side of training: groups become tasks (with their last checkpoint) and messages become store rows.

The recorder is the only writer of the store. Records of an epoch the store already has (a retried task
replaying from an earlier checkpoint, or from the start when the group has none) are skipped: training is
deterministic, so the replayed epochs equal the recorded ones.
"""

from __future__ import annotations

from dataclasses import astuple

import numpy as np

from batchlab.data.dataset import Dataset
from batchlab.runner.plan import PlannedGroup
from batchlab.runner.progress import Progress
from batchlab.runner.tasks import EpochDone, GroupDone, GroupTask, Measuring, Message
from batchlab.spec import updates_per_epoch
from batchlab.store.db import EpochRow, GroupCheckpoint, Store
from batchlab.train.contract import Checkpoint, EpochRecord, Group


class Recorder:
    """Turns groups into tasks (with their last checkpoint) and messages into store rows (see the module)."""

    def __init__(self, store: Store, groups: list[PlannedGroup], n_train: int, progress: Progress | None, *,
                 checkpoint_every_s: float = 0.0):
        self.store, self.n_train, self.progress = store, n_train, progress
        self.checkpoint_every_s = checkpoint_every_s
        self.groups = {g.group_id: g for g in groups}
        self.last_epoch: dict[str, int] = {}
        self.started: set[str] = set()
        self.failures: dict[str, str] = {}
        """Groups that failed (their worker died again and again, or training raised): group id -> why."""

    def task(self, g: PlannedGroup, data: Dataset) -> GroupTask:
        """The group's task, resuming from its last committed checkpoint (from the start without one)."""
        saved = self.store.checkpoint(g.group_id)
        recorded = self.store.last_epoch(g.group_id)
        self.last_epoch[g.group_id] = max(-1 if recorded is None else recorded, -1 if saved is None else saved.epoch)
        resume = None if saved is None else Checkpoint(saved.epoch, saved.wall_time_s, saved.leaves, saved.active,
                                                       self._initial_train_loss(g))
        p = g.point
        group = Group(g.batch_size, tuple(r.lr for r in g.runs), tuple(r.init_seed for r in g.runs),
                      tuple(r.order_seed for r in g.runs),
                      warmup_from=tuple(r.point.lr for r in g.runs) if p.warmup_epochs else None,
                      warmup_epochs=p.warmup_epochs, adam=astuple(p.adam_for(g.batch_size)),
                      **schedule_fields(g, self.n_train))
        return GroupTask(g.group_id, p, group, g.epochs, data, resume, self.checkpoint_every_s)

    def _initial_train_loss(self, g: PlannedGroup) -> np.ndarray | None:
        """The group's epoch-0 train losses as recorded (the blow-up rule's reference after a resume), or None
        when a run has no epoch 0 in the store."""
        losses = []
        for r in g.runs:
            e = self.store.epochs(r.run_id)
            if not len(e["epoch"]) or e["epoch"][0] != 0:
                return None
            losses.append(float(e["train_loss"][0]))
        return np.array(losses)

    def handle(self, message: Message) -> None:
        if isinstance(message, EpochDone):
            self._epoch(message)
        elif isinstance(message, Measuring):
            tell = getattr(self.progress, "measuring", None)  # optional: older Progress objects lack it
            if tell is not None:
                tell(message.group_id, done=message.done, total=message.total, elapsed_s=message.elapsed_s)
        elif isinstance(message, GroupDone):
            self._done(message)

    def _epoch(self, m: EpochDone) -> None:
        g, rec = self.groups[m.group_id], m.record
        if rec.epoch <= self.last_epoch[m.group_id]:
            return
        if m.group_id not in self.started:
            self.started.add(m.group_id)
            self.store.mark_runs([r.run_id for r in g.runs], status="running")
            if self.progress:
                self.progress.start_group(m.group_id, batch_size=g.batch_size, epochs=g.epochs,
                                          steps_per_epoch=updates_per_epoch(self.n_train, g.batch_size),
                                          n_replicas=len(g.runs), done_epochs=max(rec.epoch - 1, 0))
        gns = rec.probe or [None] * len(g.runs)
        sharpness = rec.sharpness or [None] * len(g.runs)
        evals = self._evals(g, rec)
        rows = [EpochRow(r.run_id, rec.epoch, rec.updates, rec.examples_seen, rec.wall_time_s, rec.train_loss[i],
                         rec.train_acc[i], rec.test_loss[i], rec.test_acc[i], rec.step_losses[i], gns[i],
                         None if evals is None else evals[i], rec.batch_size or g.batch_size,
                         r.lr if rec.lrs is None else float(rec.lrs[i]), sharpness[i])
                for i, r in enumerate(g.runs) if rec.active[i]]
        cp = rec.checkpoint
        every = g.point.checkpoint_every
        kept = {r.run_id: [leaf[i] for leaf in cp.leaves] for i, r in enumerate(g.runs) if rec.active[i]} \
            if cp is not None and every and rec.epoch % every == 0 else None
        self.store.write_epoch(rows, diverged=[r.run_id for r, d in zip(g.runs, rec.diverged) if d],
                               compile_time_s=m.compile_time_s,
                               checkpoint=None if cp is None else
                               GroupCheckpoint(m.group_id, cp.epoch, cp.wall_time_s, cp.active, cp.leaves),
                               kept=kept)
        self.last_epoch[m.group_id] = rec.epoch
        if self.progress and rec.epoch > 0:
            self.progress.epoch_done(m.group_id, epoch=rec.epoch, wall_time_s=rec.wall_time_s,
                                     diverged=int(rec.diverged.sum()))

    def _evals(self, g: PlannedGroup, rec: EpochRecord) -> np.ndarray | None:
        """Per replica (n, 6) rows of the evaluations between this epoch's ends (columns EVAL_FIELDS), or None."""
        if not len(rec.eval_steps):
            return None
        batch_size = rec.batch_size or g.batch_size
        within = rec.eval_steps - (rec.updates - updates_per_epoch(self.n_train, batch_size))
        examples = (rec.epoch - 1) * self.n_train + np.minimum(within * batch_size, self.n_train)
        counts = np.stack([rec.eval_steps, examples], axis=1).astype(float)
        return np.concatenate([np.broadcast_to(counts, (len(g.runs), *counts.shape)), rec.eval_metrics], axis=2)

    def _done(self, m: GroupDone) -> None:
        g = self.groups[m.group_id]
        for r, params in zip(g.runs, m.final_params):
            self.store.save_params(r.run_id, params, kind="final")
        self.store.write_run_metrics({r.run_id: metrics for r, metrics in zip(g.runs, m.end_metrics) if metrics})
        self.store.finish_runs([r.run_id for r in g.runs], status="completed" if m.finished else "interrupted")
        if self.progress:
            self.progress.end_group(m.group_id)

    def fail(self, group_id: str, reason: str) -> None:
        """Give a group up (see `batchlab.runner.executors.run_processes`): its runs become `failed` (a later
        resume retries them) and the reason is kept for the command's message."""
        g = self.groups[group_id]
        self.failures[group_id] = f"group {group_id} ({len(g.runs)} runs of batch size {g.batch_size}) failed: {reason}"
        self.store.finish_runs([r.run_id for r in g.runs], status="failed")
        if self.progress:
            self.progress.end_group(group_id)

    def mark_unfinished(self) -> None:
        """Runs still marked running (a stop request, a lost worker, an abort) become interrupted."""
        self.store.interrupt_running()


def schedule_fields(g: PlannedGroup, n_train: int) -> dict:
    """The :class:`Group` fields of a scheduled group (rate or batch-size schedule), {} for a constant one."""
    p = g.point
    if not p.scheduled:
        return {}
    return {"schedule": p.schedule_for(g.batch_size, n_train), "epochs": g.epochs,
            "lr_rules": tuple((r.point.lr, r.point.base_batch_size, r.point.lr_scaling) for r in g.runs)}
