"""Which cores a training process uses: XLA's CPU thread pool follows them, and with it float32 rounding."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO

_claimed: IO[bytes] | None = None
"""The open lock file of the core this process claimed (held until the process ends)."""
_allowed_before_pin: list[int] | None = None
"""The cores this process might use before :func:`pin_to_one_core` narrowed them to one."""


def allowed_cores() -> list[int]:
    """The cores this process was allowed before training pinned it to one (for work after training that can
    use several, e.g. drawing figures in parallel); [] where the platform does not say."""
    if _allowed_before_pin is not None:
        return list(_allowed_before_pin)
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def pin_to_one_core(core: int | None = None) -> int | None:
    """Pin this process to one core before JAX starts its CPU backend, preferring a core no other batchlab
    process holds.

    On CPU, XLA sizes its thread pool from the cores it may use, and the thread count changes how large matrix
    products are split, hence their float32 rounding. Pinning every training process to one core makes results
    identical whether groups train inline or in worker processes, and is faster on small machines (a pinned
    digits sweep ran in 3.9 s against 7.9 s free on 2 cores). Which core does not change the numbers, so two
    processes need not share one: each claims a core by an advisory lock (:func:`claim_core`), starting at `core`
    (default the first allowed one), and only shares when every allowed core is claimed. BATCHLAB_NO_PIN=1
    disables pinning."""
    if os.environ.get("BATCHLAB_NO_PIN") == "1" or not hasattr(os, "sched_setaffinity"):
        return None
    global _allowed_before_pin
    allowed = sorted(os.sched_getaffinity(0))
    if _allowed_before_pin is None:
        _allowed_before_pin = allowed
    start = allowed[0] if core is None or core not in allowed else core
    chosen = claim_core(allowed, start)
    os.sched_setaffinity(0, {chosen})
    return chosen


def claim_core(allowed: list[int], start: int) -> int:
    """The first core from `start` on (wrapping round `allowed`) whose lock file no other process holds, locked
    for the rest of this process's life (flock: released by the kernel when the process exits, even on kill -9);
    `start` itself when all are held (sharing a core costs speed, never correctness). A process that already
    claimed a core keeps it if it is allowed."""
    global _claimed
    if _claimed is not None:
        held = int(Path(_claimed.name).stem.split("-")[-1])
        if held in allowed:
            return held
        _claimed.close()
        _claimed = None
    import fcntl

    folder = Path(tempfile.gettempdir()) / f"batchlab-cores-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
    except OSError:
        return start
    i = allowed.index(start)
    order = allowed[i:] + allowed[:i]
    busy = core_busy_fractions(order)
    order.sort(key=lambda c: round(busy.get(c, 0.0), 1))  # stable: among equally idle cores, `start` first
    for core in order:
        try:
            f = open(folder / f"core-{core}.lock", "wb")  # noqa: SIM115 (held open on purpose)
        except OSError:
            return start
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        _claimed = f
        return core
    return start


def core_busy_fractions(cores: list[int], *, window_s: float = 0.05) -> dict[int, float]:
    """Each core's busy fraction over `window_s` seconds, from /proc/stat (Linux); {} where it cannot be read.
    A core with another program's work on it (a browser, a compiler) trains this process 2-3x slower, so a free
    core that is also idle is preferred."""
    import time

    def sample() -> dict[int, tuple[int, int]]:
        out: dict[int, tuple[int, int]] = {}
        try:
            lines = Path("/proc/stat").read_text().splitlines()
        except OSError:
            return out
        for line in lines:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
                values = [int(f) for f in fields[:8]]
                idle = values[3] + (values[4] if len(values) > 4 else 0)
                out[int(name[3:])] = (sum(values), idle)
        return out

    first = sample()
    if not first:
        return {}
    time.sleep(window_s)
    second = sample()
    fractions = {}
    for c, (total, idle) in second.items():
        if c in first:
            dt, di = total - first[c][0], idle - first[c][1]
            fractions[c] = (dt - di) / dt if dt > 0 else 0.0
    return fractions


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
