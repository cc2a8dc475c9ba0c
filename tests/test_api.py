"""The Python API (`import batchlab`): build, run and open a tiny real study, its DataFrames, figures, report and
reprs, compared with the store it wrote."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import batchlab
from batchlab.errors import BatchlabError
from batchlab.store.db import EPOCH_FIELDS, SHARPNESS_FIELDS, Store
from batchlab.store.tables import ADAM_COLUMNS, BRANCH_FIELDS, CURVATURE_FIELDS, RUN_FIELDS, SUMMARY_FIELDS

pytestmark = [pytest.mark.filterwarnings(f"ignore::DeprecationWarning:{m}") for m in ("pandas.*", "polars.*")]

TINY = {"dataset": "iris", "batch_sizes": [1, "full"], "epochs": 2, "device": "cpu"}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """batchlab.run on iris (N = 120 train), batch sizes 1 and full, 2 epochs; the directory name needs escaping."""
    out = tmp_path_factory.mktemp("api") / "iris <b>&amp;"
    return batchlab.run(batchlab.make_study(**TINY), out=out, progress=False)


@pytest.fixture(scope="module")
def stored(results):
    store = Store.open(results.directory)
    try:
        runs = store.runs()
        return {"runs": runs, "epochs": {r["run_id"]: store.epochs(r["run_id"]) for r in runs},
                "steps": {r["run_id"]: store.step_losses(r["run_id"]) for r in runs}}
    finally:
        store.close()


def key(results) -> list[tuple]:
    """What identifies a study's results (RunSummary holds NaN noise values, so == between copies is False)."""
    return [(s.run_id, s.lr, s.status, s.total_updates, s.final_test_loss) for s in results.summaries]


# ---------------------------------------------------------------------------------------------------------
# The surface


def test_every_public_name_resolves_and_is_documented():
    for name in batchlab.__all__:
        obj = getattr(batchlab, name)
        assert obj.__doc__, name
    for name in ("make_study", "load_study", "run", "open"):
        assert "Example::" in getattr(batchlab, name).__doc__, name
    assert "batchlab.run(spec" in batchlab.__doc__ and set(batchlab.__all__) <= set(dir(batchlab))


def test_make_study_is_not_shadowed_by_the_driver_module():
    """`batchlab.runner.driver` runs studies; importing it must not hide the API's builder or `batchlab.run`."""
    import batchlab.runner.driver

    assert batchlab.runner.driver.__name__ == "batchlab.runner.driver"

    assert callable(batchlab.make_study) and batchlab.make_study(**TINY).dataset == "iris"


