"""Sweeps: a study file whose list-valued fields are axes, validated at the door (no JAX).

A sweep file uses the `run` flags' names with dashes as underscores. Where `run` takes one value, a list makes
the field an axis (`lr = [0.01, 0.03, 0.1]`, or a log range `lr = {log_range = [0.001, 0.1, 5]}`), so a `run`
config is a valid one-point sweep. Every run has a content-hash id, so the same file always names the same runs;
:mod:`batchlab.runner.plan` expands a sweep into runs and packs them into groups.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from batchlab.errors import invalid
from batchlab.spec import CONSTRAINTS, StudySpec, build_spec, identity_dict

AXES = ("lr", "optimizer", "momentum", "lr_scaling", "base_batch_size", "warmup_epochs", "hidden", "activation",
        "model", "lr_schedule", "lr_milestones", "lr_gamma", "batch_size_milestones", "batch_size_gamma",
        "batch_size_schedule", "beta1", "beta2")
"""Fields that may take a list of values in a sweep file."""


LIST_VALUED = ("hidden", "lr_milestones", "batch_size_milestones", "batch_size_schedule")
"""Fields whose one value is a list: only a list of lists (or of strings) makes them an axis."""

MAX_AXIS_VALUES = 1_000
"""Values one axis may take (a list, or a log_range's count)."""
MAX_POINTS = 10_000
"""Grid points (the product of the axes' lengths) in one sweep."""
MAX_RUNS = 20_000
"""Runs (points x batch sizes x seeds) in one study: each is registered with its initial parameters before any
training, so the bound keeps that step (and the store) to minutes and megabytes, not hours and gigabytes."""

PER_REPLICA = ("lr", "lr_scaling", "base_batch_size")
"""Axes that only change a replica's learning rate: runs differing only in these share one vmapped program."""


@dataclass(frozen=True)
class Sweep:
    """A base spec and the axes that vary; `points()` is their Cartesian product, in file order."""

    base: StudySpec
    axes: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def points(self) -> list[StudySpec]:
        names = [name for name, _ in self.axes]
        return [replace(self.base, **dict(zip(names, combo)))
                for combo in itertools.product(*(values for _, values in self.axes))]

    def fingerprint(self) -> str:
        """A hash of everything that defines the runs: a changed study file gets a different fingerprint."""
        base = identity_dict(self.base)
        base.pop("device")
        content = {"base": base, "axes": [[n, [list(v) if isinstance(v, tuple) else v for v in vs]] for n, vs in self.axes]}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        axes = ", ".join(f"{n}={list(v)}" for n, v in self.axes)
        return f"Sweep({len(self.points())} points x {len(self.base.batch_sizes)} batch sizes x {self.base.seeds} " \
               f"seeds{'; ' + axes if axes else ''})"


def _is_axis(name: str, raw: Any) -> bool:
    if name == "lr" and isinstance(raw, Mapping):
        return True
    if not isinstance(raw, list | tuple):
        return False
    if name in LIST_VALUED:  # a list of ints is one value (layer widths, milestones); a list of lists is an axis
        return bool(raw) and all(isinstance(v, list | tuple | str) for v in raw)
    return True


def _axis_values(name: str, raw: Any) -> tuple[Any, ...]:
    if isinstance(raw, Mapping):
        if set(raw) != {"log_range"} or not isinstance(raw["log_range"], list) or len(raw["log_range"]) != 3:
            raise invalid(name, raw, "a number, a list of numbers, or {log_range = [low, high, count]}")
        low, high, count = raw["log_range"]
        try:
            low, high, count = float(low), float(high), int(count)
        except (TypeError, ValueError):
            raise invalid(name, raw, "{log_range = [low, high, count]} with numbers low < high and count >= 2") from None
        if not (0 < low < high and 2 <= count <= MAX_AXIS_VALUES):
            raise invalid(name, raw, f"{{log_range = [low, high, count]}} with 0 < low < high and 2 <= count <= "
                          f"{MAX_AXIS_VALUES:,}")
        raw = [float(v) for v in np.geomspace(low, high, count)]
    if not raw or len(raw) > MAX_AXIS_VALUES:
        raise invalid(name, f"a list of {len(raw):,} values" if raw else raw,
                      f"a non-empty list of at most {MAX_AXIS_VALUES:,} values")
    parse, allowed = CONSTRAINTS[name]
    values = []
    for i, v in enumerate(raw):
        try:
            values.append(parse(v))
        except (ValueError, TypeError, AttributeError):
            raise invalid(f"{name}[{i}]", v, allowed) from None
    if len(set(values)) != len(values):
        raise invalid(name, raw, "distinct values")
    return tuple(values)


def check_size(sweep: Sweep) -> None:
    """Refuse a sweep over MAX_POINTS grid points or MAX_RUNS runs before any point is built."""
    points = math.prod(len(values) for _, values in sweep.axes)
    sizes = "x".join(str(len(values)) for _, values in sweep.axes)
    if points > MAX_POINTS:
        raise invalid("sweep", f"{points:,} grid points ({sizes})", f"at most {MAX_POINTS:,} grid points")
    runs = points * len(set(sweep.base.batch_sizes)) * sweep.base.seeds
    if runs > MAX_RUNS:
        raise invalid("sweep", f"{runs:,} runs ({points:,} points x {len(set(sweep.base.batch_sizes))} batch sizes x "
                      f"{sweep.base.seeds:,} seeds)", f"at most {MAX_RUNS:,} runs per study (fewer seeds, "
                      "batch sizes or axis values; or split the study)")


def build_sweep(values: Mapping[str, Any]) -> Sweep:
    """Validate a sweep file's raw values: scalars as in `run`, lists of axis fields as axes. Every point is
    validated as a whole, so a combination that is not allowed is reported before anything is written."""
    scalars = {k: v for k, v in values.items() if not (k in AXES and _is_axis(k, v))}
    axes = tuple((k, _axis_values(k, v)) for k, v in values.items() if k in AXES and _is_axis(k, v))
    base = build_spec(scalars)
    sweep = Sweep(base, axes)
    check_size(sweep)
    for point in sweep.points():
        build_spec({k: v for k, v in point.to_dict().items()})
    return sweep
