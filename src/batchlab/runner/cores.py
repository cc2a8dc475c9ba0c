"""Which cores a training process uses: XLA's CPU thread pool follows them, and with it float32 rounding."""

from __future__ import annotations

import os


def pin_to_one_core(core: int | None = None) -> int | None:
    """Pin this process to one core (the first allowed one by default) before JAX starts its CPU backend.

    On CPU, XLA sizes its thread pool from the cores it may use, and the thread count changes how large matrix
    products are split, hence their float32 rounding. Pinning every training process to one core makes results
    identical whether groups train inline or in worker processes, and is faster on small machines (a pinned
    digits sweep ran in 3.9 s against 7.9 s free on 2 cores). BATCHLAB_NO_PIN=1 disables it."""
    if os.environ.get("BATCHLAB_NO_PIN") == "1" or not hasattr(os, "sched_setaffinity"):
        return None
    core = min(os.sched_getaffinity(0)) if core is None else core
    os.sched_setaffinity(0, {core})
    return core


def reproducible_here() -> bool:
    """Pin this process for training (:func:`pin_to_one_core`) and say whether its numbers will equal a pinned
    process's: False when JAX's CPU backend already started here on several cores (a notebook that used JAX
    before calling batchlab), since its thread pool keeps that size. BATCHLAB_NO_PIN=1 opts out: True."""
    if os.environ.get("BATCHLAB_NO_PIN") == "1" or not hasattr(os, "sched_getaffinity"):
        return True
    cores_before = len(os.sched_getaffinity(0))
    pin_to_one_core()
    return cores_before == 1 or not _jax_backend_started()


def _jax_backend_started() -> bool:
    import sys

    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(bridge, "_backends", None))
