"""Branched training (Merrill et al. 2025, "Critical Batch Size Revisited", arXiv 2505.23971): from a finished
study's kept states (`checkpoint_every`), train copies at k times the batch size for a short window.

Each branch is a run of the same study (`parent_run_id`, `branch_epoch`, `multiplier` in the runs table). It
starts from its parent's full state (parameters and optimizer state) after epoch e and trains epochs e + 1 to
e + W on the data its parent would have seen next: the same order seed and epoch index, so epoch e + 1's
shuffling is the parent's (never a replay of data the parent already saw; Fast-LLM's replication shows that a
replay gives a spurious loss drop). The x1 branch therefore runs the parent's own program and reproduces its
epochs e + 1 .. e + W bit for bit. The rate is the parent's times k (`linear`), sqrt(k) (`sqrt`) or 1 (`none`).

Branches train like a sweep's groups (all seeds of one (epoch, multiplier) vmapped together), through the same
recorder, executors and lock: a killed `batchlab branch` run again resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchlab.errors import BatchlabError, invalid
from batchlab.runner.driver import FINISHED, ModelCache, RunOutcome, _execute, versions
from batchlab.runner.plan import PlannedGroup, PlannedRun
from batchlab.runner.progress import Progress
from batchlab.runner.recorder import Recorder
from batchlab.runner.tasks import GroupTask
from batchlab.spec import CONSTRAINTS, StudySpec, build_spec, updates_per_epoch
from batchlab.store.db import RunInfo, Store
from batchlab.store.lock import LockWaitStopped, StudyLock
from batchlab.train.contract import Checkpoint

LR_RULES = ("none", "linear", "sqrt")


def branch_lr(lr: float, multiplier: float, rule: str) -> float:
    """The branch's rate: the parent's times k (`linear`, Goyal et al. 2017), sqrt(k) (`sqrt`) or 1 (`none`)."""
    return {"none": lr, "linear": lr * multiplier, "sqrt": lr * math.sqrt(multiplier)}[rule]


def branch_id(parent: str, epoch: int, multiplier: int, rule: str, window: int) -> str:
    """A branch's content-derived id: the same parent, epoch, multiplier, rule and window name the same run."""
    digest = hashlib.sha256(f"{parent} {epoch} {multiplier} {rule} {window}".encode()).hexdigest()[:6]
    return f"{parent}-e{epoch}x{multiplier}-{digest}"


def _parent_point(run: dict[str, Any]) -> StudySpec:
    """The parent's own setting, with its init and order seeds as the first seeds (seed index 0)."""
    config = run["config"]
    point = build_spec({k: v for k, v in config.items() if k in CONSTRAINTS and k != "task"})
    return dataclasses.replace(point, seed=int(run["init_seed"]), order_seed=int(run["order_seed"]), seeds=1)