def test_import_batchlab_and_building_a_study_import_nothing_heavy(tmp_path):
    code = ("import sys, batchlab\n"
            "heavy = ('jax', 'numpy', 'pandas', 'polars', 'pyarrow', 'matplotlib', 'mlflow', 'tensorboard')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
            "spec = batchlab.make_study(dataset='wine', batch_sizes=[1, 16, 'full'], epochs=20)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy and m.split('.')[0] != 'numpy'))\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "[]\n[]\n"


def test_make_study_gives_a_spec_or_a_sweep():
    spec = batchlab.make_study(dataset="wine", batch_sizes=[1, 16, "full"], epochs=20)
    assert isinstance(spec, batchlab.StudySpec)
    assert (spec.dataset, spec.batch_sizes, spec.epochs) == ("wine", (1, 16, "full"), 20)
    sweep = batchlab.make_study(dataset="wine", batch_sizes=[1, "full"], lr=[0.01, 0.03], seeds=2)
    assert isinstance(sweep, batchlab.Sweep)
    assert [p.lr for p in sweep.points()] == [0.01, 0.03]
    assert repr(sweep) == "Sweep(2 points x 2 batch sizes x 2 seeds; lr=[0.01, 0.03])"


@pytest.mark.parametrize(("fields", "message"), [
    ({"batch_sizes": [0]}, "batch_sizes: got [0]; allowed: integers >= 1"),
    ({"epochs": 0}, "epochs: got 0; allowed:"),
    ({"learning_rate": 0.1}, "learning_rate: unknown field"),
])
def test_make_study_rejects_bad_fields_by_name(fields, message):
    with pytest.raises(BatchlabError) as e:
        batchlab.make_study(**fields)
    assert str(e.value).startswith(message)


def test_load_study_reads_the_same_study_from_toml(tmp_path):
    (tmp_path / "study.toml").write_text('dataset = "wine"\nbatch_sizes = [1, 16, "full"]\nepochs = 20\n'
                                         'lr = [0.01, 0.1]\n')
    loaded = batchlab.load_study(tmp_path / "study.toml")
    made = batchlab.make_study(dataset="wine", batch_sizes=[1, 16, "full"], epochs=20, lr=[0.01, 0.1])
    assert loaded == made and loaded.fingerprint() == made.fingerprint()
    with pytest.raises(BatchlabError, match="^config: "):
        batchlab.load_study(tmp_path / "nothere.toml")


# ---------------------------------------------------------------------------------------------------------
# Running and opening


def test_run_returns_the_finished_study(results, stored):
    assert isinstance(results, batchlab.StudyResults)
    assert [s.status for s in results.summaries] == ["completed", "completed"]
    assert sorted(s.batch_size for s in results.summaries) == [1, 120]
    assert sum(r["total_updates"] for r in stored["runs"]) == 2 * 120 + 2 * 1
    opened = batchlab.open(results.directory)
    assert key(opened) == key(results) and opened.directory == results.directory


def test_run_refuses_a_spec_into_an_existing_study_and_a_non_spec(results, tmp_path):
    with pytest.raises(BatchlabError, match="^out: .* already holds a study"):
        batchlab.run(batchlab.make_study(**TINY), out=results.directory, progress=False)
    with pytest.raises(BatchlabError, match="^spec: got 'dict'; allowed: a StudySpec or a Sweep"):
        batchlab.run(dict(TINY), out=tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_run_reports_progress_to_an_object_and_a_sweep_resumes(tmp_path):
    class Recorder:
        def __init__(self):
            self.events = []

        def start_group(self, group_id, **kw):
            self.events.append(("start", kw["batch_size"], kw["epochs"]))

        def epoch_done(self, group_id, *, epoch, **kw):
            self.events.append(("epoch", epoch))

        def end_group(self, group_id):
            self.events.append(("end",))

    sweep = batchlab.make_study(dataset="iris", batch_sizes=["full"], epochs=2, lr=[0.01, 0.1], device="cpu")
    recorder = Recorder()
    first = batchlab.run(sweep, out=tmp_path / "sweep", progress=recorder)
    assert recorder.events == [("start", 120, 2), ("epoch", 1), ("epoch", 2), ("end",)]  # both lrs: one group
    assert sorted(s.lr for s in first.summaries) == [0.01, 0.1]
    again = Recorder()
    second = batchlab.run(sweep, out=tmp_path / "sweep", progress=again)
    assert again.events == [] and key(second) == key(first)  # nothing left to train


# ---------------------------------------------------------------------------------------------------------
# DataFrames


def test_runs_df_equals_the_store(results, stored):
    df = results.runs_df()
    assert list(df.columns) == [*RUN_FIELDS, *BRANCH_FIELDS, *CURVATURE_FIELDS, *SUMMARY_FIELDS, *ADAM_COLUMNS]
    assert len(df) == len(stored["runs"])
    for i, r in enumerate(stored["runs"]):
        for field in ("run_id", "batch_size", "lr", "seed", "status", "total_updates", "wall_time_s"):
            assert df[field].iloc[i] == r[field], field
    assert df["diverged_epoch"].isna().all() and str(df["diverged_epoch"].dtype) == "Int64"


def test_epochs_and_steps_df_equal_the_store(results, stored):
    epochs, steps = results.epochs_df(), results.steps_df()
    assert list(epochs.columns) == ["run_id", *EPOCH_FIELDS, *SHARPNESS_FIELDS]
    assert list(steps.columns) == ["run_id", "step", "epoch", "batch_loss"]
    for r in stored["runs"]:
        mine = epochs[epochs.run_id == r["run_id"]]
        for field in EPOCH_FIELDS:
            np.testing.assert_array_equal(mine[field].to_numpy(float), stored["epochs"][r["run_id"]][field])
        step_epoch, losses = stored["steps"][r["run_id"]]
        mine = steps[steps.run_id == r["run_id"]]
        assert mine.step.tolist() == list(range(1, r["total_updates"] + 1))
        assert mine.epoch.tolist() == step_epoch.tolist()
        np.testing.assert_array_equal(mine.batch_loss.to_numpy(), losses.astype(float))


def test_polars_frames_equal_the_pandas_frames_with_null_for_missing(results):
    import polars as pl

    frames = results.to_polars()
    assert set(frames) == {"runs", "epochs", "steps"}
    assert isinstance(results.epochs_df(format="polars"), pl.DataFrame)
    pandas_frames = results.to_pandas()
    for name, frame in frames.items():
        expected = pandas_frames[name]
        assert frame.columns == list(expected.columns) and frame.height == len(expected), name
    epochs = frames["epochs"]
    not_measured = int(pandas_frames["epochs"]["b_simple"].isna().sum())
    assert epochs["b_simple"].null_count() == not_measured and epochs["b_simple"].is_nan().sum() == 0
    np.testing.assert_array_equal(epochs["test_loss"].to_numpy(), pandas_frames["epochs"]["test_loss"].to_numpy())


@pytest.mark.parametrize(("library", "method"), [("pandas", "runs_df"), ("polars", "to_polars")])
def test_a_missing_dataframe_library_is_one_line_naming_the_extra(results, monkeypatch, library, method):
    monkeypatch.setitem(sys.modules, library, None)
    with pytest.raises(BatchlabError) as e:
        getattr(results, method)() if method == "to_polars" else results.runs_df(format=library)
    assert str(e.value) == (f"a {library} DataFrame needs the {library} package, which is not installed; "
                            f"HINT: pip install 'batchlab[{library}]'")


def test_an_unknown_dataframe_format_is_refused(results):
    with pytest.raises(BatchlabError, match=r"^format: got 'excel'; allowed: pandas, polars$"):
        results.runs_df(format="excel")


# ---------------------------------------------------------------------------------------------------------
# Figures, report, export, reprs


def test_figure_draws_one_png(results, tmp_path):
    overlay = results.figure("overlay")
    assert overlay == results.directory / "figures" / "overlay.png"
    run_id = results.summaries[0].run_id
    lena = results.figure("lena", run_id=run_id, path=tmp_path / "lena.png")
    for path in (overlay, lena, results.figure("cost", path=tmp_path / "cost.png")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path._repr_png_() == path.read_bytes()  # a notebook cell ending with it shows the image
    assert overlay.parent._repr_png_() is None  # a directory is shown as a path
    with pytest.raises(BatchlabError, match="^figure: got 'loss'; allowed: lena, overlay, cost, scaling, sharpness$"):
        results.figure("loss")
    with pytest.raises(BatchlabError, match="^run_id: got 'nope'"):
        results.figure("lena", run_id="nope")


def test_write_report_and_export_delegate(results, tmp_path):
    report = results.write_report(tmp_path / "r.html")
    assert report == tmp_path / "r.html" and "Plotly.newPlot" in report.read_text()
    paths = results.export("csv", tmp_path / "csv")
    assert [p.name for p in paths] == ["runs.csv", "epochs.csv", "steps.csv"]


def test_reprs_name_the_study_and_show_its_runs_escaped(results):
    assert repr(results) == f"StudyResults({str(results.directory)!r}, runs=2)"
    html = results._repr_html_()
    assert html.count("<tr>") == 3 and "<table>" in html  # header and two runs
    for s in results.summaries:
        assert f"<td>{s.run_id}</td>" in html and f"<td>{s.total_updates:,}</td>" in html
    assert "iris &lt;b&gt;&amp;amp;" in html and "<b>&amp;" not in html
    assert "final test acc" in html


def test_the_cli_and_the_python_api_give_bit_identical_epochs_and_the_same_run_ids(tmp_path):
    """Issue 9: the library, not the CLI, decides how training uses the CPU. `batchlab run` and, in a process
    that had already used JAX (a notebook), make_study + run give the same run ids and bit-identical epochs."""
    cli_out, api_out = tmp_path / "cli", tmp_path / "api"
    flags = ["--dataset", "wine", "--batch-sizes", "1,16,full", "--epochs", "4", "--seeds", "2", "--hidden", "64"]
    p = subprocess.run([sys.executable, "-m", "batchlab.cli", "run", *flags, "--out", str(cli_out), "--no-figures"],
                       capture_output=True, text=True, check=False, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    code = ("import jax, jax.numpy as jnp, batchlab\n"
            "jnp.ones((64, 64)).sum().block_until_ready()  # JAX's CPU backend starts before batchlab runs\n"
            "spec = batchlab.make_study(dataset='wine', batch_sizes=[1, 16, 'full'], epochs=4, seeds=2, hidden=[64])\n"
            f"batchlab.run(spec, out={str(api_out)!r}, progress=False)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    stores = [Store.open(d) for d in (cli_out, api_out)]
    try:
        ids = [sorted(r["run_id"] for r in s.runs()) for s in stores]
        assert ids[0] == ids[1] and len(ids[0]) == 6
        for run_id in ids[0]:
            a, b = (s.epochs(run_id) for s in stores)
            for field in ("train_loss", "test_loss", "train_acc", "test_acc", "b_simple", "grad_sq_norm"):
                np.testing.assert_array_equal(a[field], b[field], err_msg=f"{run_id} {field}")
            np.testing.assert_array_equal(stores[0].step_losses(run_id)[1], stores[1].step_losses(run_id)[1])
    finally:
        for s in stores:
            s.close()
