"""`batchlab export`: every format read back with its own library's reader and compared with the store.

CSV and Parquet are read with csv and pyarrow, TensorBoard event files with TensorBoard's EventAccumulator, and
MLflow runs with MlflowClient on the sqlite tracking database. The study is the session's wine study (batch
sizes 1 and full, 12 epochs, 2 seeds; the gradient noise scale measured at epochs 0, 10 and 12).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from batchlab import cli
from batchlab.errors import BatchlabError
from batchlab.interop.export.common import run_names, step_wall_times
from batchlab.store.db import EPOCH_FIELDS, SHARPNESS_FIELDS, Store
from batchlab.store.tables import ADAM_COLUMNS, BRANCH_FIELDS, CURVATURE_FIELDS, RUN_FIELDS, SUMMARY_FIELDS

THIRD_PARTY_DEPRECATIONS = [pytest.mark.filterwarnings(f"ignore::DeprecationWarning:{m}")
                            for m in ("sqlalchemy.*", "alembic.*", "mlflow.*", "google.*", "tensorboard.*")]
pytestmark = THIRD_PARTY_DEPRECATIONS


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def stored(wine_study):
    """What the store holds: runs, per-epoch arrays and per-step losses per run."""
    store = Store.open(wine_study)
    try:
        runs = store.runs()
        return {"runs": runs, "epochs": {r["run_id"]: store.epochs(r["run_id"]) for r in runs},
                "steps": {r["run_id"]: store.step_losses(r["run_id"]) for r in runs}, "metrics": store.run_metrics()}
    finally:
        store.close()


def export_cli(*args: str | Path, capsys) -> tuple[int, str, str]:
    code = cli.main(["export", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_study_measured_the_noise_scale_at_some_epochs_only(stored):
    """The fixture's premise: b_simple is missing at some epochs, so 'where measured' is tested."""
    b = stored["epochs"][stored["runs"][0]["run_id"]]["b_simple"]
    assert 0 < np.isfinite(b).sum() < len(b)


# ---------------------------------------------------------------------------------------------------------
# CSV and Parquet


@pytest.fixture(scope="module")
def tables_dir(wine_study, tmp_path_factory):
    before = snapshot(wine_study)
    out = tmp_path_factory.mktemp("tables")
    assert cli.main(["export", str(wine_study), "--format", "csv", "--to", str(out)]) == 0
    assert cli.main(["export", str(wine_study), "--format", "parquet", "--to", str(out)]) == 0
    assert snapshot(wine_study) == before
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def read_parquet(path: Path) -> dict[str, list]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pydict()


def test_parquet_has_the_csv_columns_and_rows(tables_dir):
    for name in ("runs", "epochs", "steps"):
        rows, table = read_csv(tables_dir / f"{name}.csv"), read_parquet(tables_dir / f"{name}.parquet")
        assert list(table) == list(rows[0]), name
        assert all(len(v) == len(rows) for v in table.values()), name
    assert list(read_parquet(tables_dir / "runs.parquet")) == [*RUN_FIELDS, *BRANCH_FIELDS, *CURVATURE_FIELDS,
                                                               *SUMMARY_FIELDS, *ADAM_COLUMNS]
    assert list(read_parquet(tables_dir / "epochs.parquet")) == ["run_id", *EPOCH_FIELDS, *SHARPNESS_FIELDS]


def test_parquet_runs_equal_the_store_with_typed_columns(tables_dir, stored):
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(tables_dir / "runs.parquet")
    assert schema.field("batch_size").type == pa.int64() and schema.field("lr").type == pa.float64()
    assert schema.field("diverged_epoch").type == pa.int64() and schema.field("status").type == pa.string()
    table = read_parquet(tables_dir / "runs.parquet")
    for i, r in enumerate(stored["runs"]):
        for field in RUN_FIELDS:
            expected = json.dumps(r[field], sort_keys=True) if field in ("config", "versions") else r[field]
            assert table[field][i] == expected, field
    assert table["diverged_epoch"] == [None] * len(stored["runs"])  # null, not NaN or 0


