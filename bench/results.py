"""One measurement (`Result`), the printed tables, and the JSON file with machine information."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Result:
    """What one contender did: `steps` updates and `examples` examples per replica in `seconds`."""

    name: str
    batch_size: int
    steps: int
    examples: int
    seconds: float
    replicas: int = 1
    final_loss: float | None = None
    """Mean minibatch loss of the last epoch: a sanity check that the contender really trained."""
    compile_s: float | None = None
    """JAX only: compile time (the bare scan: its first, untimed epoch), not part of `seconds`."""

    @property
    def steps_per_s(self) -> float:
        """Optimizer steps per second, summed over replicas (replica-steps/s when replicas > 1)."""
        return self.replicas * self.steps / self.seconds

    @property
    def examples_per_s(self) -> float:
        return self.replicas * self.examples / self.seconds

    def to_dict(self, **extra) -> dict:
        return {**asdict(self), "steps_per_s": self.steps_per_s, "examples_per_s": self.examples_per_s, **extra}


def print_batch_size_1(results: list[Result], reference: Result) -> None:
    """Table 1: every contender at batch size 1, and how many times faster the recording engine is."""
    print(f"\nBatch size 1 (reference: {reference.name})")
    print(f"{'contender':<44} {'steps/s':>12} {'ref/this':>9} {'last-epoch loss':>16} {'compile s':>10}")
    for r in results:
        loss = "" if r.final_loss is None else f"{r.final_loss:.1e}"
        compile_s = "" if r.compile_s is None else f"{r.compile_s:.2f}"
        print(f"{r.name:<44} {r.steps_per_s:>12,.0f} {reference.steps_per_s / r.steps_per_s:>9.2f} {loss:>16} "
              f"{compile_s:>10}")


def print_by_batch_size(pairs: list[tuple[Result, Result]]) -> None:
    """Table 2: the engine (no store) against the bare scan at each batch size."""
    print("\nEngine (no store, 1 replica) vs bare scan by batch size")
    print(f"{'B':>5} {'engine steps/s':>15} {'scan steps/s':>13} {'engine ex/s':>12} {'scan ex/s':>12} "
          f"{'engine/scan':>12}")
    for eng, scan in pairs:
        print(f"{eng.batch_size:>5} {eng.steps_per_s:>15,.0f} {scan.steps_per_s:>13,.0f} {eng.examples_per_s:>12,.0f} "
              f"{scan.examples_per_s:>12,.0f} {eng.steps_per_s / scan.steps_per_s:>12.2f}")


def machine_info() -> dict:
    """Where and with what the numbers were taken."""
    info = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version()}
    for pkg in ("batchlab", "jax", "jaxlib", "numpy", "scikit-learn", "torch"):
        try:
            info[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            info[pkg] = None
    return info


def write_json(path: str, *, settings: dict, table1: list[dict], table2: list[dict], notes: list[str]) -> Path:
    """Write all results to `path` (its folder is created) and return it."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    doc = {"machine": machine_info(), "settings": settings, "batch_size_1": table1, "by_batch_size": table2,
           "notes": notes}
    p.write_text(json.dumps(doc, indent=2) + "\n")
    return p
