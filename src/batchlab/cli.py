"""The `batchlab` command: a thin layer that parses, calls the library, and prints.

Start-up imports nothing heavy: `--help` and errors in flags or config files appear without importing JAX.
Exit codes: 0 success, 2 user error, a damaged study, a full disk or an unwritable path (one line on stderr),
1 a bug (traceback) or a group that failed (one line per group), 128 + N after signal N stopped training
(130 Ctrl-C, 143 SIGTERM, 129 SIGHUP; finished epochs saved, `batchlab resume DIR` finishes it).
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import NoReturn

from batchlab.errors import BatchlabError, BatchlabWarning, environment_error

RUN_EXAMPLES = """examples:
  batchlab run                                   Lena's experiments: noisy moons, MLP, batch sizes 1 and full, 100 epochs
  batchlab run --dataset digits                  the same on digits (the MLP fits them: batch size 1 goes smooth)
  batchlab run --dataset digits --batch-sizes 1,8,64,full --seeds 3 --epochs 30 --out runs/digits
  batchlab run --dataset moons --n-samples 2000 --model mlp --hidden 32,32 --optimizer adam --lr 0.003
  batchlab run --dataset digits --model cnn --epochs 20   a small CNN on digits as 8x8 images
  batchlab run --dataset mnist1d --model cnn --optimizer adam --lr 0.01 --batch-sizes 100 --budget-steps 6000
  batchlab run --dataset text --model transformer --context 64 --optimizer adam --lr 0.003 --batch-sizes 32 --budget-steps 1500
  batchlab run --model my_model.py:make --dataset iris    your JAX model (see batchlab.models.factory)
  batchlab run --model my_net.py:Net             your PyTorch nn.Module class or factory (pip install 'batchlab[torch]')
  batchlab run --dataset data.csv --target label --lr-scaling linear --base-batch-size 32
  batchlab run --dataset houses.parquet --target price --task regression --features area,rooms,age
  batchlab run --dataset images.npz --batch-sizes 1,32,full   arrays X (N, H, W[, C]), y; optional X_test, y_test
  batchlab run --config study.toml               same field names as the flags, dashes as underscores
"""

SWEEP_EXAMPLES = """example study file (sweep.toml):
  dataset = "digits"
  batch_sizes = [1, 4, 16, 64, 256, "full"]
  lr = {log_range = [0.003, 0.3, 5]}      # an axis: 5 learning rates, log-spaced
  seeds = 3
  epochs = 20

examples:
  batchlab sweep sweep.toml                       kill it at any moment, run it again: it resumes
  batchlab sweep sweep.toml --workers 2           batch-size groups in 2 local processes
  batchlab sweep sweep.toml --executor ray --address 127.0.0.1:6379
"""

RESUME_EXAMPLES = """examples:
  batchlab resume runs/20261125-101500            finish an interrupted 'batchlab run' exactly where it stopped
  batchlab resume runs/sweep --workers 2          finish a sweep (as 'batchlab sweep FILE --out DIR' again)
"""

DIAGNOSE_EXAMPLES = """examples:
  batchlab diagnose small.csv large.csv              which loss curve came from the smaller batch?
  batchlab diagnose lightning_logs/version_*/metrics.csv history.json
  batchlab diagnose runs/tb/ --tag train/loss --json  a TensorBoard directory (pip install 'batchlab[tensorboard]')
  batchlab diagnose export/steps.csv                  batchlab's own export: one curve per run
