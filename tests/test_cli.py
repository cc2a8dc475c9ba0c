"""The `batchlab` command as a user meets it: a real subprocess, run in a scratch directory.

Every bad input must end with exit code 2, exactly one line on stderr naming the field and what is allowed, no
traceback, and nothing written: no new study directory, and a pre-existing study (made by a real tiny
`batchlab run`) left byte-for-byte intact. Each bad command runs once; its outcome is then checked property by
property, so a bug in one property does not hide the others.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, replace
from dataclasses import field as dc_field
from pathlib import Path

import pytest

from batchlab.store.db import Store

CLI = (sys.executable, "-m", "batchlab.cli")
TINY = ("--dataset", "iris", "--epochs", "2", "--batch-sizes", "1,full", "--no-figures")
HEAVY_MODULES = ("jax", "jaxlib", "optax", "numpy", "sklearn", "matplotlib")


def cli(*args: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its bytes (None for directories)."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def csv_text(header: str, *rows: str) -> str:
    return "\n".join((header, *rows)) + "\n"


GOOD_ROWS = ("0.1,1.0,cat", "0.2,0.9,dog", "0.3,1.1,cat", "0.4,0.8,dog", "0.5,1.2,cat", "0.6,0.7,dog")


# ---------------------------------------------------------------------------------------------------------
# Studies made by real runs, shared by the module.


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A finished tiny study: iris, batch sizes 1 and full, 2 epochs."""
    cwd = tmp_path_factory.mktemp("tiny")
    p = cli("run", *TINY, "--out", "study", cwd=cwd)
    assert p.returncode == 0, p.stderr
    assert (cwd / "study" / "study.db").is_file()
    assert sorted(x.name for x in (cwd / "study" / "init").iterdir())  # init/*.npz exist, so the byte check bites
    return cwd / "study"


# ---------------------------------------------------------------------------------------------------------
# Bad inputs.

@dataclass(frozen=True)
class Bad:
    """A bad command: argv (`{study}` stands for a copy of the tiny study), the field its error must name, a
    fragment of the message saying what is allowed, and files to create first."""

    id: str
    argv: tuple[str, ...]
    field: str
    allowed: str
    files: dict[str, str] = dc_field(default_factory=dict)
    late: bool = False  # detected inside run_study, after the CLI started its progress display

    @property
    def command(self) -> str:
        return self.argv[0]


def run_case(id_, *flags, field_, allowed, files=None, late=False) -> list[Bad]:
    """A bad `batchlab run`, in variants: --out a new directory, --out an existing study, and (for errors found
    late) no --out at all, where the default would be runs/<date>-<time>."""
    base = Bad(id_, ("run", *flags), field_, allowed, files or {}, late)
    variants = [replace(base, id=f"{id_}@new-out", argv=(*base.argv, "--out", "new_study")),
                replace(base, id=f"{id_}@existing-out", argv=(*base.argv, "--out", "{study}"))]
    if late:  # run_study refuses an existing study before looking at the data
        variants[1] = replace(variants[1], field="out", allowed="allowed: a new --out directory, or batchlab resume")
        variants.append(replace(base, id=f"{id_}@default-out"))
    return variants


UNKNOWN_KEY_TOML = 'dataset = "iris"\nepochs = 2\nbatch_size = [1, "full"]\n'  # batch_size: a typo of batch_sizes
INVALID_TOML = 'dataset = "iris\nepochs = \n'

