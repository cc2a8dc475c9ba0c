"""Training one group where it runs (this process, a worker process or a Ray task): the task's model and data
through the backend its model names, the shared epoch loop, and the measurements, as messages."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import numpy as np

from batchlab.runner.tasks import EpochDone, GroupDone, GroupTask, Measuring, Message

MEASURING_EVERY_S = 0.5
"""How often, at most, the measurements after training report their progress."""


def train_group(task: GroupTask, should_stop: Callable[[], bool] = lambda: False, *,
                model: Any = None) -> Iterator[Message]:
    """Train one group, yielding a message per epoch and one at the end. `model` is the task's model when the
    caller has it loaded already (the inline executor); workers load it from the task's spec."""
    from batchlab.models.params import flatten_params
    from batchlab.models.registry import load_model
    from batchlab.train.backends import group_run, probes_for
    from batchlab.train.device import enable_compilation_cache
    from batchlab.train.measure import GroupMeasurements, end_of_training_units

    enable_compilation_cache()
    p, data, group = task.point, task.data, task.group
    model = model if model is not None else load_model(p, data)
    measure = GroupMeasurements(probes_for(model, data, device=p.device), data, gns=p.gns)
    run = group_run(model, data, group, task.epochs, optimizer=p.optimizer, momentum=p.momentum, device=p.device,
                    probe=None if p.gns == "off" else measure.gns, probe_every=p.gns_every,
                    eval_every_steps=p.eval_every_steps,
                    sharpness=measure.sharpness(group.batch_size) if p.sharpness_every else None,
                    sharpness_every=p.sharpness_every)
    active = np.ones(group.n_replicas, bool)
    every = task.checkpoint_every_s
    for record in run.epochs_iter(should_stop, resume=task.resume, checkpoints=every == 0,
                                  checkpoint_every_s=every or None, keep_every=p.checkpoint_every or 0):
        active = record.active & ~record.diverged
        yield EpochDone(task.group_id, record, run.compile_time_s)
    final = [flatten_params(_replica(run.final_params, i)) for i in range(group.n_replicas)]
    end: list[dict] = [{} for _ in final]
    if p.sharpness and run.finished and active.any():
        eps = p.eps_sharpness and getattr(measure.probes, "epsilon_sharpness", None) is not None
        end = yield from _measuring(task.group_id, lambda tell: measure.end_of_training(
            run.final_params, active, eps_sharpness=p.eps_sharpness, on_progress=tell),
            total=end_of_training_units(eps) * int(active.sum()))
    yield GroupDone(task.group_id, run.finished, final, end)


def _measuring(group_id: str, measure: Callable[[Callable[[int, int], None]], list[dict]], *, total: int,
               every_s: float = MEASURING_EVERY_S) -> Generator[Message, None, list[dict]]:
    """Run `measure` (told a progress callback) in a helper thread, yielding a Measuring message at its start,
    at most every `every_s` seconds while it runs, and at its end; returns its result (or raises its error).
    The thread only lets this generator speak while the computation runs: the numbers are the same."""
    state = {"done": 0, "total": total}
    result: dict[str, Any] = {}

    def tell(done: int, total: int) -> None:
        state.update(done=done, total=total)

    def target() -> None:
        try:
            result["value"] = measure(tell)
        except BaseException as e:  # noqa: BLE001 - re-raised in the generator's thread below
            result["error"] = e

    start = time.monotonic()
    thread = threading.Thread(target=target, name=f"measure-{group_id}", daemon=True)
    thread.start()
    yield Measuring(group_id, 0, state["total"], 0.0)
    last = (0, 0)
    while thread.is_alive():
        thread.join(every_s)
        now = (state["done"], state["total"])
        if now != last and thread.is_alive():
            yield Measuring(group_id, now[0], now[1], time.monotonic() - start)
            last = now
    if "error" in result:
        raise result["error"]
    yield Measuring(group_id, state["total"], state["total"], time.monotonic() - start)
    return result["value"]


def _replica(stacked: Any, i: int) -> Any:
    import jax

    return jax.tree_util.tree_map(lambda a: a[i], stacked)
