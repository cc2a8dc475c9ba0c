"""`batchlab diagnose` as a user meets it: a real subprocess on files in the formats other tools write, and on a
real batchlab study exported to CSV."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.paths import FIXTURES

CLI = (sys.executable, "-m", "batchlab.cli", "diagnose")


def diagnose_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False)


def write_curve(path: Path, sigma: float, n: int, *, seed: int, header: str = "step,loss") -> Path:
    t = np.arange(n)
    loss = np.exp(np.log(0.1 + 2 * np.exp(-t / (n / 2))) + np.random.default_rng(seed).normal(0, sigma, n))
    path.write_text(header + "\n" + "".join(f"{i},{float(v)!r}\n" for i, v in zip(t, loss)))
    return path


@pytest.fixture(scope="module")
def curves(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("curves")
    write_curve(d / "noisy.csv", 0.3, 400, seed=0)
    write_curve(d / "medium.csv", 0.1, 400, seed=1)
    write_curve(d / "smooth.csv", 0.03, 400, seed=2, header="step,train_loss")
    write_curve(d / "twin.csv", 0.1, 400, seed=3)
    return d


def test_json_lists_each_file_with_metrics_and_rank(curves):
    p = diagnose_cli("smooth.csv", "noisy.csv", "medium.csv", "--json", cwd=curves)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""  # same resolution and length: no warning
    document = json.loads(p.stdout)
    assert (document["smallest_batch"], document["too_close_to_call"], document["warnings"]) == ("noisy.csv", False, [])
    records = document["curves"]
    assert [(r["path"], r["format"], r["n_points"], r["rank"]) for r in records] == [
        ("smooth.csv", "csv", 400, 3), ("noisy.csv", "csv", 400, 1), ("medium.csv", "csv", 400, 2)]
    assert [r["most_likely_smallest_batch"] for r in records] == [False, True, False]
    assert records[1]["residual_std_log"] == pytest.approx(0.3, rel=0.1)
    assert {"mean_abs_first_difference", "fraction_rising", "residual_lag1_autocorrelation"} <= set(records[0])


def test_table_and_verdict(curves):
    p = diagnose_cli("medium.csv", "noisy.csv", cwd=curves)
    assert p.returncode == 0, p.stderr
    assert "residual std of log-loss" in p.stdout and "1 of 2" in p.stdout and "2 of 2" in p.stdout
    assert "noisy.csv most likely came from the smallest batch" in " ".join(p.stdout.split())


def test_equal_noise_is_too_close_to_call(curves):
    p = diagnose_cli("medium.csv", "twin.csv", cwd=curves)
    assert p.returncode == 0, p.stderr
    assert "Too close to call" in p.stdout
    document = json.loads(diagnose_cli("medium.csv", "twin.csv", "--json", cwd=curves).stdout)
    assert document["too_close_to_call"] and document["smallest_batch"] is None
    assert not any(r["most_likely_smallest_batch"] for r in document["curves"])


def test_column_flag_and_resolution_warning(curves):
    history = curves / "history.json"
    history.write_text(json.dumps({"loss": [1.0, 0.8, 0.7, 0.65, 0.5, 0.45], "mse": [1.0] * 6}))
    p = diagnose_cli("noisy.csv", "history.json", "--json", cwd=curves)
    assert p.returncode == 0, p.stderr
    (line,) = p.stderr.splitlines()
    assert line.startswith("batchlab diagnose: warning: curves not comparable: resolutions differ")
    assert "noisy.csv: per step; history.json: per epoch" in line
    assert json.loads(p.stdout)["warnings"] == [line.removeprefix("batchlab diagnose: warning: ")]  # issue 11
    p = diagnose_cli("history.json", "--column", "nope", cwd=curves)
    assert p.returncode == 2 and "no key 'nope'; keys found: loss, mse" in p.stderr


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.csv", None, "missing.csv: no such file or directory"),
    ("notes.txt", "loss\n1\n", "notes.txt: unknown format"),
    ("empty.csv", "", "empty.csv: empty file"),
    ("acc.csv", "step,acc\n1,0.5\n2,0.6\n", "acc.csv: no loss column .* columns found: step, acc"),
    ("four.csv", "loss\n1\n0.9\n0.8\n0.7\n", "four.csv: 'loss': got 4 finite loss values; allowed: at least 5"),
    ("nan.json", '{"loss": [NaN, NaN, Infinity, NaN, NaN, NaN]}', "nan.json: 'loss': all 6 values are non-finite"),
])
def test_bad_input_is_one_line_exit_2_no_traceback(tmp_path, name, content, message):
    if content is not None:
        (tmp_path / name).write_text(content)
    write_curve(tmp_path / "good.csv", 0.1, 50, seed=0)
    p = diagnose_cli("good.csv", name, cwd=tmp_path)
    assert p.returncode == 2
    assert p.stdout == ""
    (line,) = p.stderr.splitlines()
    assert line.startswith("batchlab diagnose: error: ")
    assert re.search(message, line), line
    assert "Traceback" not in p.stderr


def test_help_has_examples(tmp_path):
    p = diagnose_cli("--help", cwd=tmp_path)
    assert p.returncode == 0 and "examples:" in p.stdout and "--tag" in p.stdout and "--json" in p.stdout
    assert diagnose_cli(cwd=tmp_path).returncode == 2  # FILE is required


LIGHTNING_LOGS = FIXTURES / "lightning"  # written by Lightning 2.6.6 (make_logs.py)


def test_sparse_lightning_log_is_read_per_epoch_with_a_warning(curves, tmp_path):
    # issue 11: log_every_n_steps=50 left 4 train_loss_step values and diagnose exited 2
    history = tmp_path / "history.json"
    history.write_text(json.dumps({"loss": [float(np.exp(-e / 9) + 0.02 * (e % 2)) for e in range(30)]}))
    p = diagnose_cli(LIGHTNING_LOGS / "sparse_steps" / "metrics.csv", history, "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (line,) = p.stderr.splitlines()
    assert line.startswith("batchlab diagnose: warning: ") and "'train_loss_step' holds 4 values" in line
    assert "'train_loss_epoch' (40 values) was read instead" in line
    document = json.loads(p.stdout)
    assert document["warnings"] == [line.removeprefix("batchlab diagnose: warning: ")]
    assert [(r["source"], r["resolution"], r["n_points"]) for r in document["curves"]] == [
        ("train_loss_epoch", "per epoch", 40), ("loss", "per epoch", 30)]


def test_epoch_only_lightning_log_against_keras_draws_no_resolution_warning(tmp_path):
    # issue 11: an epoch-only Lightning log was "every 142 steps", and the resolution warning fired
    history = tmp_path / "history.json"
    history.write_text(json.dumps({"loss": [float(np.exp(-e / 4) + 0.05 * (e % 2)) for e in range(12)]}))
    p = diagnose_cli(LIGHTNING_LOGS / "epoch_only" / "metrics.csv", history, "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stderr == "" and json.loads(p.stdout)["warnings"] == []
    assert [r["resolution"] for r in json.loads(p.stdout)["curves"]] == ["per epoch", "per epoch"]


def test_tensorboard_csv_download_needs_no_column_flag(tmp_path):
    # issue 11: TensorBoard's CSV download (Wall time,Step,Value) needed --column Value
    for name, sigma, seed in (("run-bs1-tag-loss.csv", 0.3, 0), ("run-bs64-tag-loss.csv", 0.03, 1)):
        write_curve(tmp_path / name, sigma, 300, seed=seed, header="Step,Value")
        rows = (tmp_path / name).read_text().splitlines()[1:]
        rows = [f"{1.7e9 + i},{row}\n" for i, row in enumerate(rows)]
        (tmp_path / name).write_text("Wall time,Step,Value\n" + "".join(rows))
    p = diagnose_cli("run-bs1-tag-loss.csv", "run-bs64-tag-loss.csv", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    document = json.loads(p.stdout)
    assert [(r["format"], r["source"]) for r in document["curves"]] == [("tensorboard_csv", "Value")] * 2
    assert document["smallest_batch"] == "run-bs1-tag-loss.csv"


def test_smooth_per_epoch_curves_tie_and_are_not_called(tmp_path):
    # issue 11: strictly decreasing curves all scored 0, and the first argument (the full batch) was ranked 1 and
    # called "most likely the smallest batch"
    for name, tau in (("full.json", 5), ("b16.json", 10), ("b1.json", 20)):
        (tmp_path / name).write_text(json.dumps({"loss": [float(np.exp(-e / tau) + 0.05) for e in range(40)]}))
    p = diagnose_cli("full.json", "b16.json", "b1.json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    text = " ".join(p.stdout.split())
    assert "most likely came" not in text and text.count("1 of 3, tied with 2 others") == 3
    assert "Too close to call: full.json, b16.json and b1.json share rank 1" in text
    document = json.loads(diagnose_cli("full.json", "b16.json", "b1.json", "--json", cwd=tmp_path).stdout)
    assert [r["rank"] for r in document["curves"]] == [1, 1, 1] and document["smallest_batch"] is None


def test_a_short_run_in_a_multi_run_file_is_one_line_naming_the_run(tmp_path):
    rows = [f"long,{s},{float(np.exp(-s / 20))!r}" for s in range(40)] + [f"short,{s},0.5" for s in range(3)]
    (tmp_path / "steps.csv").write_text("run_id,step,batch_loss\n" + "\n".join(rows) + "\n")
    p = diagnose_cli("steps.csv", cwd=tmp_path)
    assert p.returncode == 2 and p.stdout == "" and "Traceback" not in p.stderr
    (line,) = p.stderr.splitlines()
    assert line == ("batchlab diagnose: error: steps.csv:short: 'batch_loss': got 3 finite loss values; allowed: at "
                    "least 5")


# ---------------------------------------------------------------------------------------------------------
# End to end: a real batchlab study, exported, diagnosed as exported (issue 11's acceptance check), and split
# per run and diagnosed blind.


def batch_size_of(label: str) -> int:
    """The batch size a batchlab run's label carries: steps.csv:bs16-seed0-<hash> or tb/bs16_lr0.03_seed0."""
    return int(re.search(r"[:/]bs(\d+)[-_]", label).group(1))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="the tensorboard extra is not installed")