BAD: list[Bad] = [
    *run_case("unknown-dataset", "--dataset", "mnist", field_="dataset",
              allowed="one of digits, iris, wine, breast_cancer, moons, circles, blobs, mnist1d, text, or a path "
                      "ending in .csv"),
    *run_case("batch-size-0", "--batch-sizes", "0", field_="batch_sizes", allowed="integers >= 1 and 'full'"),
    *run_case("batch-size-above-n", "--dataset", "iris", "--batch-sizes", "1000", field_="batch_sizes",
              allowed="integers 1 <= b <= 120 (the training-set size) or 'full'", late=True),
    *run_case("batch-sizes-abc", "--batch-sizes", "abc", field_="batch_sizes", allowed="integers >= 1 and 'full'"),
    *run_case("lr-negative", "--lr", "-1", field_="lr", allowed="a number > 0 that float32 holds"),
    *run_case("lr-nan", "--lr", "nan", field_="lr", allowed="a number > 0 that float32 holds"),
    *run_case("epochs-0", "--epochs", "0", field_="epochs", allowed="an integer in [1, "),
    *run_case("seeds-0", "--seeds", "0", field_="seeds", allowed="an integer in [1, "),
    *run_case("optimizer-rmsprop", "--optimizer", "rmsprop", field_="optimizer", allowed="one of sgd, momentum, adam"),
    *run_case("device-tpu", "--device", "tpu", field_="device", allowed="one of auto, cpu, gpu"),
    *run_case("hidden-0", "--hidden", "0", field_="hidden", allowed="positive integers"),
    *run_case("test-fraction-1.5", "--test-fraction", "1.5", field_="test_fraction", allowed="a number in (0.0, 1.0)"),
    *run_case("toml-unknown-key", "--config", "study.toml", field_="batch_size",
              allowed="unknown field; allowed fields: dataset, target,", files={"study.toml": UNKNOWN_KEY_TOML}),
    *run_case("toml-invalid", "--config", "study.toml", field_="config", allowed="is not valid TOML",
              files={"study.toml": INVALID_TOML}),
    *run_case("config-missing", "--config", "nothere.toml", field_="config",
              allowed="allowed: the path of an existing TOML file"),
    *run_case("csv-empty", "--dataset", "d.csv", "--target", "label", field_="dataset",
              allowed="allowed: a CSV with a header row and data rows", files={"d.csv": ""}, late=True),
    *run_case("csv-header-only", "--dataset", "d.csv", "--target", "label", field_="dataset",
              allowed="has a header but no data rows", files={"d.csv": "a,b,label\n"}, late=True),
    *run_case("csv-target-missing", "--dataset", "d.csv", "--target", "nope", field_="target",
              allowed="allowed: a column of d.csv: a, b, label", files={"d.csv": csv_text("a,b,label", *GOOD_ROWS)},
              late=True),
    *run_case("csv-nan-feature", "--dataset", "d.csv", "--target", "label", field_="dataset",
              allowed="allowed: finite numbers", files={"d.csv": csv_text("a,b,label", *GOOD_ROWS, "nan,1.0,dog")},
              late=True),
    *run_case("csv-empty-cell", "--dataset", "d.csv", "--target", "label", field_="dataset",
              allowed="has a missing value (an empty cell) on line", files={"d.csv": csv_text("a,b,label", *GOOD_ROWS,
                                                                                               "0.7,,dog")}, late=True),
    *run_case("csv-non-numeric", "--dataset", "d.csv", "--target", "label", field_="dataset",
              allowed="allowed: numbers", files={"d.csv": csv_text("a,b,label", *GOOD_ROWS, "0.7,high,dog")},
              late=True),
    *run_case("csv-one-class", "--dataset", "d.csv", "--target", "label", field_="target",
              allowed="allowed: at least two classes",
              files={"d.csv": csv_text("a,b,label", *(r.replace("dog", "cat") for r in GOOD_ROWS))}, late=True),
    *run_case("csv-missing-file", "--dataset", "nothere.csv", "--target", "label", field_="dataset",
              allowed="the path of an existing CSV file"),
    *run_case("csv-missing-file-first", "--dataset", "nothere.csv", field_="dataset",  # before: "--target needed"
              allowed="the path of an existing CSV file"),
    *run_case("csv-two-rows", "--dataset", "d.csv", "--target", "label", field_="dataset",
              allowed="allowed: at least 2 training and 1 test example", files={"d.csv": "a,b,label\n1,2,0\n3,4,1\n"},
              late=True),
    *run_case("target-with-builtin", "--dataset", "iris", "--target", "label", field_="target",
              allowed="only with a CSV, Parquet or NPZ dataset"),
    *run_case("csv-without-target", "--dataset", "d.csv", field_="target", allowed="the target column",
              files={"d.csv": csv_text("a,b,label", *GOOD_ROWS)}),
    Bad("out-existing-study", ("run", *TINY, "--out", "{study}"), "out", "allowed: a new --out directory, or batchlab resume", late=True),
    Bad("out-is-a-file", ("run", "--dataset", "iris", "--epochs", "1", "--batch-sizes", "full", "--no-figures",
                          "--out", "notes.txt"), "out", "directory", {"notes.txt": "not a study\n"}, late=True),
    Bad("show-no-study", ("show", "empty"), "dir", "allowed: a directory written by 'batchlab run'",
        {"empty/.keep": ""}),
    Bad("show-missing-dir", ("show", "nothere"), "dir", "allowed: a directory written by 'batchlab run'"),
    Bad("report-no-study", ("report", "empty"), "dir", "allowed: a directory written by 'batchlab run'",
        {"empty/.keep": ""}),
    Bad("report-missing-dir", ("report", "nothere"), "dir", "allowed: a directory written by 'batchlab run'"),
    Bad("report-out-is-a-directory", ("report", "{study}", "--out", "somewhere"), "out",
        "allowed: the path of an HTML file", {"somewhere/.keep": ""}),
    Bad("export-no-study", ("export", "empty", "--format", "csv", "--to", "exported"), "dir",
        "allowed: a directory written by 'batchlab run'", {"empty/.keep": ""}),
    Bad("export-to-a-file", ("export", "{study}", "--to", "notes.txt"), "to", "directory",
        {"notes.txt": "not a directory\n"}),
]
assert len({c.id for c in BAD}) == len(BAD)


