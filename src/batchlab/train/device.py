"""Where training runs and what it may use: device choice, memory budget and replica chunks, compile cache."""

from __future__ import annotations

import math
from itertools import pairwise

import jax

from batchlab.errors import invalid
from batchlab.spec import updates_per_epoch


def replica_bytes(layer_sizes: tuple[int, ...], *, n_train: int, n_test: int, batch_size: int) -> int:
    """An upper estimate of the device memory one replica needs (float32): parameters, gradients and up to two
    optimizer moments; a step's activations; the epoch's step losses; the full-set evaluation's activations."""
    n_params = sum(a * b + b for a, b in pairwise(layer_sizes))
    widest = max(layer_sizes)
    activations = 3 * batch_size * sum(layer_sizes)
    evaluation = 2 * max(n_train, n_test) * widest
    return 4 * (4 * n_params + activations + updates_per_epoch(n_train, batch_size) + evaluation)


def model_replica_bytes(model, *, n_features: int, n_train: int, n_test: int, batch_size: int,
                        tokens_per_example: int = 1) -> int:
    """:func:`replica_bytes` for any model: from its `layer_sizes` (the MLP, logistic regression) or, for models
    without them (the CNN, users' models), from `model.footprint(n_features)`: its parameter count and the floats
    of intermediate values one example produces in a forward pass (three times that per example in a step, for
    the backward pass, as for the MLP; the evaluation holds at most EVAL_CHUNK examples' activations at a time)."""
    if model.layer_sizes:
        return replica_bytes(model.layer_sizes, n_train=n_train, n_test=n_test, batch_size=batch_size)
    from batchlab.train.contract import EVAL_CHUNK

    n_params, per_example = model.footprint(n_features)
    # text: an evaluation chunk holds EVAL_CHUNK tokens' worth of sequences (batchlab.train.jax_engine.evaluate)
    evaluation = min(max(n_train, n_test), max(1, EVAL_CHUNK // tokens_per_example)) * per_example
    return 4 * (4 * n_params + 3 * batch_size * per_example + updates_per_epoch(n_train, batch_size) + evaluation)


def memory_budget_bytes(device: jax.Device, fraction: float = 0.5) -> int:
    """`fraction` of the memory free on `device` now (GPU: from JAX's allocator; CPU: available RAM)."""
    import os

    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(fraction * free)


def chunk_replicas(n_replicas: int, per_replica_bytes: int, budget_bytes: int) -> list[range]:
    """Split replicas into as few equal-sized chunks as fit the budget (at least one replica per chunk), so a
    large pack is trained in turns instead of crashing with out-of-memory."""
    fit = max(1, budget_bytes // max(per_replica_bytes, 1))
    n_chunks = math.ceil(n_replicas / fit)
    size = math.ceil(n_replicas / n_chunks)
    return [range(i, min(i + size, n_replicas)) for i in range(0, n_replicas, size)]


def enable_compilation_cache(directory: str | None = None) -> str | None:
    """Use JAX's persistent compilation cache so a second run of the same shapes skips compiling.

    The directory is `directory`, else $BATCHLAB_CACHE_DIR, else ~/.cache/batchlab/jax; BATCHLAB_CACHE_DIR=off
    disables it. Returns the directory in use (None when disabled)."""
    import os
    from pathlib import Path

    directory = directory or os.environ.get("BATCHLAB_CACHE_DIR") or str(Path.home() / ".cache" / "batchlab" / "jax")
    if directory == "off":
        return None
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory


def resolve_device(name: str) -> jax.Device:
    """`auto`: the default backend (a GPU when JAX sees one); `cpu`; `gpu` (an error if there is none)."""
    if name == "auto":
        return jax.devices()[0]
    try:
        return jax.devices(name)[0]
    except RuntimeError:
        raise invalid("device", name, f"auto, cpu, or gpu when JAX sees one (it sees: {jax.default_backend()})") from None


def describe_device(device: jax.Device) -> str:
    return f"{device.platform}:{device.device_kind}"