"""

WIDE_HELP = "one runs table with every column, however wide (default: two tables when the terminal is narrow)"

# Flag -> (spec field, help). Values stay strings here: the spec validates and converts them (one place).
RUN_FLAGS: dict[str, tuple[str, str]] = {
    "--dataset": ("dataset", ("moons (default), digits, iris, wine, breast_cancer, circles, blobs, mnist1d, text "
                              "(Python's pydoc topics, characters), or a .csv, .parquet (pip install "
                              "'batchlab[parquet]'), .npz or .txt path")),
    "--target": ("target", "data files: the target column (CSV, Parquet) or array (NPZ, default y)"),
    "--features": ("features", "feature columns to use, e.g. a,b,c (NPZ: column indices of X; default: all)"),
    "--task": ("task", ("classification, regression (squared error, R² in place of accuracy) or auto (default: "
                        "inferred from the target, and said)")),
    "--n-samples": ("n_samples", "synthetic datasets: number of examples (default 2000)"),
    "--noise": ("noise", "synthetic datasets: noise level (default 0.3)"),
    "--data-seed": ("data_seed", "synthetic datasets: generator seed (default 0)"),
    "--test-fraction": ("test_fraction", "held-out fraction, stratified (default 0.2)"),
    "--split-seed": ("split_seed", "seed of the train/test split (default 0)"),
    "--model": ("model", ("mlp (default), logreg, cnn (1-D on mnist1d), transformer (text), or your model: "
                          "file.py:NAME or module:NAME, a function or class giving a PyTorch nn.Module, a Flax NNX "
                          "or Equinox module, or a JAX (init, apply) pair")),
    "--hidden": ("hidden", "MLP hidden widths, e.g. 128 (default) or 256,128"),
    "--activation": ("activation", "relu (default) or tanh"),
    "--image-shape": ("image_shape", "cnn: height,width[,channels] of the images (default: the dataset's; digits 8,8)"),
    "--optimizer": ("optimizer", "sgd (default), momentum or adam"),
    "--lr": ("lr", "learning rate at --base-batch-size (default 0.03)"),
    "--momentum": ("momentum", "momentum coefficient for --optimizer momentum (default 0.9)"),
    "--lr-scaling": ("lr_scaling", ("none (default), linear (Goyal et al. 2017), sqrt, adam-sde (Malladi et al. "
                                    "2022: lr x sqrt(k), 1 - beta x k) or beta2-halflife (Marek et al. 2025: beta2^k)")),
    "--beta1": ("beta1", "Adam's beta1 at --base-batch-size (default 0.9)"),
    "--beta2": ("beta2", "Adam's beta2 at --base-batch-size (default 0.999)"),
    "--base-batch-size": ("base_batch_size", "batch size at which --lr applies unscaled (default 1)"),
    "--batch-sizes": ("batch_sizes", "comma-separated integers and 'full' (default 1,full)"),
    "--epochs": ("epochs", "passes over the training set (default 100)"),
    "--seeds": ("seeds", "number of seeds, trained together as replicas (default 1)"),
    "--seed": ("seed", "first initialization seed (default 0)"),
    "--order-seed": ("order_seed", "first data-order seed (default 0)"),
    "--device": ("device", "auto (default), cpu or gpu"),
    "--warmup-epochs": ("warmup_epochs", "linear warmup from --lr to the scaled rate over this many epochs (default 0)"),
    "--budget-steps": ("budget_steps", "instead of --epochs: at least this many updates per run"),
    "--budget-examples": ("budget_examples", "instead of --epochs: at least this many examples per run"),
    "--gns": ("gns", "gradient noise scale: auto (default: exact up to 20k examples), exact, estimate, off"),
    "--eval-every-steps": ("eval_every_steps", ("also evaluate train and test every K updates, not only at epoch "
                                                "ends (steps-to-target uses every evaluation)")),
    "--gns-every": ("gns_every", "measure the noise scale every K epochs (default 10; also epoch 0 and the last)"),
    "--sharpness": ("sharpness", "top Hessian eigenvalue and trace at the end: true (default) or false"),
    "--eps-sharpness": ("eps_sharpness", "also Keskar et al.'s epsilon-sharpness: false (default) or true"),
    "--checkpoint-every": ("checkpoint_every", ("keep the full training state every K epochs (and at epoch 0) in "
                                                "study.db, for 'batchlab branch'")),
    # schedules (issue 14)
    "--lr-schedule": ("lr_schedule", "constant (default), step (x --lr-gamma at each milestone), cosine or linear"),
    "--lr-milestones": ("lr_milestones", "step: epochs after which the rate is multiplied by --lr-gamma, e.g. 10,20"),
    "--lr-gamma": ("lr_gamma", "step: the rate's factor at each milestone (default 0.1, as PyTorch's MultiStepLR)"),
    "--batch-size-milestones": ("batch_size_milestones", ("epochs after which the batch size is multiplied by "
                                                          "--batch-size-gamma, e.g. 10,20 (Smith et al. 2018)")),
    "--batch-size-gamma": ("batch_size_gamma", "the batch size's factor at each milestone (default 2)"),
    "--batch-size-schedule": ("batch_size_schedule", ("instead of the factor: the batch size after each milestone, "
                              "e.g. 64,256")),
    "--sharpness-every": ("sharpness_every", ("top Hessian eigenvalue, trace and batch sharpness every K epochs "
                                              "during training, into the epochs table (default 0: off)")),
    # workloads (issue 13): character-level text and the transformer
    "--context": ("context", "text, transformer: characters per sequence, one example (default 64)"),
    "--layers": ("layers", "transformer: blocks (default 2)"),
    "--width": ("width", "transformer: model width (default 64)"),
    "--heads": ("heads", "transformer: attention heads, dividing --width (default 4)"),
    "--budget-tokens": ("budget_tokens", "text, instead of --epochs: at least this many tokens (characters) per run"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="batchlab", description="Measure, show and explain what the mini-batch size does to "
                     "neural-network training.")
    parser.add_argument("--version", action="version", version=f"batchlab {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    run = sub.add_parser("run", help="train and compare batch sizes (Lena's experiments by default)",
                         epilog=RUN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, (field, help_) in RUN_FLAGS.items():
        run.add_argument(flag, dest=field, default=argparse.SUPPRESS, help=help_, metavar=field.upper())
    run.add_argument("--no-standardize", dest="standardize", action="store_const", const=False,
                     default=argparse.SUPPRESS, help="keep raw feature scales (default: standardize with train stats)")
    run.add_argument("--config", help="a TOML study file; flags given here override its values")
    run.add_argument("--out", help="study directory to create (default: runs/<date>-<time>)")
    run.add_argument("--wide", action="store_true", help=WIDE_HELP)
    run.add_argument("--no-figures", action="store_true", help="skip writing PNG figures")
    run.add_argument("--wait", action="store_true", help="if another batchlab process writes --out, wait for it")
    sweep = sub.add_parser("sweep", help="run a study file's grid of batch sizes x learning rates x seeds; "
                           "re-run the same command to resume", epilog=SWEEP_EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep.add_argument("study", help="a TOML study file (run's field names; a list makes a field an axis)")
    sweep.add_argument("--out", help="study directory (default: runs/<study file name>); resumed if it exists")
    sweep.add_argument("--workers", default="1", help="local worker processes, one pinned core each (default 1)")
    sweep.add_argument("--executor", default="local", help="local (default) or ray")
    sweep.add_argument("--address", default=None, help="Ray cluster address HOST:PORT (default: start a local one)")
    sweep.add_argument("--wide", action="store_true", help=WIDE_HELP)
    sweep.add_argument("--no-figures", action="store_true", help="skip writing PNG figures")
    sweep.add_argument("--wait", action="store_true", help="if another batchlab process writes --out, wait for it")
    resume = sub.add_parser("resume", help="finish an interrupted study (run or sweep) exactly where it stopped",
                            epilog=RESUME_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    resume.add_argument("dir", help="a study directory written by 'batchlab run' or 'batchlab sweep'")
    resume.add_argument("--workers", default="1", help="local worker processes, one pinned core each (default 1)")
    resume.add_argument("--executor", default="local", help="local (default) or ray")
    resume.add_argument("--address", default=None, help="Ray cluster address HOST:PORT (default: start a local one)")
    resume.add_argument("--wide", action="store_true", help=WIDE_HELP)
    resume.add_argument("--no-figures", action="store_true", help="skip writing PNG figures")
    resume.add_argument("--wait", action="store_true", help="if another batchlab process writes DIR, wait for it")
    branch = sub.add_parser("branch", help="measure the critical batch size over training: branch a finished "
                            "study's kept states at k x B (Merrill et al. 2025)",
                            epilog="example:\n  batchlab run --batch-sizes 8 --epochs 20 --checkpoint-every 1 --out "
                            "runs/b8\n  batchlab branch runs/b8 --from-epochs 1,5,15 --multipliers 1,2,4,8,16,32,64 "
                            "--window-epochs 2", formatter_class=argparse.RawDescriptionHelpFormatter)
    branch.add_argument("dir", help="a study trained with --checkpoint-every K")
    branch.add_argument("--from-epochs", required=True, help="epochs to branch from, e.g. 1,5,15 (states kept there)")
    branch.add_argument("--multipliers", required=True, help="batch-size multipliers k, e.g. 1,2,4,8 (1 is the "
                        "reference branch)")
    branch.add_argument("--window-epochs", default=None, help="epochs each branch trains")
    branch.add_argument("--window-examples", default=None, help="instead: at least this many examples (whole epochs)")
    branch.add_argument("--lr-rule", default="none", help="the branch's rate: none (default, the parent's), linear "
                        "(x k) or sqrt (x sqrt k)")
    branch.add_argument("--tolerance", default=None, help="CBS tolerance on the smoothed loss (default 0.01)")
    branch.add_argument("--schedule-out", default=None, metavar="FILE", help="also write a batch-size warmup built "
                        "from CBS(t) as a study file (batchlab run --config FILE)")
    branch.add_argument("--workers", default="1", help="local worker processes, one pinned core each (default 1)")
    branch.add_argument("--executor", default="local", help="local (default) or ray")
    branch.add_argument("--address", default=None, help="Ray cluster address HOST:PORT (default: start a local one)")
    branch.add_argument("--wait", action="store_true", help="if another batchlab process writes DIR, wait for it")
    show = sub.add_parser("show", help="print the table and explanation of a study again",
                          epilog="example:\n  batchlab show runs/20261125-101500",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    show.add_argument("dir", help="a study directory")
    show.add_argument("--wide", action="store_true", help=WIDE_HELP)
    show.add_argument("--figures", action="store_true", help="also (re)write the figures and report.html")
    show.add_argument("--json", action="store_true", help="print one JSON object instead (study, runs, "
                      "steps_to_target, fit, findings, critical_batch_size; NaN as null)")
    show.add_argument("--target-metric", default="train_loss",
                      help="steps-to-target metric: train_loss (default), test_loss or test_error")
    show.add_argument("--target", default=None,
                      help="steps-to-target value (default: 1%% above the worst batch size's best value)")
    report = sub.add_parser("report", help="write a study's self-contained HTML report (no network needed to view)",
                            epilog="examples:\n  batchlab report runs/20261125-101500            writes "
                            "runs/20261125-101500/report.html\n"
                            "  batchlab report runs/20261125-101500 --out lena.html\n",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    report.add_argument("dir", help="a study directory")
    report.add_argument("--out", metavar="FILE", help="the HTML file to write (default: DIR/report.html)")
    export = sub.add_parser("export", help="export a study's runs, epochs and steps (CSV, Parquet, TensorBoard, "
                            "MLflow)", epilog="examples:\n"
                            "  batchlab export runs/20261125-101500 --format csv --to out/\n"
                            "  batchlab export runs/20261125-101500 --format parquet --to out/       "
                            "pip install 'batchlab[parquet]'\n"
                            "  batchlab export runs/20261125-101500 --format tensorboard --to tb/    "
                            "then: tensorboard --logdir tb/\n"
                            "  batchlab export runs/20261125-101500 --format mlflow --to sqlite:///mlflow.db\n",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("dir", help="a study directory")
    export.add_argument("--format", default="csv", choices=["csv", "parquet", "tensorboard", "mlflow"],
                        help="csv (default), parquet, tensorboard or mlflow")
    export.add_argument("--to", required=True, help="output directory; for mlflow a tracking URI sqlite:///FILE.db")
    export.add_argument("--max-step-points", type=int, metavar="N", help="tensorboard and mlflow: per-step losses "
                        "kept per run, min/max-decimated (default: all for tensorboard, 10000 for mlflow; 0: all)")
    diagnose = sub.add_parser("diagnose", help="rank loss curves written by other tools by noise: which most likely "
                              "came from the smallest batch?", epilog=DIAGNOSE_EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    diagnose.add_argument("files", nargs="+", metavar="FILE", help="a CSV (one curve per run where a run_id or run "
                          "column names it, as in batchlab's steps.csv), TensorBoard's CSV download, a Lightning "
                          "metrics.csv, a Keras History JSON, a TensorBoard events.out.tfevents.* file or a log "
                          "directory (one curve per run)")
    diagnose.add_argument("--column", help="CSV column or JSON key to read (default: the training loss)")
    diagnose.add_argument("--tag", help="TensorBoard scalar tag to read (default: the training loss)")
    diagnose.add_argument("--json", action="store_true", help="print one JSON object instead: curves (one record "
                          "each), smallest_batch, too_close_to_call, verdict, warnings")
    return parser


def _version() -> str:
    """The installed distribution's version (the package's `__version__`, which the layering keeps out of
    reach of the CLI)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("batchlab")
    except PackageNotFoundError:
        return "unknown"


