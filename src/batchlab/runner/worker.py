"""Training one group where it runs (this process, a worker process or a Ray task): the task's model and data
through the backend its model names, the shared epoch loop, and the measurements, as messages."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from batchlab.runner.tasks import EpochDone, GroupDone, GroupTask, Message


def train_group(task: GroupTask, should_stop: Callable[[], bool] = lambda: False, *,
                model: Any = None) -> Iterator[Message]:
    """Train one group, yielding a message per epoch and one at the end. `model` is the task's model when the
    caller has it loaded already (the inline executor); workers load it from the task's spec."""
    from batchlab.models.params import flatten_params
    from batchlab.models.registry import load_model
    from batchlab.train.backends import group_run, probes_for
    from batchlab.train.device import enable_compilation_cache
    from batchlab.train.measure import GroupMeasurements

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
                                  checkpoint_every_s=every or None):
        active = record.active & ~record.diverged
        yield EpochDone(task.group_id, record, run.compile_time_s)
    final = [flatten_params(_replica(run.final_params, i)) for i in range(group.n_replicas)]
    end = measure.end_of_training(run.final_params, active, eps_sharpness=p.eps_sharpness) \
        if p.sharpness and run.finished else [{} for _ in final]
    yield GroupDone(task.group_id, run.finished, final, end)


def _replica(stacked: Any, i: int) -> Any:
    import jax

    return jax.tree_util.tree_map(lambda a: a[i], stacked)
