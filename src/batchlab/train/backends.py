"""From a model to what trains and probes it: the training backend and the measurement probes its
`model.backend` names (`jax` or `torch`; :mod:`batchlab.models.registry` decides which when it loads the model),
and a :class:`batchlab.train.contract.GroupRun` over them."""

from __future__ import annotations

from typing import Any

from batchlab.data.dataset import Dataset
from batchlab.spec import updates_per_epoch
from batchlab.train.contract import Backend, Group, GroupRun, Probe


def backend_for(model: Any, data: Dataset, group: Group, *, optimizer: str, momentum: float,
                device: str = "auto", eval_every_steps: int | None = None) -> Backend:
    """The training backend of `model` for one group (device: `auto`, `cpu` or `gpu`)."""
    if model.backend == "torch":
        from batchlab.train.torch_engine import TorchBackend

        if group.schedule is not None or group.branch_from is not None:
            from batchlab.errors import invalid

            raise invalid("model", "a PyTorch model", "a JAX model for schedules and branches (constant rate and "
                          "batch size for a PyTorch model)")

        return TorchBackend(model, data, group, optimizer, momentum, device, eval_every_steps)
    from batchlab.train.device import resolve_device
    from batchlab.train.jax_engine import JaxBackend

    return JaxBackend(model, data, group, optimizer, momentum, resolve_device(device), eval_every_steps)


def probes_for(model: Any, data: Dataset, *, device: str = "auto") -> Any:
    """The gradient interface of :mod:`batchlab.train.measure` for `model`."""
    if model.backend == "torch":
        from batchlab.train.probes.torch import TorchProbes

        return TorchProbes(model, regression=data.task == "regression", device=device)
    from batchlab.models.tasks import get_task
    from batchlab.train.probes.jax import JaxProbes

    return JaxProbes(model, get_task(data.task))


def group_run(model: Any, data: Dataset, group: Group, epochs: int, *, optimizer: str = "sgd", momentum: float = 0.9,
              device: str = "auto", probe: Probe | None = None, probe_every: int = 0,
              eval_every_steps: int | None = None, sharpness: Probe | None = None,
              sharpness_every: int = 0) -> GroupRun:
    """A group's training on its model's backend, ready for :meth:`GroupRun.train` or :meth:`GroupRun.epochs_iter`.

    Example::

        run = group_run(make_model("mlp", n_features=64, n_classes=10), data, Group(32, (0.1,), (0,), (0,)), 5)
        records = []
        run.train(records.append)
    """
    backend = backend_for(model, data, group, optimizer=optimizer, momentum=momentum, device=device,
                          eval_every_steps=eval_every_steps)
    steps = updates_per_epoch(data.n_train, group.batch_size)
    return GroupRun(backend, group.n_replicas, epochs, data.n_train, steps, probe=probe, probe_every=probe_every,
                    group=group, warmup_steps=group.warmup_epochs * steps, sharpness=sharpness,
                    sharpness_every=sharpness_every)