@dataclass(frozen=True)
class Outcome:
    proc: subprocess.CompletedProcess
    cwd: Path
    before: dict[str, bytes | None]
    after: dict[str, bytes | None]


@pytest.fixture(scope="module")
def outcome(study, tmp_path_factory):
    """outcome(case): run the bad command once (memoized), in a fresh directory holding its input files and a
    byte-identical copy of the tiny study, and snapshot that directory before and after."""
    cache: dict[str, Outcome] = {}

    def get(case: Bad) -> Outcome:
        if case.id not in cache:
            cwd = tmp_path_factory.mktemp("bad")
            existing = cwd / "existing_study"
            shutil.copytree(study, existing)
            for name, text in case.files.items():
                (cwd / name).parent.mkdir(parents=True, exist_ok=True)
                (cwd / name).write_text(text)
            before = snapshot(cwd)
            proc = cli(*(a.replace("{study}", str(existing)) for a in case.argv), cwd=cwd)
            cache[case.id] = Outcome(proc, cwd, before, snapshot(cwd))
        return cache[case.id]

    return get


CASES = [pytest.param(c, id=c.id) for c in BAD]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2(case, outcome):
    p = outcome(case).proc
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])


@pytest.mark.parametrize("case", CASES)
def test_bad_input_prints_no_traceback(case, outcome):
    p = outcome(case).proc
    assert "Traceback" not in p.stderr + p.stdout, p.stderr[-2000:]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_writes_exactly_one_line_to_stderr_and_nothing_to_stdout(case, outcome):
    p = outcome(case).proc
    assert p.stderr.endswith("\n") and len(p.stderr.splitlines()) == 1, repr(p.stderr[-2000:])
    assert p.stdout == ""


@pytest.mark.parametrize("case", CASES)
def test_bad_input_message_names_the_field_and_what_is_allowed(case, outcome):
    lines = [line for line in outcome(case).proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"batchlab {case.command}: error: {case.field}: "), lines[0]
    assert case.allowed in lines[0], lines[0]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_writes_nothing(case, outcome):
    o = outcome(case)
    assert not (o.cwd / "new_study").exists()
    assert not (o.cwd / "runs").exists()  # the default --out
    assert not (o.cwd / "exported").exists()
    assert sorted(o.after) == sorted(o.before), "files appeared or vanished"
    changed = [path for path in o.before if o.after[path] != o.before[path]]
    assert changed == [], "changed: " + ", ".join(changed)  # includes existing_study/study.db and its init/*.npz
    assert any(path.startswith("existing_study/init/") and path.endswith(".npz") for path in o.before)


# ---------------------------------------------------------------------------------------------------------
# Help and start-up.


def test_help_exits_0_and_lists_the_commands(tmp_path):
    p = cli("--help", cwd=tmp_path)
    assert p.returncode == 0 and p.stderr == ""
    for command in ("run", "show", "report", "export"):
        assert command in p.stdout


def test_run_help_shows_examples(tmp_path):
    p = cli("run", "--help", cwd=tmp_path)
    assert p.returncode == 0 and p.stderr == ""
    assert "examples:" in p.stdout
    assert "batchlab run --dataset digits --batch-sizes 1,8,64,full" in p.stdout  # the default is moons (issue 10)
    assert "batchlab run --config study.toml" in p.stdout
    for flag in ("--dataset", "--batch-sizes", "--lr", "--epochs", "--seeds", "--config", "--out", "--device"):
        assert flag in p.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["show", "report", "export"])
def test_show_and_export_help_show_an_example(command, tmp_path):
    p = cli(command, "--help", cwd=tmp_path)
    assert p.returncode == 0 and p.stderr == ""
    assert f"batchlab {command} runs/" in p.stdout