def test_runs_csv_carries_the_end_of_training_curvature(tables_dir, stored):
    """Issue 11: hessian_top_eigenvalue, hessian_trace (and its stderr, convergence, iterations) in runs.csv and
    runs.parquet, equal to the store's end-of-training measurements."""
    rows, table = read_csv(tables_dir / "runs.csv"), read_parquet(tables_dir / "runs.parquet")
    metrics = stored["metrics"]
    assert metrics and all(m for m in metrics.values())
    for i, r in enumerate(stored["runs"]):
        m = metrics[r["run_id"]]
        for column, name in CURVATURE_FIELDS.items():
            assert float(rows[i][column]) == pytest.approx(m[name], rel=1e-12), column
            assert table[column][i] == m[name], column
        assert table["hessian_converged"][i] == 1.0 and table["hessian_top_eigenvalue"][i] > 0


def test_parquet_epochs_and_steps_equal_the_store_and_the_csv(tables_dir, stored):
    epochs, epoch_rows = read_parquet(tables_dir / "epochs.parquet"), read_csv(tables_dir / "epochs.csv")
    steps, step_rows = read_parquet(tables_dir / "steps.parquet"), read_csv(tables_dir / "steps.csv")
    for r in stored["runs"]:
        rid = r["run_id"]
        mine = [i for i, x in enumerate(epochs["run_id"]) if x == rid]
        for field in EPOCH_FIELDS:
            expected = stored["epochs"][rid][field]
            got = np.array([np.nan if epochs[field][i] is None else epochs[field][i] for i in mine], float)
            np.testing.assert_array_equal(got, expected, err_msg=field)  # NaN (not measured) <-> null
            from_csv = np.array([float(epoch_rows[i][field] or "nan") for i in mine])
            np.testing.assert_array_equal(from_csv, expected, err_msg=field)
        step_epoch, losses = stored["steps"][rid]
        mine = [i for i, x in enumerate(steps["run_id"]) if x == rid]
        assert len(mine) == r["total_updates"] == len(losses)
        assert [steps["step"][i] for i in mine] == list(range(1, len(losses) + 1))
        assert [steps["epoch"][i] for i in mine] == step_epoch.tolist()
        np.testing.assert_array_equal([steps["batch_loss"][i] for i in mine], losses.astype(float))
        np.testing.assert_array_equal([float(step_rows[i]["batch_loss"]) for i in mine], losses.astype(float))


# ---------------------------------------------------------------------------------------------------------
# TensorBoard


@pytest.fixture(scope="module")
def tb_dir(wine_study, tmp_path_factory):
    out = tmp_path_factory.mktemp("tb") / "logs"
    assert cli.main(["export", str(wine_study), "--format", "tensorboard", "--to", str(out)]) == 0
    return out


