"""Damage is named, never a traceback: a damaged study.db is one line and exit code 2 for show, report and export;
a read-only study is shown, reported elsewhere and exported; nothing writes over the study's own files; a full
disk is one line and leaves no temporary file (issue 12)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from batchlab.cli import main
from batchlab.results import StudyResults
from batchlab.store.db import Store, StudyDamaged


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def truncate(db: Path) -> None:
    with db.open("r+b") as f:
        f.truncate(db.stat().st_size // 2)


def garbage(db: Path) -> None:
    db.write_bytes(os.urandom(40_000))


def sql(statement: str):
    def damage(db: Path) -> None:
        with sqlite3.connect(db) as con:
            con.execute(statement)
        con.close()
    return damage


DAMAGE = {
    "truncated": (truncate, "database disk image is malformed"),
    "garbage": (garbage, "file is not a database"),
    "dropped-table": (sql("DROP TABLE epochs"), "no table 'epochs'"),
    "missing-metadata": (sql("DELETE FROM study WHERE key='dataset'"), "the study metadata lacks 'dataset'"),
    "bad-config-json": (sql("UPDATE runs SET config='{not json'"), "Expecting property name"),
}


@pytest.fixture
def copy_of(wine_study, tmp_path):
    def copy(name: str = "s") -> Path:
        out = tmp_path / name
        shutil.copytree(wine_study, out, ignore=shutil.ignore_patterns("*-wal", "*-shm", "report.html", "figures"))
        return out
    return copy


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_store_is_one_line_for_show_report_and_export(copy_of, tmp_path, case):
    study = copy_of()
    damage, detail = DAMAGE[case]
    damage(study / "study.db")
    damaged = (study / "study.db").read_bytes()
    with pytest.raises(StudyDamaged, match=rf"^dir: {study}/study.db is damaged: .*{detail}"):
        StudyResults.load(study)
    for argv in (["show", str(study)], ["report", str(study), "--out", str(tmp_path / "r.html")],
                 ["export", str(study), "--to", str(tmp_path / "csv")]):
        code, _, err = cli(*argv)
        if case == "missing-metadata" and argv[0] == "export":
            assert code == 0, err  # the tables do not need the metadata
            continue
        assert code == 2, err
        assert err.count("\n") == 1 and err.startswith(f"batchlab {argv[0]}: error: dir: {study}/study.db is damaged:")
        assert "the parameter files (init/, final/) and any exported files are untouched" in err
    assert (study / "study.db").read_bytes() == damaged  # reading never "repairs" anything
    assert not (tmp_path / "r.html").exists()


def test_readers_open_the_store_read_only(wine_study):
    store = Store.open(wine_study)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            store._con.execute("UPDATE runs SET status='x'")
    finally:
        store.close()


@pytest.fixture
def read_only(copy_of, tmp_path):
    """A copy of the study that this process cannot write: a read-only bind mount when running as root (root
    ignores file modes), else the modes."""
    source = copy_of("source")
    if os.geteuid() != 0:
        for path in (source, *source.rglob("*")):
            path.chmod(path.stat().st_mode & ~0o222)
        yield source
        for path in (source, *source.rglob("*")):
            path.chmod(path.stat().st_mode | 0o200)
        return
    target = tmp_path / "ro"
    target.mkdir()
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(source), str(target)], capture_output=True,
                             check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot make a read-only mount here: {mounted.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True, capture_output=True)
        assert not os.access(target, os.W_OK) or _cannot_write(target)
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=False, capture_output=True)


def _cannot_write(directory: Path) -> bool:
    try:
        (directory / "probe").write_text("x")
    except OSError:
        return True
    return False


def test_a_read_only_study_is_shown_reported_elsewhere_and_exported(read_only, tmp_path):
    code, out, err = cli("show", str(read_only))
    assert code == 0 and "Traceback" not in err and "bs1-seed0" in out, err
    assert cli("report", str(read_only), "--out", str(tmp_path / "r.html"))[0] == 0
    assert (tmp_path / "r.html").stat().st_size > 1000
    assert cli("export", str(read_only), "--to", str(tmp_path / "csv"))[0] == 0
    assert (tmp_path / "csv" / "epochs.csv").exists()
    code, _, err = cli("report", str(read_only))  # into the read-only study directory itself
    assert code == 2 and err.count("\n") == 1 and "cannot write" in err, err


def test_report_and_export_never_write_over_the_study(copy_of):
    study = copy_of()
    before = (study / "study.db").read_bytes()
    for argv, field in ((["report", str(study), "--out", str(study / "study.db")], "out"),
                        (["report", str(study), "--out", str(study / "init" / "x.html")], "out"),
                        (["export", str(study), "--to", str(study / "final")], "to"),
                        (["export", str(study), "--format", "mlflow", "--to", f"sqlite:///{study}/study.db"], "to")):
        code, _, err = cli(*argv)
        assert code == 2 and err.count("\n") == 1, err
        assert f"error: {field}: got " in err and "allowed: a path outside the study's own files" in err
    assert (study / "study.db").read_bytes() == before
    with sqlite3.connect(study / "study.db") as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


def test_csv_export_refuses_to_overwrite_an_earlier_one(copy_of, tmp_path):
    study = copy_of()
    assert cli("export", str(study), "--to", str(tmp_path / "csv"))[0] == 0
    (tmp_path / "csv" / "runs.csv").write_text("mine")
    code, _, err = cli("export", str(study), "--to", str(tmp_path / "csv"))
    assert code == 2 and "runs.csv exists" in err
    assert (tmp_path / "csv" / "runs.csv").read_text() == "mine"


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs (root only; skipped elsewhere)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True,
                             check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small disk here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False, capture_output=True)


def test_a_full_disk_is_one_line_and_leaves_no_partial_report(wine_study, small_disk):
    (small_disk / "filler").write_bytes(b"x" * 900_000)
    code, _, err = cli("report", str(wine_study), "--out", str(small_disk / "report.html"))  # ~5 MB of HTML
    assert code == 2 and err.count("\n") == 1, err
    assert "cannot write (no space left on device)" in err
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]