def test_version_prints_the_package_version(tmp_path):
    from batchlab import __version__

    p = cli("--version", cwd=tmp_path)
    assert p.returncode == 0 and p.stdout == f"batchlab {__version__}\n" and p.stderr == ""


@pytest.mark.parametrize(("argv", "prog", "unknown"), [(["run", "--frobnicate"], "batchlab run", "--frobnicate"),
                                                       (["show", "somewhere", "--frob", "1"], "batchlab show", "--frob 1"),
                                                       (["--frobnicate"], "batchlab", "--frobnicate")])
def test_an_unknown_flag_points_at_its_subcommands_help(argv, prog, unknown, tmp_path):
    p = cli(*argv, cwd=tmp_path)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr == f"{prog}: error: unrecognized arguments: {unknown} (see {prog} --help)\n"
    assert list(tmp_path.iterdir()) == []


def test_console_script_help(tmp_path):
    script = Path(sys.executable).with_name("batchlab")
    if not script.is_file():
        pytest.skip(f"no console script next to {sys.executable}")
    p = subprocess.run([str(script), "run", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0 and "examples:" in p.stdout


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


def test_importing_the_cli_and_building_the_parser_does_not_import_jax(tmp_path):
    p = _python(f"""
        import sys
        import batchlab.cli
        batchlab.cli.build_parser().parse_args(["run", "--batch-sizes", "1,full", "--epochs", "2"])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY_MODULES!r})
        assert "jax" not in sys.modules, heavy
        assert heavy == [], heavy
        print("ok")
    """, tmp_path)
    assert p.returncode == 0 and p.stdout == "ok\n", p.stderr


def test_flag_and_config_errors_are_reported_without_importing_jax(tmp_path):
    (tmp_path / "unknown.toml").write_text(UNKNOWN_KEY_TOML)
    (tmp_path / "invalid.toml").write_text(INVALID_TOML)
    bad = [["run", "--lr", "-1"], ["run", "--batch-sizes", "abc"], ["run", "--device", "tpu"],
           ["run", "--config", "unknown.toml"], ["run", "--config", "invalid.toml"],
           ["run", "--config", "nothere.toml"],
           ["run", "--dataset", "iris", "--target", "label"], ["run", "--dataset", "d.csv"]]
    p = _python(f"""
        import sys
        from batchlab.cli import main
        for argv in {bad!r}:
            assert main(argv) == 2, argv
            assert "jax" not in sys.modules, argv
        print("ok")
    """, tmp_path)
    assert p.returncode == 0 and p.stdout == "ok\n", p.stderr
    assert len(p.stderr.splitlines()) == len(bad)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["invalid.toml", "unknown.toml"]


# ---------------------------------------------------------------------------------------------------------
# Runs that succeed.


@pytest.fixture(scope="module")
def config_study(tmp_path_factory):
    """A study from a TOML file, with flags overriding some of its values."""
    cwd = tmp_path_factory.mktemp("config")
    (cwd / "study.toml").write_text(textwrap.dedent("""\
        dataset = "iris"
        epochs = 2
        batch_sizes = [1, "full"]
        lr = 0.05
        optimizer = "momentum"
    """))
    p = cli("run", "--config", "study.toml", "--lr", "0.1", "--optimizer", "adam", "--hidden", "16", "--no-figures",
            "--out", "from_config", cwd=cwd)
    return p, cwd / "from_config"


def test_toml_config_runs_end_to_end(config_study):
    p, out = config_study
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    store = Store.open(out)
    try:
        runs = store.runs()
        assert store.meta()["batch_sizes"] == [1, 120]
    finally:
        store.close()
    assert sorted(r["batch_size"] for r in runs) == [1, 120]
    assert all(r["status"] == "completed" and r["epochs_done"] == 2 for r in runs)


def test_flags_override_toml_values(config_study):
    p, out = config_study
    assert p.returncode == 0, p.stderr
    store = Store.open(out)
    try:
        spec, runs = store.meta()["spec"], store.runs()
    finally:
        store.close()
    assert spec["lr"] == 0.1 and spec["optimizer"] == "adam" and spec["hidden"] == [16]  # flags win
    assert spec["dataset"] == "iris" and spec["epochs"] == 2 and spec["batch_sizes"] == [1, "full"]  # from TOML
    assert {r["lr"] for r in runs} == {0.1}  # lr_scaling none: every batch size trains at the flag's lr


def _labelled_csv() -> tuple[str, int, int]:
    """30 rows: two features, string labels in the middle, a split column; returns text, n_train, n_test."""
    names = ("bird", "cat", "dog")
    rows = []
    for i in range(30):
        k = i % 3
        split = "test" if i % 5 == 4 else "train"
        rows.append(f"{k + 0.1 * (i % 4):.2f},{names[k]},{split},{(-1) ** i * 0.05 + k:.2f}")
    n_test = sum(r.split(",")[2] == "test" for r in rows)
    return csv_text("x1,species,split,x2", *rows), 30 - n_test, n_test


@pytest.fixture(scope="module")
def csv_study(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("csv")
    text, n_train, n_test = _labelled_csv()
    (cwd / "animals.csv").write_text(text)
    p = cli("run", "--dataset", "animals.csv", "--target", "species", "--batch-sizes", "4,full", "--epochs", "2",
            "--hidden", "8", "--no-figures", "--out", "animals", cwd=cwd)
    return p, cwd / "animals", n_train, n_test


def test_csv_with_string_labels_and_split_column_runs_end_to_end(csv_study):
    p, out, n_train, n_test = csv_study
    assert p.returncode == 0, p.stderr
    assert (n_train, n_test) == (24, 6)
    store = Store.open(out)
    try:
        meta, runs = store.meta(), store.runs()
    finally:
        store.close()
    assert meta["dataset"]["n_train"] == n_train  # the rows marked train, not a 0.8 split of 30
    assert meta["dataset"]["n_test"] == n_test
    assert meta["dataset"]["n_classes"] == 3 and meta["dataset"]["n_features"] == 2
    assert meta["spec"]["target"] == "species"
    assert meta["batch_sizes"] == [4, n_train]
    assert all(r["n_train"] == n_train and r["status"] == "completed" for r in runs)


def test_show_reprints_the_table_and_writes_nothing(study, tmp_path):
    before = snapshot(study)
    p = cli("show", study, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    store = Store.open(study)
    try:
        run_ids = [r["run_id"] for r in store.runs()]
    finally:
        store.close()
    assert len(run_ids) == 2
    for rid in run_ids:
        assert rid in p.stdout
    assert f"Study: {study}" in p.stdout
    assert snapshot(study) == before  # show without --figures only reads
    assert list(tmp_path.iterdir()) == []


def test_report_writes_one_html_file_and_prints_its_path(study, tmp_path):
    p = cli("report", study, "--out", "out/lena.html", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "out/lena.html\n"
    page = (tmp_path / "out" / "lena.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "Plotly.newPlot" in page
    assert [x.name for x in tmp_path.rglob("*") if x.is_file()] == ["lena.html"]


def test_show_with_figures_also_writes_the_report(study, tmp_path):
    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    p = cli("show", copy, "--figures", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert f"Report: {copy / 'report.html'}" in p.stdout
    assert (copy / "report.html").read_text().count("Plotly.newPlot") >= 4


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_export_csv_writes_runs_epochs_and_steps(study, tmp_path):
    before = snapshot(study)
    p = cli("export", study, "--format", "csv", "--to", "exported", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    out = tmp_path / "exported"
    assert p.stdout.splitlines() == [str(Path("exported") / n) for n in ("runs.csv", "epochs.csv", "steps.csv")]
    assert sorted(x.name for x in out.iterdir()) == ["epochs.csv", "runs.csv", "steps.csv"]

    store = Store.open(study)
    try:
        stored, epochs = store.runs(), store.meta()["spec"]["epochs"]
    finally:
        store.close()
    runs, epoch_rows, step_rows = _rows(out / "runs.csv"), _rows(out / "epochs.csv"), _rows(out / "steps.csv")

    assert sorted(r["run_id"] for r in runs) == sorted(r["run_id"] for r in stored)
    assert len(epoch_rows) == sum(epochs + 1 for _ in stored) == 6  # epoch 0 (the initial evaluation) included
    assert len(step_rows) == sum(r["total_updates"] for r in stored) == 2 * 120 + 2 * 1
    for r in stored:  # per run, too
        mine = [e for e in epoch_rows if e["run_id"] == r["run_id"]]
        assert [int(e["epoch"]) for e in mine] == list(range(epochs + 1))
        steps = [s for s in step_rows if s["run_id"] == r["run_id"]]
        assert len(steps) == r["total_updates"] == epochs * r["updates_per_epoch"]
        assert [int(s["step"]) for s in steps] == list(range(1, len(steps) + 1))
    for r in runs:
        assert json.loads(r["config"])["dataset"] == "iris"
    assert snapshot(study) == before