def test_batchlab_exports_of_a_three_batch_size_study_rank_batch_size_1_first(tmp_path):
    # issue 11, item 7: steps.csv was one merged curve and the TensorBoard export read as its first run only
    run = [sys.executable, "-m", "batchlab.cli", "run", "--dataset", "wine", "--batch-sizes", "1,16,full",
           "--epochs", "10", "--out", "study", "--no-figures", "--sharpness", "false", "--gns", "off"]
    subprocess.run(run, cwd=tmp_path, capture_output=True, check=True, timeout=300)
    for fmt, to in (("csv", "csv"), ("tensorboard", "tb")):
        subprocess.run([sys.executable, "-m", "batchlab.cli", "export", "study", "--format", fmt, "--to", to],
                       cwd=tmp_path, capture_output=True, check=True, timeout=120)
    with (tmp_path / "csv" / "runs.csv").open() as f:
        runs = {r["run_id"]: int(r["batch_size"]) for r in csv.DictReader(f)}
    assert sorted(runs.values()) == [1, 16, 142]  # wine: 142 training examples, so full = 142
    for exported, label_of in (("csv/steps.csv", lambda run_id: f"csv/steps.csv:{run_id}"),
                               ("tb", lambda run_id: f"tb/bs{runs[run_id]}_lr0.03_seed0")):
        p = diagnose_cli(exported, "--json", cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        document = json.loads(p.stdout)
        curves = document["curves"]
        assert sorted(r["label"] for r in curves) == sorted(label_of(run_id) for run_id in runs)
        by_rank = sorted(curves, key=lambda r: r["rank"])
        assert [batch_size_of(r["label"]) for r in by_rank] == [1, 16, 142]
        assert [r["rank"] for r in by_rank] == [1, 2, 3]
        assert [r["n_points"] for r in by_rank] == [1420, 90, 10]  # every step of 10 epochs: batch_loss, per step
        assert document["smallest_batch"] == by_rank[0]["label"]
        assert document["warnings"] == [p.stderr.splitlines()[0].removeprefix("batchlab diagnose: warning: ")]
        assert "lengths differ (1,420 vs 90 vs 10 points)" in document["warnings"][0]


def test_a_real_study_batch_size_1_is_ranked_noisiest(tmp_path):
    from batchlab.interop.export import export_csv
    from batchlab.runner.driver import run_study
    from batchlab.spec import StudySpec

    study = tmp_path / "study"
    run_study(StudySpec(dataset="iris", batch_sizes=(1, "full"), epochs=30, device="cpu"), study)
    export_csv(study, tmp_path / "export")
    with (tmp_path / "export" / "runs.csv").open() as f:
        batch_of = {r["run_id"]: int(r["batch_size"]) for r in csv.DictReader(f)}
    with (tmp_path / "export" / "steps.csv").open() as f:
        reader = csv.DictReader(f)
        by_run: dict[str, list[dict]] = {}
        for row in reader:
            by_run.setdefault(row["run_id"], []).append(row)
    assert min(batch_of.values()) == 1 and len(by_run) == 2
    names = {}
    for i, (run_id, rows) in enumerate(sorted(by_run.items())):  # anonymous names: the tool must not be told
        names[run_id] = f"curve_{i}.csv"
        with (tmp_path / names[run_id]).open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["step", "epoch", "batch_loss"], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    p = diagnose_cli(*sorted(names.values()), "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    records = {r["path"]: r for r in json.loads(p.stdout)["curves"]}
    batch_1 = names[next(run_id for run_id, b in batch_of.items() if b == 1)]
    assert records[batch_1]["rank"] == 1 and records[batch_1]["most_likely_smallest_batch"]
    assert records[batch_1]["n_points"] == 30 * 120  # iris: 120 training examples, one update each per epoch
    assert "lengths differ" in p.stderr  # 3,600 steps against 30: the caller is warned


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="the tensorboard extra is not installed")
def test_tensorboard_directory_with_tag(tmp_path):
    from tests.interop.test_logs import write_events

    rng = np.random.default_rng(0)
    steps = [(s, float(np.exp(-s / 200 + rng.normal(0, 0.2)))) for s in range(300)]
    write_events(tmp_path / "tb", {"train/loss": steps, "val/loss": [(s, 1.0 + 0.01 * (s % 2)) for s in range(300)]})
    p = diagnose_cli("tb", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (record,) = json.loads(p.stdout)["curves"]
    assert (record["format"], record["source"], record["n_points"]) == ("tensorboard", "train/loss", 300)
    assert record["residual_std_log"] == pytest.approx(0.2, rel=0.15)
    p = diagnose_cli("tb", "--tag", "train/los", cwd=tmp_path)
    assert p.returncode == 2 and "no scalar tag 'train/los'; scalar tags found: train/loss, val/loss" in p.stderr
