"""The Python API: build a study, run it, open its results. Thin wrappers over `spec`, `sweep`, `run.driver` and
`results`, as the `batchlab` command is; each is re-exported by `import batchlab`.

Example (a notebook or a script; a few seconds on a CPU)::

    import batchlab

    spec = batchlab.make_study(dataset="wine", batch_sizes=[1, 16, "full"], epochs=20, seeds=2)
    results = batchlab.run(spec, out="runs/wine")        # a progress bar on stderr; returns StudyResults
    print(results.explanation())
    runs = results.runs_df()                              # pandas (pip install 'batchlab[pandas]')
    epochs = results.epochs_df(format="polars")           # polars (pip install 'batchlab[polars]')
    results.figure("overlay")                             # runs/wine/figures/overlay.png
    results.write_report()                                # runs/wine/report.html
    results.export("tensorboard", "runs/wine-tb")         # or "csv", "parquet", "mlflow" (to="sqlite:///x.db")

    results = batchlab.open("runs/wine")                  # later: the finished study again
    sweep = batchlab.load_study("sweep.toml")             # a study file; a list makes a field an axis

Nothing heavy is imported until a study is built or run: JAX only when training starts.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchlab.errors import invalid
from batchlab.spec import StudySpec, read_toml

if TYPE_CHECKING:
    from batchlab.results import StudyResults
    from batchlab.runner.progress import Progress
    from batchlab.sweep import Sweep


def make_study(**fields: Any) -> StudySpec | Sweep:
    """A validated study from keyword arguments: the `batchlab run` flags' names with dashes as underscores.

    Returns a StudySpec, or a Sweep when a field that may vary (lr, optimizer, hidden, ...; see
    `batchlab.sweep.AXES`) is given a list of values. Raises BatchlabError naming the first bad field.

    Example::

        spec = batchlab.make_study(dataset="wine", batch_sizes=[1, 16, "full"], epochs=20)
        sweep = batchlab.make_study(dataset="digits", batch_sizes=[1, 32, "full"], lr=[0.01, 0.03, 0.1], seeds=3)
    """
    from batchlab.sweep import build_sweep

    sweep = build_sweep(fields)
    return sweep if sweep.axes else sweep.base


def load_study(path: str | Path) -> StudySpec | Sweep:
    """A validated study from a TOML file (`batchlab run --config` and `batchlab sweep` files alike).

    Example::

        # study.toml:  dataset = "wine"   batch_sizes = [1, 16, "full"]   epochs = 20   (one per line)
        spec = batchlab.load_study("study.toml")
    """
    return make_study(**read_toml(path))


def run(spec: StudySpec | Sweep, *, out: str | Path, resume: bool = False, overwrite: bool = False,
        workers: int = 1, executor: str = "local", address: str | None = None,
        progress: bool | Progress = True) -> StudyResults:
    """Train every run of `spec` into the directory `out` and return its results.

    A StudySpec needs a new `out` (like `batchlab run`), unless `resume=True` (finish what an interrupted call of
    the same spec left there, exactly as if it had not stopped; a finished study is just opened) or
    `overwrite=True` (delete the study in `out` and train again): the way to re-run a notebook cell. A Sweep always
    resumes (like `batchlab sweep`), unless `overwrite=True`. `workers` > 1 trains batch-size groups in that many
    local processes; `executor="ray"` sends them to the Ray cluster at `address`. `progress=True` shows a bar per
    group on stderr (plain lines where it is not a terminal, and in a notebook without ipywidgets); False shows
    nothing; an object with the `batchlab.runner.progress.Progress` methods receives the events instead. An
    interrupt (Ctrl-C, a notebook's stop button, SIGTERM) stops after the current epoch and keeps every finished
    epoch. Only one process writes a study at a time: another one writing `out` is an error.

    Example::

        spec = batchlab.make_study(dataset="iris", epochs=5)
        results = batchlab.run(spec, out="runs/iris", progress=False, resume=True)   # safe to run again
        results.summaries[0].final_test_loss
    """
    from batchlab.results import StudyResults
    from batchlab.runner.driver import run_study, run_sweep
    from batchlab.runner.interrupt import stop_on_interrupt
    from batchlab.sweep import Sweep

    if not isinstance(spec, StudySpec | Sweep):
        raise invalid("spec", type(spec).__name__, "a StudySpec or a Sweep, from batchlab.make_study(...) or "
                      "batchlab.load_study(path)")
    with stop_on_interrupt() as should_stop, _progress(progress) as shown:
        kwargs = {"workers": workers, "executor": executor, "address": address, "progress": shown,
                  "should_stop": should_stop, "overwrite": overwrite}
        if isinstance(spec, Sweep):
            run_sweep(spec, out, resume=not overwrite, **kwargs)
        else:
            run_study(spec, out, resume=resume, **kwargs)
    return StudyResults.load(out)


def open(directory: str | Path) -> StudyResults:  # batchlab.open, as tarfile.open: shadows the builtin here only
    """A finished (or interrupted) study directory, read back: tables, DataFrames, figures, report, exports.

    Example::

        results = batchlab.open("runs/wine")
        results.epochs_df().groupby("run_id").test_loss.min()
    """
    from batchlab.results import StudyResults

    return StudyResults.load(directory)


def _progress(progress: bool | Progress):
    if progress is True:
        from batchlab.runner.progress import default_progress

        return default_progress()
    return nullcontext(progress or None)