def plan_branches(store: Store, *, from_epochs: tuple[int, ...], multipliers: tuple[int, ...], window_epochs: int,
                  lr_rule: str) -> tuple[list[PlannedGroup], list[tuple[RunInfo, dict[str, Any]]],
                                         dict[str, dict[str, Any]]]:
    """The branch groups (all seeds of one parent setting, epoch and multiplier together), their runs' store
    rows, and per branch run its parent. Refuses (one line) epochs without kept states; a parent whose k x B would
exceed N is not branched at that k (the full batch never is), and a multiplier that fits no run is refused."""
    parents = [r for r in store.runs() if r.get("parent_run_id") is None]
    if not parents:
        raise BatchlabError(f"dir: {store.directory} holds no runs to branch from")
    groups: list[PlannedGroup] = []
    infos: list[tuple[RunInfo, dict[str, Any]]] = []
    parent_of: dict[str, dict[str, Any]] = {}
    packs: dict[tuple, list[tuple[PlannedRun, dict[str, Any]]]] = {}
    too_large: list[tuple[int, int, int]] = []
    for parent in parents:
        point = _parent_point(parent)
        if point.scheduled:
            raise invalid("dir", str(store.directory), "a study without rate or batch-size schedules to branch from")
        kept = set(store.kept_epochs(parent["run_id"]))
        for e in from_epochs:
            if e not in kept:
                raise invalid("from_epochs", e, f"epochs at which run {parent['run_id']} kept its state "
                              f"({', '.join(map(str, sorted(kept))) or 'none: train with --checkpoint-every K'})")
            if parent["status"] not in FINISHED and parent["epochs_done"] < e + window_epochs:
                raise invalid("dir", str(store.directory), f"a finished study (run {parent['run_id']} is "
                              f"{parent['status']}; batchlab resume it first)")
        for e in from_epochs:
            for k in multipliers:
                b = parent["batch_size"] * k
                if b > parent["n_train"]:  # this parent cannot branch that far (e.g. the full batch): skipped
                    too_large.append((k, parent["batch_size"], parent["n_train"]))
                    continue
                lr = branch_lr(parent["lr"], k, lr_rule)
                rid = branch_id(parent["run_id"], e, k, lr_rule, window_epochs)
                # The branch trains the parent's setting at k x B and rate lr, from epoch e to e + W.
                bpoint = dataclasses.replace(point, batch_sizes=(b,), lr=lr, lr_scaling="none", base_batch_size=1,
                                             epochs=e + window_epochs, budget_steps=None, budget_examples=None,
                                             warmup_epochs=0, checkpoint_every=None, gns="off", sharpness=False,
                                             eps_sharpness=False, eval_every_steps=None)
                run = PlannedRun(rid, bpoint, b, 0, lr, e + window_epochs)
                key = (parent["group_id"], e, k)
                packs.setdefault(key, []).append((run, parent))
                parent_of[rid] = parent
                infos.append((RunInfo(rid, "", b, lr, parent["init_seed"], parent["init_seed"], parent["order_seed"],
                                      parent["n_train"], updates_per_epoch(parent["n_train"], b), e + window_epochs,
                                      parent["run_id"], e, float(k)),
                              dict(bpoint.to_dict(), task=parent["config"].get("task"), lr_rule=lr_rule)))
    unused = [k for k in multipliers if not any(key[2] == k for key in packs)]
    if unused and too_large:  # a multiplier that fits no run at all
        n, b = too_large[0][2], min(t[1] for t in too_large)
        raise invalid("multipliers", unused[0], f"multipliers with k x B <= N for at least one run ({n:,} training "
                      f"examples; smallest B = {b})")
    group_of: dict[str, str] = {}
    for (parent_group, e, k), members in packs.items():
        runs = tuple(r for r, _ in members)
        digest = hashlib.sha256(" ".join(r.run_id for r in runs).encode()).hexdigest()[:10]
        gid = f"branch-e{e}x{k}-{digest}"
        groups.append(PlannedGroup(gid, runs[0].batch_size, runs[0].epochs, runs))
        group_of.update({r.run_id: gid for r in runs})
    infos = [(dataclasses.replace(info, group_id=group_of[info.run_id]), config) for info, config in infos]
    return groups, infos, parent_of


class BranchRecorder(Recorder):
    """A :class:`Recorder` whose groups start from their parents' kept states (until they have their own
    resume checkpoint: a branch killed mid-window continues from its last committed epoch)."""

    def __init__(self, store: Store, groups: list[PlannedGroup], n_train: int, progress: Progress | None,
                 parent_of: dict[str, dict[str, Any]]):
        super().__init__(store, groups, n_train, progress, checkpoint_every_s=0.0)
        self.parent_of = parent_of

    def task(self, g: PlannedGroup, data: Any) -> GroupTask:
        import numpy as np

        task = super().task(g, data)
        parents = [self.parent_of[r.run_id] for r in g.runs]
        start = _window_start(g)
        before = self.store.epochs(parents[0]["run_id"])
        updates_at = int(before["updates"][list(before["epoch"]).index(start)])
        group = dataclasses.replace(task.group, branch_from=(start, updates_at))
        resume = task.resume
        if resume is None:
            states = []
            for p in parents:
                state = self.store.kept_state(p["run_id"], start)
                if state is None:
                    raise BatchlabError(f"dir: the kept state of epoch {start} of run {p['run_id']} is missing")
                states.append(state)
            leaves = [np.stack([s[i] for s in states]) for i in range(len(states[0]))]
            resume = Checkpoint(start, 0.0, leaves, np.ones(len(g.runs), bool))
            self.last_epoch[g.group_id] = max(self.last_epoch[g.group_id], start)
        return dataclasses.replace(task, group=group, resume=resume)