def spec_from_args(args: argparse.Namespace):
    """Config file values first, flags override; validated by the spec."""
    from batchlab.spec import build_spec, read_toml

    values = read_toml(args.config) if args.config else {}
    flags = {field for field, _ in RUN_FLAGS.values()} | {"standardize"}
    values.update({k: v for k, v in vars(args).items() if k in flags})
    return build_spec(values)


def default_out() -> Path:
    base = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def _console(*, piped_width: int | None = None):
    """stdout. `batchlab run`/`show` lay out for the terminal's width (any of stdin, stdout, stderr; $COLUMNS),
    80 with none, also when stdout is a file (their tables keep each row on one line); `piped_width` instead
    fixes the width when stdout is not a terminal (diagnose's tables, whose cells wrap)."""
    from rich.console import Console

    width = None if piped_width is None or sys.stdout.isatty() else piped_width
    return Console(highlight=False, width=width)


def cmd_run(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    out = Path(args.out) if args.out else default_out()
    from batchlab.runner.driver import run_study

    return _train(args, out, lambda **kw: run_study(spec, out, wait=args.wait, **kw))


def cmd_sweep(args: argparse.Namespace) -> int:
    from batchlab.runner.driver import run_sweep
    from batchlab.spec import read_toml
    from batchlab.sweep import build_sweep

    sweep = build_sweep(read_toml(args.study))
    out = Path(args.out) if args.out else Path("runs") / Path(args.study).stem
    workers = _workers(args)
    return _train(args, out, lambda **kw: run_sweep(sweep, out, resume=True, workers=workers,
                                                     executor=args.executor, address=args.address, wait=args.wait,
                                                     **kw))


def cmd_resume(args: argparse.Namespace) -> int:
    from batchlab.runner.driver import resume_study

    out = Path(args.dir)
    workers = _workers(args)
    return _train(args, out, lambda **kw: resume_study(out, workers=workers, executor=args.executor,
                                                       address=args.address, wait=args.wait, **kw))


def _int_list(field: str, text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in str(text).split(","))
    except ValueError:
        raise BatchlabError(f"{field}: got {text!r}; allowed: integers separated by commas, e.g. 1,2,4") from None


def _optional_int(field: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise BatchlabError(f"{field}: got {text!r}; allowed: an integer >= 1") from None


def cmd_branch(args: argparse.Namespace) -> int:
    """Train the branches, then print the critical batch size at each branch point."""
    from batchlab.analysis.cbs import DEFAULT_TOLERANCE, cbs_text
    from batchlab.runner.branch import branch_study
    from batchlab.runner.interrupt import stop_on_interrupt
    from batchlab.runner.progress import default_progress
    from batchlab.study_data import StudyData

    from_epochs, multipliers = _int_list("from_epochs", args.from_epochs), _int_list("multipliers", args.multipliers)
    tolerance = DEFAULT_TOLERANCE if args.tolerance is None else _tolerance(args.tolerance)
    workers = _workers(args)
    with stop_on_interrupt() as stop, default_progress() as progress:
        result = branch_study(args.dir, from_epochs=from_epochs, multipliers=multipliers,
                              window_epochs=_optional_int("window_epochs", args.window_epochs),
                              window_examples=_optional_int("window_examples", args.window_examples),
                              lr_rule=args.lr_rule, wait=args.wait, workers=workers, executor=args.executor,
                              address=args.address, progress=progress, should_stop=stop)
    for line in result.failures:
        print(f"batchlab branch: error: {line}", file=sys.stderr)
    if not result.completed:
        print(f"Not finished: the branches trained so far are kept in {args.dir}; the same command continues.",
              file=sys.stderr)
        return stop.exit_code or 1
    data = StudyData.load(args.dir)
    print(cbs_text(data, tolerance=tolerance))
    if args.schedule_out:
        _write_schedule(data, Path(args.schedule_out), tolerance=tolerance, lr_rule=args.lr_rule)
    return 0


def _write_schedule(data, path: Path, *, tolerance: float, lr_rule: str) -> None:
    """The warmup study file from CBS(t) (see `batchlab.analysis.cbs.warmup_schedule`)."""
    from batchlab.analysis.cbs import critical_batch_sizes, schedule_study, warmup_schedule
    from batchlab.store.db import check_outside_study

    check_outside_study("schedule_out", path, data.directory)
    rows = critical_batch_sizes(data.branches, data.epochs, tolerance=tolerance)
    parent = next(s for s in data.summaries if s.run_id == data.branches[0]["parent_run_id"])
    milestones, sizes = warmup_schedule(rows, parent.batch_size)
    text = schedule_study(data.meta["spec"], milestones, sizes, base_batch_size=parent.batch_size, lr=parent.lr,
                          lr_rule=lr_rule)
    path.write_text(text)
    print(f"Batch-size warmup from CBS(t): {parent.batch_size:,}"
          + "".join(f" -> {b:,} after epoch {m}" for m, b in zip(milestones, sizes)) + f"; study file {path}")


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise BatchlabError(f"tolerance: got {text!r}; allowed: a number in (0, 1), e.g. 0.01")
    return value


def _workers(args: argparse.Namespace) -> int:
    from batchlab.runner.driver import check_executor

    try:
        workers = int(args.workers)
    except ValueError:
        raise BatchlabError(f"workers: got {args.workers!r}; allowed: an integer >= 1") from None
    check_executor(args.executor, workers, args.address)
    return workers


def _train(args: argparse.Namespace, out: Path, train) -> int:
    """Train with a progress bar, stopping at an epoch boundary on Ctrl-C, SIGTERM or SIGHUP; then show the study
    (figures only when it ran to its end) and say how it ended. Returns the exit code."""
    from batchlab.runner.interrupt import stop_on_interrupt
    from batchlab.runner.progress import default_progress
    from batchlab.store.db import study_exists

    with stop_on_interrupt() as stop, default_progress() as progress:
        result = train(progress=progress, should_stop=stop)
    if not study_exists(out):  # stopped while waiting for another writer's lock
        return stop.exit_code or 1
    if stop.signum is None or stop.exit_code == 130:
        _show(out, figures=not args.no_figures and result.completed, wide=args.wide)
    for line in result.failures:
        print(f"batchlab {args.command}: error: {line}", file=sys.stderr)
    if result.completed:
        return 0
    if stop.signum is not None:
        what = "Ctrl-C" if stop.exit_code == 130 else signal.Signals(stop.signum).name
        print(f"Interrupted ({what}): finished epochs are kept in {out}; batchlab resume {out} finishes it.",
              file=sys.stderr)
        return stop.exit_code
    print(f"Not finished: {len(result.failures)} group(s) failed; the others are kept in {out}; "
          f"batchlab resume {out} tries the failed ones again.", file=sys.stderr)
    return 1


def _show(directory: Path, *, figures: bool, target_metric: str = "train_loss", target: float | None = None,
          wide: bool = False) -> None:
    from batchlab.report.tables import print_tables
    from batchlab.results import StudyResults

    results = StudyResults.load(directory)
    console = _console()
    print_tables(console, results.tables(width=console.width, wide=wide, plain=not console.is_terminal))
    optimal = results.optimal_lr_table()
    if optimal is not None:  # a sweep over rates and batch sizes: the best rate per batch size, and its fits
        console.print(optimal)
        console.print()
    # paths below are never wrapped (they are copied and pasted)
    console.print(results.explanation(target_metric=target_metric, target=target), markup=False)
    console.print()
    if results.branches:  # `batchlab branch` ran: the critical batch size over training
        from batchlab.analysis.cbs import cbs_text

        console.print(cbs_text(results), markup=False)
        console.print()
    if figures:
        paths, report = results.write_figures_and_report()
        console.print(f"Figures: {len(paths)} PNG files in {directory / 'figures'}", soft_wrap=True, markup=False)
        console.print(f"Report: {report}", soft_wrap=True, markup=False)
    console.print(f"Study: {directory}", soft_wrap=True, markup=False)
    console.print("Again: batchlab show DIR; its tables as files: batchlab export DIR --to OUT", markup=False)


def cmd_show(args: argparse.Namespace) -> int:
    from batchlab.analysis.study import TARGET_METRICS

    if args.target_metric not in TARGET_METRICS:
        raise BatchlabError(f"target_metric: got {args.target_metric!r}; allowed: {', '.join(TARGET_METRICS)}")
    try:
        target = None if args.target is None else float(args.target)
    except ValueError:
        target = math.nan
    if target is not None and not math.isfinite(target):
        raise BatchlabError(f"target: got {args.target!r}; allowed: a finite number")
    if args.json:
        import json

        from batchlab.report.summary import study_document
        from batchlab.study_data import StudyData

        document = study_document(StudyData.load(Path(args.dir)), target_metric=args.target_metric, target=target)
        print(json.dumps(document, indent=2, allow_nan=False))
        return 0
    _show(Path(args.dir), figures=args.figures, target_metric=args.target_metric, target=target, wide=args.wide)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from batchlab.report.html import write_report
    from batchlab.results import StudyResults

    print(write_report(StudyResults.load(args.dir), Path(args.out) if args.out else None))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from batchlab.interop.export import export

    written = export(args.dir, format=args.format, to=args.to, max_step_points=args.max_step_points)
    for line in written if isinstance(written, list) else written.describe():
        print(line)
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    import json

    from batchlab.analysis.diagnose import diagnose
    from batchlab.interop.logs import read_loss_histories
    from batchlab.report.diagnose import curve_table, diagnosis_document, diagnosis_warnings, verdict

    histories = [h for f in args.files for h in read_loss_histories(f, column=args.column, tag=args.tag)]
    result = diagnose([h.loss for h in histories])
    for line in diagnosis_warnings(histories):
        print(f"batchlab diagnose: warning: {line}", file=sys.stderr)
    if args.json:
        print(json.dumps(diagnosis_document(histories, result), indent=2))
        return 0
    console = _console(piped_width=200)
    for h, noise, rank in zip(histories, result.noise, result.ranks, strict=True):
        console.print(curve_table(h, noise, rank=rank, n_curves=len(histories), n_tied=result.ranks.count(rank)))
        console.print()
    console.print(verdict(histories, result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command is None:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
        return 2
    if unknown:  # argparse would blame the top-level parser; the flags belong to the subcommand
        _subcommand_parser(parser, args.command).error(f"unrecognized arguments: {' '.join(unknown)}")
    with warnings.catch_warnings():  # restores the warning display on return (main is also called in-process)
        warnings.showwarning = _one_line_warnings(args.command, warnings.showwarning)
        try:
            return {"run": cmd_run, "sweep": cmd_sweep, "resume": cmd_resume, "show": cmd_show,
                    "report": cmd_report, "export": cmd_export, "diagnose": cmd_diagnose,
                    "branch": cmd_branch}[args.command](args)
        except BatchlabError as e:
            print(f"batchlab {args.command}: error: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            error = environment_error(e)  # a full disk, an unwritable path: one line
            if error is None:
                raise
            print(f"batchlab {args.command}: error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as e:
            print("batchlab: aborted", file=sys.stderr)
            return 128 + getattr(e, "signum", signal.SIGINT)


TRAINING_COMMANDS = ("run", "sweep", "resume", "branch")
"""The commands that train, and so start again with huge pages (:mod:`batchlab.runner.allocator`)."""


def entry() -> int:
    """The `batchlab` command: a training command first restarts itself with glibc's huge-page tunable where that
    helps (a quarter less training time for large vmapped groups), then :func:`main` runs."""
    if len(sys.argv) > 1 and sys.argv[1] in TRAINING_COMMANDS:
        from batchlab.runner.allocator import restart_with_huge_pages

        restart_with_huge_pages()
    return main()


def _subcommand_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def _one_line_warnings(command: str, show_other):
    """A `warnings.showwarning` that prints a BatchlabWarning as one line on stderr (others as before)."""

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, BatchlabWarning):
            print(f"batchlab {command}: warning: {message}", file=sys.stderr)
        else:
            show_other(message, category, filename, lineno, file, line)

    return show


if __name__ == "__main__":
    sys.exit(entry())
