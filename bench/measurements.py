"""`python -m bench.measurements`: what the measurements cost beside the training they describe (issue 16: at most
25% of the training time by default). For each batch size of a study (the default batch sizes, 1 and full), the
training time (compile excluded), the noise-scale probes during training (epochs 0, every `gns_every` and the
last) and the curvature at the end, each timed on its own; compile times included in the measurements, as a user
waits for them."""

from __future__ import annotations

import argparse
import time

import numpy as np


def one_study(model: str, epochs: int, dataset: str = "digits") -> list[dict]:
    from batchlab.data.load import load_dataset
    from batchlab.models.registry import load_model
    from batchlab.spec import StudySpec
    from batchlab.train.backends import group_run, probes_for
    from batchlab.train.contract import Group
    from batchlab.train.measure import GroupMeasurements

    spec = StudySpec(dataset=dataset, model=model, epochs=epochs)
    data = load_dataset(spec)
    model_ = load_model(spec, data)
    rows = []
    for b in spec.resolved_batch_sizes(data.n_train):
        measure = GroupMeasurements(probes_for(model_, data), data, gns=spec.gns)
        gns_s = [0.0]

        def probe(params, active, measure=measure, gns_s=gns_s):
            t0 = time.perf_counter()
            out = measure.gns(params, active)
            gns_s[0] += time.perf_counter() - t0
            return out

        run = group_run(model_, data, Group(b, (spec.lr,), (0,), (0,)), epochs, probe=probe,
                        probe_every=spec.gns_every)
        last: dict = {}
        run.train(lambda r, last=last: last.update(r=r))
        t0 = time.perf_counter()
        measure.end_of_training(run.final_params, np.ones(1, bool), eps_sharpness=False)
        curvature_s = time.perf_counter() - t0
        train_s = last["r"].wall_time_s
        rows.append({"batch_size": b, "train_s": train_s, "compile_s": run.compile_time_s, "gns_s": gns_s[0],
                     "curvature_s": curvature_s, "measure_over_train": (gns_s[0] + curvature_s) / train_s})
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.measurements", description=__doc__)
    p.add_argument("--model", default="cnn")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--passes", type=int, default=2,
                   help="train and measure this many times in this process: the first compiles (or loads the "
                        "CLI's persistent compilation cache, as a second `batchlab run` would), later ones reuse")
    args = p.parse_args(argv)
    from batchlab.runner.cores import pin_to_one_core
    from batchlab.train.device import enable_compilation_cache

    pin_to_one_core()
    enable_compilation_cache()  # as the CLI does
    import jax.numpy as jnp

    jnp.zeros(1).block_until_ready()  # the CPU client starts (~1 s) before anything is timed
    for k in range(args.passes):
        rows = one_study(args.model, args.epochs, args.dataset)
        print(f"pass {k + 1}: {args.dataset}, --model {args.model}, {args.epochs} epochs, default measurements")
        print(f"{'B':>6} {'train s':>8} {'compile s':>9} {'gns s':>7} {'curv s':>7} {'measure/train':>13}")
        for r in rows:
            print(f"{r['batch_size']:>6} {r['train_s']:>8.2f} {r['compile_s']:>9.2f} {r['gns_s']:>7.2f} "
                  f"{r['curvature_s']:>7.2f} {r['measure_over_train']:>13.2f}")
        total_train = sum(r["train_s"] for r in rows)
        total_measure = sum(r["gns_s"] + r["curvature_s"] for r in rows)
        print(f"all batch sizes: measurements {total_measure:.2f} s = {total_measure / total_train:.2f}x the "
              f"training time ({total_train:.2f} s)")


if __name__ == "__main__":
    main()