def _window_start(g: PlannedGroup) -> int:
    """The branch epoch of a group (all its runs share it): parsed from the planned id's '-e<E>x' part."""
    return int(g.group_id.split("-e", 1)[1].split("x", 1)[0])


def branch_study(directory: str | Path, *, from_epochs: tuple[int, ...], multipliers: tuple[int, ...],
                 window_epochs: int | None = None, window_examples: int | None = None, lr_rule: str = "none",
                 wait: bool = False, workers: int = 1, executor: str = "local", address: str | None = None,
                 progress: Progress | None = None, should_stop: Callable[[], bool] = lambda: False) -> RunOutcome:
    """Train every branch (each run x `from_epochs` x `multipliers`) of the finished study in `directory` for
    `window_epochs` epochs (or the fewest whole epochs holding `window_examples` examples), resuming what an
    earlier, interrupted call left. Raises BatchlabError (one line, nothing written) on bad arguments."""
    import time

    from batchlab.data.load import load_dataset
    from batchlab.runner.cores import reproducible_here
    from batchlab.runner.driver import check_executor

    check_executor(executor, workers, address)
    if not from_epochs or any(e < 0 for e in from_epochs):
        raise invalid("from_epochs", ",".join(map(str, from_epochs)), "epochs >= 0 separated by commas, e.g. 1,5,15")
    if not multipliers or any(k < 1 for k in multipliers) or len(set(multipliers)) != len(multipliers):
        raise invalid("multipliers", ",".join(map(str, multipliers)), "distinct integers >= 1, e.g. 1,2,4,8")
    if lr_rule not in LR_RULES:
        raise invalid("lr_rule", lr_rule, "one of " + ", ".join(LR_RULES))
    if (window_epochs is None) == (window_examples is None):
        raise invalid("window_epochs", window_epochs, "one of --window-epochs W or --window-examples N")
    out = Path(directory)
    store = Store.open(out)
    try:
        meta = store.meta(required={"spec": dict})
        n_train = int(meta["dataset"]["n_train"])
    finally:
        store.close()
    if window_examples is not None:
        if window_examples < 1:
            raise invalid("window_examples", window_examples, "an integer >= 1")
        window_epochs = math.ceil(window_examples / n_train)
    assert window_epochs is not None
    if window_epochs < 1:
        raise invalid("window_epochs", window_epochs, "an integer >= 1")
    if not wait:
        StudyLock.check_free(out)
    try:
        lock = StudyLock.acquire(out, wait=wait, should_stop=should_stop)
    except LockWaitStopped:
        return RunOutcome(out, False, 0.0)
    with lock:
        store = Store.open(out, write=True)
        t0 = time.perf_counter()
        recorder = None
        try:
            groups, infos, parent_of = plan_branches(store, from_epochs=tuple(from_epochs),
                                                     multipliers=tuple(multipliers), window_epochs=window_epochs,
                                                     lr_rule=lr_rule)
            known = store.statuses()
            new = [(info, config) for info, config in infos if info.run_id not in known]
            if new:
                store.add_runs(new, versions=versions(), device=str(meta.get("device", "")))
            data = load_dataset(build_spec({k: v for k, v in meta["spec"].items() if k in CONSTRAINTS}))
            statuses = store.statuses()
            todo = [g for g in groups if any(statuses[r.run_id] not in FINISHED for r in g.runs)]
            recorder = BranchRecorder(store, todo, n_train, progress, parent_of)
            tasks = [recorder.task(g, data) for g in todo]
            _execute(tasks, recorder, data, ModelCache(data), executor=executor, workers=workers, address=address,
                     should_stop=should_stop,
                     in_process=executor == "local" and workers == 1 and reproducible_here())
            statuses = store.statuses()
            completed = all(statuses[info.run_id] in FINISHED for info, _ in infos)
        finally:
            if recorder is not None:
                try:
                    recorder.mark_unfinished()
                except BatchlabError:
                    pass
            store.close()
    return RunOutcome(out, completed, time.perf_counter() - t0, tuple(recorder.failures.values()) if recorder else ())
