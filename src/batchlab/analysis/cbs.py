"""The critical batch size over training, CBS(t), from branched runs (Merrill et al. 2025, "Critical Batch Size
Revisited", arXiv 2505.23971).

At each branch point (a parent's epoch t), branches trained from the same state at k x B for the same window
(equal examples: every branch sees the same epochs of the parent's data stream) are compared by their smoothed
loss at the end of the window: an exponential moving average over the window's epoch-end values (alpha
SMOOTHING) of the full training loss. Merrill et al.'s rule: k* is the largest multiplier such that every
multiplier up to it keeps up, L_k <= min_{j < k} L_j + tolerance (absolute, in loss units; DEFAULT_TOLERANCE,
their 0.01); CBS(t) = k* B. With several seeds the rule runs on the seed-mean loss (`cbs`) and on each seed
(`cbs_low`, `cbs_high`: the smallest and largest per-seed value). Pure functions of arrays: no store, no JAX.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DEFAULT_TOLERANCE = 0.01
"""Merrill et al.'s tolerance on the smoothed loss (absolute, loss units): `--tolerance` changes it."""
SMOOTHING = 0.5
"""EMA weight of the newest epoch-end loss in the smoothed loss (Merrill et al. smooth the loss with an EMA)."""


def smoothed(losses: Sequence[float] | np.ndarray, alpha: float = SMOOTHING) -> float:
    """The EMA of `losses` (oldest first) with weight `alpha` on each newer value: its final value."""
    values = np.asarray(losses, float)
    if not len(values):
        return float("nan")
    out = values[0]
    for v in values[1:]:
        out = alpha * v + (1 - alpha) * out
    return float(out)


def critical_multiplier(losses: Mapping[int, float], tolerance: float = DEFAULT_TOLERANCE) -> int | None:
    """Merrill et al.'s k*: over the multipliers in increasing order, the last one before the first that falls
    behind (L_k > min_{j<k} L_j + tolerance, or a non-finite loss). None without the x1 reference."""
    ks = sorted(losses)
    if not ks or ks[0] != 1 or not np.isfinite(losses[1]):
        return None
    best, critical = losses[1], 1
    for k in ks[1:]:
        if not np.isfinite(losses[k]) or losses[k] > best + tolerance:
            break
        critical, best = k, min(best, losses[k])
    return critical