def accumulate(path: Path):
    """TensorBoard's own reader, keeping every point (its default keeps a sample of 1,000 per tag)."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(path), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    return acc


def test_tensorboard_has_one_readably_named_run_per_run(tb_dir, stored):
    sizes = sorted({r["batch_size"] for r in stored["runs"]})
    assert sizes == [1, 142]
    expected = {f"bs{b}_lr0.03_seed{s}" for b in sizes for s in (0, 1)}
    assert {p.name for p in tb_dir.iterdir() if p.is_dir()} == expected
    assert set(run_names(stored["runs"]).values()) == expected


def test_tensorboard_scalars_per_step_equal_the_stored_minibatch_losses(tb_dir, stored):
    names = run_names(stored["runs"])
    for r in stored["runs"]:
        events = accumulate(tb_dir / names[r["run_id"]]).Scalars("step/batch_loss")
        _, losses = stored["steps"][r["run_id"]]
        assert len(events) == r["total_updates"] == len(losses)
        assert [e.step for e in events] == list(range(1, len(losses) + 1))
        np.testing.assert_array_equal(np.array([e.value for e in events], np.float32), losses)


def test_tensorboard_scalars_per_epoch_equal_the_store_where_measured(tb_dir, stored):
    names = run_names(stored["runs"])
    for r in stored["runs"]:
        acc = accumulate(tb_dir / names[r["run_id"]])
        e = stored["epochs"][r["run_id"]]
        for field in ("train_loss", "test_loss", "train_acc", "test_acc", "b_simple"):
            events = acc.Scalars(f"epoch/{field}")
            measured = np.isfinite(e[field])
            assert [x.step for x in events] == e["epoch"][measured].tolist(), field
            np.testing.assert_array_equal([x.value for x in events], e[field][measured].astype(np.float32))
        assert len(acc.Scalars("epoch/train_loss")) == r["epochs_done"] + 1  # epoch 0: before training


def test_tensorboard_has_the_end_of_training_curvature(tb_dir, stored):
    names = run_names(stored["runs"])
    for r in stored["runs"]:
        acc = accumulate(tb_dir / names[r["run_id"]])
        for column, name in CURVATURE_FIELDS.items():
            [event] = acc.Scalars(f"end/{column}")
            assert event.step == r["epochs_done"]
            assert event.value == np.float32(stored["metrics"][r["run_id"]][name]), column


def test_tensorboard_wall_times_are_the_run_start_plus_training_time(tb_dir, stored):
    r = stored["runs"][0]
    acc = accumulate(tb_dir / run_names(stored["runs"])[r["run_id"]])
    e = stored["epochs"][r["run_id"]]
    last_step = acc.Scalars("step/batch_loss")[-1]
    assert last_step.wall_time == pytest.approx(r["created_at"] + e["wall_time_s"][-1], abs=1e-3)
    epoch_times = [x.wall_time for x in acc.Scalars("epoch/train_loss")]
    np.testing.assert_allclose(epoch_times, r["created_at"] + e["wall_time_s"], atol=1e-3)


def test_tensorboard_hparams_per_run_and_the_experiment(tb_dir, stored):
    from tensorboard.plugins.hparams import metadata

    names = run_names(stored["runs"])
    for r in stored["runs"]:
        acc = accumulate(tb_dir / names[r["run_id"]])
        content = acc.PluginTagToContent("hparams")[metadata.SESSION_START_INFO_TAG]
        hparams = metadata.parse_session_start_info_plugin_data(content).hparams
        assert hparams["batch_size"].number_value == r["batch_size"]
        assert hparams["lr"].number_value == r["lr"]
        assert hparams["seed"].number_value == r["seed"]
        assert hparams["init_seed"].number_value == r["init_seed"]
        assert hparams["optimizer"].string_value == "sgd"
        assert hparams["dataset"].string_value == "wine"
    root = accumulate(tb_dir)
    experiment = metadata.parse_experiment_plugin_data(root.PluginTagToContent("hparams")[metadata.EXPERIMENT_TAG])
    infos = {h.name: h for h in experiment.hparam_infos}
    assert {"batch_size", "lr", "seed", "optimizer", "momentum", "hidden"} <= set(infos)
    assert sorted(v.number_value for v in infos["batch_size"].domain_discrete.values) == [1, 142]
    assert {m.name.tag for m in experiment.metric_infos} == {"epoch/test_loss", "epoch/test_acc",
                                                              "epoch/train_loss", "epoch/train_acc"}


def test_tensorboard_decimation_keeps_real_steps_and_the_extremes(wine_study, stored, tmp_path):
    from batchlab.interop.export.tensorboard import export_tensorboard

    paths = export_tensorboard(wine_study, tmp_path / "tb", max_step_points=100)
    r = next(r for r in stored["runs"] if r["batch_size"] == 1)
    _, losses = stored["steps"][r["run_id"]]
    events = accumulate(tmp_path / "tb" / run_names(stored["runs"])[r["run_id"]]).Scalars("step/batch_loss")
    assert len(paths) == 4 and len(events) <= 100 < len(losses)
    steps = np.array([e.step for e in events])
    np.testing.assert_array_equal([e.value for e in events], losses[steps - 1])  # each point is a real step
    assert steps[0] == 1 and steps[-1] == len(losses)
    assert {int(np.argmin(losses)) + 1, int(np.argmax(losses)) + 1} <= set(steps.tolist())


def test_tensorboard_refuses_a_directory_it_already_exported_to(wine_study, tb_dir, capsys):
    before = snapshot(tb_dir)
    code, out, err = export_cli(wine_study, "--format", "tensorboard", "--to", tb_dir, capsys=capsys)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert err.startswith("batchlab export: error: to: ") and "TensorBoard would merge them" in err
    assert snapshot(tb_dir) == before


def test_step_wall_times_spread_each_epoch_evenly():
    # epoch 1 took 2 s (4 steps), epoch 2 took 1 s (2 steps)
    times = step_wall_times(np.array([1, 1, 1, 1, 2, 2]), np.array([0, 1, 2]), np.array([0.0, 2.0, 3.0]))
    np.testing.assert_allclose(times, [0.5, 1.0, 1.5, 2.0, 2.5, 3.0])


# ---------------------------------------------------------------------------------------------------------
# MLflow


@pytest.fixture(scope="module")
def mlflow_study(wine_study, tmp_path_factory):
    """A copy of the wine study with its figures and report.html, exported to a fresh sqlite database."""
    from batchlab.results import StudyResults

    root = tmp_path_factory.mktemp("mlflow")
    study = root / "wine-study"
    shutil.copytree(wine_study, study)
    results = StudyResults.load(study)
    results.write_figures()
    results.write_report()
    uri = f"sqlite:///{root / 'mlflow.db'}"
    from batchlab.interop.export.mlflow import export_mlflow

    export = export_mlflow(study, uri)
    return {"study": study, "uri": uri, "export": export, "root": root}


@pytest.fixture(scope="module")
def client(mlflow_study):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=mlflow_study["uri"])


def child_runs(client, experiment_id: str) -> dict[str, object]:
    """batchlab run_id -> MLflow run (the study run has no run_id tag)."""
    runs = client.search_runs([experiment_id], max_results=1000)
    return {r.data.tags["run_id"]: r for r in runs if "run_id" in r.data.tags}


def test_mlflow_has_one_run_per_batchlab_run_under_a_study_run(mlflow_study, client, stored):
    experiment = client.get_experiment_by_name("wine-study")
    assert experiment is not None and experiment.experiment_id == mlflow_study["export"].experiment_id
    all_runs = client.search_runs([experiment.experiment_id], max_results=1000)
    children = child_runs(client, experiment.experiment_id)
    assert len(all_runs) == len(stored["runs"]) + 1
    assert set(children) == {r["run_id"] for r in stored["runs"]}
    study_run = next(r for r in all_runs if "run_id" not in r.data.tags)
    assert study_run.data.tags["batchlab.kind"] == "study"
    assert study_run.info.run_id == mlflow_study["export"].study_run_id
    names = run_names(stored["runs"])
    for r in stored["runs"]:
        run = children[r["run_id"]]
        assert run.data.tags["mlflow.parentRunId"] == study_run.info.run_id
        assert run.data.tags["status"] == r["status"] == "completed"
        assert run.info.status == "FINISHED"
        assert run.info.run_name == names[r["run_id"]]
        assert mlflow_study["export"].run_ids[r["run_id"]] == run.info.run_id


def test_mlflow_params_hold_the_config_seeds_versions_and_device(client, mlflow_study, stored):
    children = child_runs(client, mlflow_study["export"].experiment_id)
    for r in stored["runs"]:
        params = children[r["run_id"]].data.params
        for key in ("batch_size", "seed", "init_seed", "order_seed", "updates_per_epoch", "n_train", "epochs"):
            assert params[key] == str(r[key] if key in r else r["config"][key]), key
        assert float(params["lr"]) == r["lr"]
        assert params["dataset"] == "wine" and params["optimizer"] == "sgd" and params["device"] == r["device"]
        assert params["version.jax"] == r["versions"]["jax"]
        assert "batch_sizes" not in params  # the study's list is on the study run
    study_run = client.get_run(mlflow_study["export"].study_run_id)
    assert json.loads(study_run.data.params["batch_sizes"]) == [1, "full"]


def test_mlflow_metric_histories_equal_the_store(client, mlflow_study, stored):
    children = child_runs(client, mlflow_study["export"].experiment_id)
    for r in stored["runs"]:
        run_id, e = children[r["run_id"]].info.run_id, stored["epochs"][r["run_id"]]
        for field in ("train_loss", "test_loss", "train_acc", "test_acc", "b_simple"):
            history = sorted(client.get_metric_history(run_id, field), key=lambda m: m.step)
            measured = np.isfinite(e[field])
            assert [m.step for m in history] == e["epoch"][measured].tolist(), field
            np.testing.assert_array_equal([m.value for m in history], e[field][measured])  # float64, exact
        _, losses = stored["steps"][r["run_id"]]
        history = sorted(client.get_metric_history(run_id, "batch_loss"), key=lambda m: m.step)
        assert len(history) == r["total_updates"] == len(losses)  # 1,704 at batch size 1: under the default cap
        assert [m.step for m in history] == list(range(1, len(losses) + 1))
        np.testing.assert_array_equal([m.value for m in history], losses.astype(float))
        assert children[r["run_id"]].data.tags["batch_loss_points"] == f"{len(losses)} of {len(losses)}"


def test_mlflow_artifacts_are_the_study_figures_and_report(client, mlflow_study, stored):
    study = mlflow_study["study"]
    study_run = mlflow_study["export"].study_run_id
    figures = {Path(a.path).name: a.file_size for a in client.list_artifacts(study_run, "figures")}
    assert figures == {p.name: p.stat().st_size for p in (study / "figures").glob("*.png")}
    assert {"overlay.png", "cost.png", "scaling.png"} <= set(figures)
    root = {a.path: a.file_size for a in client.list_artifacts(study_run)}
    assert root["report.html"] == (study / "report.html").stat().st_size
    children = child_runs(client, mlflow_study["export"].experiment_id)
    for r in stored["runs"]:
        own = [a.path for a in client.list_artifacts(children[r["run_id"]].info.run_id, "figures")]
        assert own == [f"figures/lena_{r['run_id']}.png"]
    assert (mlflow_study["root"] / "mlartifacts").is_dir()  # beside the database, not in the working directory


def test_mlflow_decimates_long_step_curves_to_real_steps(client, mlflow_study, stored, tmp_path):
    from batchlab.interop.export.mlflow import export_mlflow

    other = mlflow_study["root"] / "wine-decimated"
    shutil.copytree(mlflow_study["study"], other)
    export = export_mlflow(other, mlflow_study["uri"], max_step_points=50)
    r = next(r for r in stored["runs"] if r["batch_size"] == 1)
    _, losses = stored["steps"][r["run_id"]]
    history = sorted(client.get_metric_history(export.run_ids[r["run_id"]], "batch_loss"), key=lambda m: m.step)
    steps = np.array([m.step for m in history])
    assert len(history) <= 50 and steps[0] == 1 and steps[-1] == len(losses)
    np.testing.assert_array_equal([m.value for m in history], losses[steps - 1].astype(float))
    assert client.get_run(export.run_ids[r["run_id"]]).data.tags["batch_loss_points"] == \
        f"{len(history)} of {len(losses)} (min/max-decimated)"


def test_mlflow_refuses_to_export_a_study_twice(mlflow_study, client, capsys):
    experiment_id = mlflow_study["export"].experiment_id
    n_before = len(client.search_runs([experiment_id], max_results=1000))
    code, out, err = export_cli(mlflow_study["study"], "--format", "mlflow", "--to", mlflow_study["uri"],
                                capsys=capsys)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert err.startswith("batchlab export: error: to: ") and "does not hold this study yet" in err
    assert len(client.search_runs([experiment_id], max_results=1000)) == n_before


@pytest.mark.parametrize("target", ["http://127.0.0.1:5000", "file:///tmp/mlruns", "sqlite://", "runs.db",
                                    "sqlite:///notes.txt", "sqlite:///a_directory", "sqlite:///notes.txt/runs.db"])
def test_mlflow_bad_targets_are_one_line_errors_and_write_nothing(wine_study, tmp_path, monkeypatch, capsys,
                                                                   target):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not a database\n")
    (tmp_path / "a_directory").mkdir()
    before = snapshot(tmp_path)
    code, out, err = export_cli(wine_study, "--format", "mlflow", "--to", target, capsys=capsys)
    assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("batchlab export: error: to: ") and "sqlite:///" in err
    assert snapshot(tmp_path) == before


def test_mlflow_export_of_a_missing_study_names_the_directory(tmp_path, capsys):
    code, _, err = export_cli(tmp_path / "nothere", "--format", "mlflow", "--to", f"sqlite:///{tmp_path}/x.db",
                              capsys=capsys)
    assert code == 2 and err.startswith("batchlab export: error: dir: ")
    assert not (tmp_path / "x.db").exists()


# ---------------------------------------------------------------------------------------------------------
# Missing libraries, bad options, lazy imports


@pytest.mark.parametrize(("fmt", "module", "extra"), [
    ("parquet", "pyarrow", "parquet"),
    ("tensorboard", "tensorboard.summary.writer.event_file_writer", "tensorboard"),
    ("mlflow", "mlflow.tracking", "mlflow"),
    ("mlflow", "sqlalchemy", "mlflow"),
])
def test_a_missing_library_is_one_line_naming_the_extra(wine_study, tmp_path, monkeypatch, capsys, fmt, module,
                                                        extra):
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    to = f"sqlite:///{tmp_path / 'out' / 'x.db'}" if fmt == "mlflow" else str(tmp_path / "out")
    code, out, err = export_cli(wine_study, "--format", fmt, "--to", to, capsys=capsys)
    assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert f"needs the {module.split('.')[0]} package" in err and f"pip install 'batchlab[{extra}]'" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("args", "field"), [
    (("--format", "csv", "--max-step-points", "10"), "max_step_points"),
    (("--format", "tensorboard", "--max-step-points", "3"), "max_step_points"),
    (("--format", "mlflow", "--max-step-points", "-1"), "max_step_points"),
])
def test_bad_step_caps_are_one_line_errors(wine_study, tmp_path, capsys, args, field):
    to = f"sqlite:///{tmp_path / 'x.db'}" if "mlflow" in args else str(tmp_path / "out")
    code, out, err = export_cli(wine_study, *args, "--to", to, capsys=capsys)
    assert code == 2 and out == "" and err.startswith(f"batchlab export: error: {field}: got ")
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_is_rejected_by_the_library_too(wine_study, tmp_path):
    from batchlab.interop.export import export

    with pytest.raises(BatchlabError, match=r"^format: got 'xlsx'; allowed: csv, parquet, tensorboard, mlflow$"):
        export(wine_study, format="xlsx", to=tmp_path)


def test_export_help_lists_every_format_with_an_example(tmp_path):
    p = subprocess.run([sys.executable, "-m", "batchlab.cli", "export", "--help"], cwd=tmp_path,
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0
    for fmt in ("csv", "parquet", "tensorboard", "mlflow"):
        assert f"--format {fmt}" in p.stdout
    assert "sqlite:///" in p.stdout


def test_exporters_import_their_libraries_only_when_used(tmp_path):
    code = ("import sys, batchlab.interop.export, batchlab.store.tables, batchlab.api\n"
            "heavy = ('jax', 'pyarrow', 'tensorboard', 'mlflow', 'pandas', 'polars', 'sqlalchemy', 'matplotlib')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "[]\n"


def test_evaluations_between_epoch_ends_are_stored_and_exported(tmp_path):
    """`--eval-every-steps K`: an evals table (run_id, step, examples_seen, losses and metrics) in the store, in
    evals.csv and evals.parquet, and no such file for a study without it."""
    out = tmp_path / "study"
    assert cli.main(["run", "--dataset", "iris", "--batch-sizes", "7,full", "--epochs", "3", "--eval-every-steps", "5",
                     "--out", str(out), "--no-figures"]) == 0
    assert cli.main(["export", str(out), "--format", "csv", "--to", str(tmp_path / "csv")]) == 0
    assert cli.main(["export", str(out), "--format", "parquet", "--to", str(tmp_path / "pq")]) == 0
    rows = read_csv(tmp_path / "csv" / "evals.csv")
    assert list(rows[0]) == ["run_id", "step", "examples_seen", "train_loss", "train_acc", "test_loss", "test_acc"]
    store = Store.open(out)
    try:
        by_b = {r["batch_size"]: r for r in store.runs()}
        small = store.evals(by_b[7]["run_id"])  # 120 rows, 18 updates per epoch: 5, 10, 15, 20, ... not 18, 36, 54
        assert small["step"].tolist() == [s for s in range(5, 54, 5)]
        assert small["examples_seen"].tolist() == [(s // 18) * 120 + min((s % 18) * 7, 120) for s in range(5, 54, 5)]
        assert store.evals(by_b[120]["run_id"])["step"].size == 0  # one update per epoch: nothing in between
        assert len(rows) == 10 and {r["run_id"] for r in rows} == {by_b[7]["run_id"]}
        assert float(rows[0]["train_loss"]) == pytest.approx(small["train_loss"][0])
    finally:
        store.close()
    assert read_parquet(tmp_path / "pq" / "evals.parquet")["step"] == list(range(5, 54, 5))
    assert cli.main(["export", str(out.parent / "none"), "--format", "csv", "--to", str(tmp_path / "x")]) == 2


def test_a_study_without_evaluations_between_epoch_ends_exports_no_evals_file(tables_dir):
    assert not (tables_dir / "evals.csv").exists() and not (tables_dir / "evals.parquet").exists()
