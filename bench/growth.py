"""`python -m bench.growth`: how cost grows with training-set size, epochs and replicas.

Each configuration runs `batchlab.runner.driver.run_study` at batch size 1 (where per-step records are largest) in a
fresh process, so its peak memory is its own. Printed per configuration: training time, replica-steps/s, peak
resident memory, the study directory's size on disk and its bytes per recorded step. Per-step losses are one
float32 each, stored as one blob per run and epoch, so the store should grow by about 4 bytes per step.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = (1_000, 10_000, 100_000, 1_000_000)
EPOCHS = (1, 4, 16)
REPLICAS = (1, 4, 16)


def measure_one(n_train: int, epochs: int, replicas: int) -> dict:
    """Train blobs (n_train training rows) at batch size 1 and report time, memory and store size."""
    from batchlab.runner.driver import run_study
    from batchlab.spec import StudySpec
    from batchlab.store.db import Store

    spec = StudySpec(dataset="blobs", n_samples=round(n_train / 0.8), batch_sizes=(1,), epochs=epochs,
                     seeds=replicas, device="cpu")
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        run_study(spec, out)
        total = time.perf_counter() - t0
        store = Store.open(out)
        runs = store.runs()
        store.close()
        disk = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    steps = sum(r["total_updates"] for r in runs)
    return {"n_train": runs[0]["n_train"], "epochs": epochs, "replicas": replicas, "steps": steps,
            "train_s": runs[0]["wall_time_s"], "total_s": total, "replica_steps_per_s": steps / runs[0]["wall_time_s"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "store_bytes": disk,
            "store_bytes_per_step": disk / steps}


def configurations(quick: bool) -> list[tuple[int, int, int]]:
    sizes = SIZES[:2] if quick else SIZES
    configs = [(n, 1, 1) for n in sizes]
    configs += [(10_000, e, 1) for e in EPOCHS if e != 1]
    configs += [(10_000, 1, r) for r in REPLICAS if r != 1]
    return configs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__)
    p.add_argument("--one", nargs=3, type=int, metavar=("N", "EPOCHS", "REPLICAS"), help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="sizes up to 10k only")
    p.add_argument("--json", default="bench/results/growth.json")
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(*args.one)))
        return
    rows = []
    print(f"{'N train':>9} {'epochs':>6} {'repl.':>5} {'steps':>11} {'train s':>8} {'total s':>8} "
          f"{'steps/s':>10} {'peak MB':>8} {'store MB':>9} {'B/step':>7}")
    for n, e, r in configurations(args.quick):
        done = subprocess.run([sys.executable, "-m", "bench.growth", "--one", str(n), str(e), str(r)],
                              capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['n_train']:>9,} {e:>6} {r:>5} {row['steps']:>11,} {row['train_s']:>8.2f} {row['total_s']:>8.2f} "
              f"{row['replica_steps_per_s']:>10,.0f} {row['peak_rss_mb']:>8.0f} {row['store_bytes'] / 1e6:>9.2f} "
              f"{row['store_bytes_per_step']:>7.1f}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
