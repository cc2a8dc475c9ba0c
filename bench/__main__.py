"""`python -m bench`: measure every contender in this process, print two tables, write a JSON file."""

from __future__ import annotations

import argparse

from bench import jax_runs, processes, reference
from bench.results import Result, print_batch_size_1, print_by_batch_size, write_json

LARGE_BATCH_EPOCH_FACTOR = 4
"""Batch sizes 32 and full run this many times the epochs of batch size 1: each step does more work but an
epoch takes about as long, so more epochs keep each measurement near a second."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--epochs", type=int, default=150,
                   help="epochs of each JAX contender at batch size 1 (default 150: about 1 s each here)")
    p.add_argument("--replicas", type=int, nargs="+", default=[8],
                   help="also measure the engine with R vmapped replicas at batch size 1 (default 8; R=1 always)")
    p.add_argument("--torch-epochs", type=int, default=2, help="epochs of each PyTorch loop (default 2)")
    p.add_argument("--sklearn-iters", type=int, default=3, help="epochs of MLPClassifier (default 3)")
    p.add_argument("--together-epochs", type=int, default=60,
                   help="epochs of each `batchlab run` in the two-runs-at-once benchmark (default 60)")
    p.add_argument("--study-epochs", type=int, default=100,
                   help="epochs of the Shallue-style study benchmark (default 100, as in issue 16; 0 skips it)")
    p.add_argument("--study-workers", type=int, default=2, help="--workers of the study benchmark (default 2)")
    p.add_argument("--quick", action="store_true", help="smoke mode: few epochs everywhere, numbers are rough")
    p.add_argument("--json", default="bench/results/latest.json", help="where to write the results")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin this process to one core (the batchlab CLI pins its training process)")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.torch_epochs, args.sklearn_iters = 5, 1, 1
        args.together_epochs, args.study_epochs = 5, 1
    return args


def batch_size_1(args: argparse.Namespace, data, notes: list[str]) -> list[Result]:
    """Every contender at batch size 1 (R replicas run as many epochs as one: their time grows with R)."""
    results = jax_runs.engine_with_store(args.epochs)
    results += [jax_runs.engine(data, batch_size=1, epochs=args.epochs),
                jax_runs.bare_scan(data, batch_size=1, epochs=args.epochs)]
    results += [jax_runs.engine(data, batch_size=1, epochs=args.epochs, replicas=r)
                for r in args.replicas if r > 1]
    if reference.torch_threads() is None:
        notes.append("PyTorch is not importable: torch rows skipped (pip install torch==2.13.0)")
        print("note: " + notes[-1])
    else:
        results += [reference.torch_dataloader(data, epochs=args.torch_epochs),
                    reference.torch_manual(data, epochs=args.torch_epochs),
                    reference.torch_backend(data, epochs=args.torch_epochs)]
    return results + [reference.sklearn_mlp(data, iters=args.sklearn_iters)]


def by_batch_size(args: argparse.Namespace, data, at_1: list[Result]) -> list[tuple[Result, Result]]:
    """(engine, bare scan) pairs at batch sizes 1 (reused from table 1), 32 and full."""
    named = {r.name: r for r in at_1}
    pairs = [(named[jax_runs.ENGINE], named[jax_runs.SCAN])]
    epochs = LARGE_BATCH_EPOCH_FACTOR * args.epochs
    for b in (32, data.n_train):
        pairs.append((jax_runs.engine(data, batch_size=b, epochs=epochs),
                      jax_runs.bare_scan(data, batch_size=b, epochs=epochs)))
    return pairs


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.no_pin:  # as `batchlab run` does: every contender then runs on the same single core
        from batchlab.runner.cores import pin_to_one_core

        pin_to_one_core()
    data = jax_runs.digits()
    print(f"{data}; MLP 64-128-10 ReLU, SGD lr 0.03, CPU{' (quick mode: rough numbers)' if args.quick else ''}")
    jax_runs.warm_up_jax()
    notes: list[str] = []
    table1 = batch_size_1(args, data, notes)
    table2 = by_batch_size(args, data, table1)
    reference_result = table1[0]
    print_batch_size_1(table1, reference_result)
    print_by_batch_size(table2)
    print(f"\nTwo `batchlab run`s at once (digits, batch size 1, {args.together_epochs} epochs, training time):")
    together = processes.two_runs_at_once(args.together_epochs)
    print(f"  alone {together['alone_s']:.3f} s; together " + ", ".join(f"{t:.3f} s" for t in together["together_s"])
          + " (speed vs alone: " + ", ".join(f"{r:.2f}x" for r in together["speed_vs_alone"]) + ")")
    study = None
    if args.study_epochs > 0:
        print(f"\nShallue-style study ({args.study_epochs} epochs, --workers {args.study_workers}) ...", flush=True)
        study = processes.shallue_study(args.study_epochs, args.study_workers)
        print(f"  {study['wall_s']:.1f} s from start to exit")
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    settings.update(large_batch_epochs=LARGE_BATCH_EPOCH_FACTOR * args.epochs,
                    torch_num_threads=reference.torch_threads(), reference=reference_result.name,
                    jax_compilation_cache_dir=jax_runs.compilation_cache())
    path = write_json(args.json, settings=settings, notes=notes,
                      table1=[r.to_dict(reference_over_this=reference_result.steps_per_s / r.steps_per_s)
                              for r in table1],
                      table2=[{"batch_size": e.batch_size, "engine": e.to_dict(), "bare_scan": s.to_dict(),
                               "engine_over_scan": e.steps_per_s / s.steps_per_s} for e, s in table2],
                      two_runs_at_once=together, shallue_study=study)
    print(f"\nresults written to {path}")


if __name__ == "__main__":
    main()