def critical_batch_sizes(branches: Sequence[Mapping[str, Any]], epochs: Mapping[str, Mapping[str, np.ndarray]], *,
                         tolerance: float = DEFAULT_TOLERANCE, metric: str = "train_loss") -> list[dict[str, Any]]:
    """CBS(t) per (parent setting, branch epoch): rows {"epoch", "cbs", "cbs_low", "cbs_high", "base_batch_size",
    "multipliers", "losses" (seed-mean smoothed loss per multiplier), "seeds", "window_epochs"}, by epoch.

    `branches` are runs-table rows of branch runs (`parent_run_id`, `branch_epoch`, `multiplier`, `batch_size`,
    `seed`); `epochs` their per-epoch arrays (keyed by run id). Branch points are grouped by the parent's batch
    size and rate (the base B and the setting branched from) and the branch epoch."""
    points: dict[tuple, dict[int, dict[int, float]]] = {}
    windows: dict[tuple, int] = {}
    for b in branches:
        k = round(b["multiplier"])
        base = int(b["batch_size"]) // k
        key = (base, int(b["branch_epoch"]))
        e = epochs[b["run_id"]]
        after = np.asarray(e["epoch"]) > int(b["branch_epoch"])
        values = np.asarray(e[metric], float)[after]
        points.setdefault(key, {}).setdefault(int(b["seed"]), {})[k] = smoothed(values) if len(values) else np.nan
        windows[key] = max(windows.get(key, 0), int(after.sum()))
    rows = []
    for (base, epoch), per_seed in sorted(points.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        ks = sorted(set.intersection(*(set(v) for v in per_seed.values())))
        mean = {k: float(np.mean([v[k] for v in per_seed.values()])) for k in ks}
        overall = critical_multiplier(mean, tolerance)
        seeds = [critical_multiplier({k: v[k] for k in ks}, tolerance) for v in per_seed.values()]
        seeds_known = [s for s in seeds if s is not None]
        rows.append({"epoch": epoch, "cbs": None if overall is None else overall * base,
                     "cbs_low": min(seeds_known) * base if seeds_known else None,
                     "cbs_high": max(seeds_known) * base if seeds_known else None,
                     "base_batch_size": base, "multipliers": ks, "losses": [mean[k] for k in ks],
                     "seeds": len(per_seed), "window_epochs": windows[(base, epoch)], "tolerance": tolerance})
    return rows


def critical_batch_size_json(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The `show --json` document's `critical_batch_size` list: [{"epoch", "cbs", "base_batch_size"}] (plus the
    seed interval `cbs_low`, `cbs_high`); [] without branches. Plain JSON numbers, null where unknown."""
    return [{"epoch": int(r["epoch"]), "cbs": r["cbs"], "base_batch_size": int(r["base_batch_size"]),
             "cbs_low": r["cbs_low"], "cbs_high": r["cbs_high"]} for r in rows]


def parents_b_simple(branches: Sequence[Mapping[str, Any]], epochs: Mapping[str, Mapping[str, np.ndarray]],
                     at: Sequence[int]) -> dict[int, float]:
    """The parents' B_simple (mean over parents where measured) at each epoch in `at` (NaN where unmeasured)."""
    parents = sorted({b["parent_run_id"] for b in branches if b["parent_run_id"] in epochs})
    out = {}
    for e in at:
        values = [float(np.asarray(epochs[p]["b_simple"], float)[list(epochs[p]["epoch"]).index(e)])
                  for p in parents if "b_simple" in epochs[p] and e in list(epochs[p]["epoch"])]
        finite = [v for v in values if np.isfinite(v)]
        out[int(e)] = float(np.mean(finite)) if finite else float("nan")
    return out


def cbs_text(data: Any, *, tolerance: float = DEFAULT_TOLERANCE) -> str:
    """Lines for `show` and `branch`: CBS(t) per branch point beside B_simple at that epoch of the parents
    (`data` a :class:`batchlab.study_data.StudyData`); '' without branches."""
    rows = critical_batch_sizes(data.branches, data.epochs, tolerance=tolerance)
    if not rows:
        return ""
    b_simple = parents_b_simple(data.branches, data.epochs, [r["epoch"] for r in rows])
    lines = ["Critical batch size over training (Merrill et al. 2025): the largest k x B whose",
             f"smoothed training loss keeps within {tolerance:g} of every smaller batch at equal examples.",
             f"  {'epoch':>5}  {'B':>5}  {'CBS':>6}  {'seed range':>11}  {'B_simple':>9}  window"]
    for r in rows:
        gns = f"{b_simple[r['epoch']]:9.3g}" if np.isfinite(b_simple[r["epoch"]]) else f"{'-':>9}"
        interval = f"{r['cbs_low']}-{r['cbs_high']}" if r["seeds"] > 1 and r["cbs_low"] is not None else ""
        cbs = "-" if r["cbs"] is None else str(r["cbs"])
        lines.append(f"  {r['epoch']:>5}  {r['base_batch_size']:>5}  {cbs:>6}  {interval:>11}  {gns}  "
                     f"{r['window_epochs']} ep")
        losses = [f"x{k} {v:.4f}" for k, v in zip(r["multipliers"], r["losses"])]
        for i in range(0, len(losses), 5):
            lines.append("         loss " + "  ".join(losses[i:i + 5]))
    return "\n".join(lines)


def warmup_schedule(rows: Sequence[Mapping[str, Any]], base_batch_size: int) -> tuple[list[int], list[int]]:
    """A batch-size warmup from CBS(t) (Merrill et al. 2025's rule): starting at `base_batch_size`, at each
    branch epoch t (in order) double the batch while the measured CBS(t) is at least twice the current batch.
    Returns (milestones, batch sizes after each) for `batch_size_milestones` and `batch_size_schedule`: the new
    size applies from epoch t + 1 on. Branch points without a CBS change nothing."""
    current, milestones, sizes = int(base_batch_size), list[int](), list[int]()
    for r in sorted(rows, key=lambda r: r["epoch"]):
        if r["cbs"] is None:
            continue
        new = current
        while r["cbs"] >= 2 * new:
            new *= 2
        if new != current:
            current = new
            if milestones and milestones[-1] == max(int(r["epoch"]), 1):
                sizes[-1] = new
            else:
                milestones.append(max(int(r["epoch"]), 1))
                sizes.append(new)
    return milestones, sizes


def schedule_study(spec: Mapping[str, Any], milestones: Sequence[int], sizes: Sequence[int], *, base_batch_size: int,
                   lr: float, lr_rule: str) -> str:
    """A `batchlab run --config` TOML study file training `spec`'s setting with the warmup schedule: batch size
    `base_batch_size` at first, the rate following the batch size by `lr_rule` (`none`, `linear`, `sqrt`)."""
    keep = ("dataset", "model", "hidden", "activation", "optimizer", "momentum", "epochs", "seeds", "seed",
            "order_seed", "test_fraction", "split_seed", "n_samples", "noise", "data_seed", "standardize")
    values: dict[str, Any] = {k: spec[k] for k in keep if k in spec and spec[k] is not None}
    values.update(batch_sizes=[int(base_batch_size)], lr=float(lr), lr_scaling=lr_rule,
                  base_batch_size=int(base_batch_size), batch_size_milestones=[int(m) for m in milestones],
                  batch_size_schedule=[int(b) for b in sizes])
    if not milestones:
        values.pop("batch_size_milestones")
        values.pop("batch_size_schedule")
    lines = ["# A batch-size warmup from the critical batch size measured by `batchlab branch` (Merrill et al.",
             "# 2025): the batch doubles while CBS(t) is at least twice the current one; the rate follows it."]
    for k, v in values.items():
        lines.append(f"{k} = {_toml(v)}")
    return "\n".join(lines) + "\n"


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)
