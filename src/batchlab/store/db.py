"""The study store: one SQLite file (stdlib `sqlite3`, WAL) plus parameter snapshots as `.npz` files.

Layout of a study directory::

    study.db            runs, per-epoch metrics, per-step losses (one float32 blob per run and epoch)
    init/<run_id>.npz   initial parameters, keys in layer order, weights (fan_in, fan_out)
    final/<run_id>.npz  parameters at the end of training
    figures/            PNG figures

Each epoch of a group is one transaction, so a killed process loses at most the epoch in flight. The store
knows nothing of JAX: it takes and gives plain NumPy arrays and dicts.
"""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import sqlite3
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import numpy as np

from batchlab.errors import BatchlabError, environment_error, invalid

DB_NAME = "study.db"
PARTIAL_NAME = ".study.db.partial"
TABLES = ("study", "runs", "epochs", "run_metrics", "checkpoints", "steps")
STUDY_FILES = (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal", PARTIAL_NAME, ".study.lock")
"""Files of a study directory that only batchlab's writer may write (with the folders in STUDY_FOLDERS)."""
STUDY_FOLDERS = ("init", "final")
GENERATED = ("figures", "report.html")
"""What `show --figures` and `report` write into a study directory (removed with the study by overwrite)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS study (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, group_id TEXT NOT NULL, batch_size INTEGER NOT NULL, lr REAL NOT NULL, seed INTEGER NOT NULL,
    init_seed INTEGER NOT NULL, order_seed INTEGER NOT NULL, n_train INTEGER NOT NULL,
    updates_per_epoch INTEGER NOT NULL, epochs_planned INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending', diverged_epoch INTEGER,
    epochs_done INTEGER NOT NULL DEFAULT 0, total_updates INTEGER NOT NULL DEFAULT 0,
    examples_seen INTEGER NOT NULL DEFAULT 0, wall_time_s REAL NOT NULL DEFAULT 0, compile_time_s REAL,
    config TEXT NOT NULL, versions TEXT NOT NULL, device TEXT NOT NULL, created_at REAL NOT NULL,
    finished_at REAL, parent_run_id TEXT, branch_epoch INTEGER, multiplier REAL
);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT NOT NULL REFERENCES runs(run_id), epoch INTEGER NOT NULL, updates INTEGER NOT NULL,
    examples_seen INTEGER NOT NULL, wall_time_s REAL NOT NULL, train_loss REAL, train_acc REAL,
    test_loss REAL, test_acc REAL, b_simple REAL, b_simple_low REAL, b_simple_high REAL, grad_sq_norm REAL,
    trace_sigma REAL, batch_size INTEGER, lr REAL, PRIMARY KEY (run_id, epoch)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS run_metrics (
    run_id TEXT NOT NULL REFERENCES runs(run_id), name TEXT NOT NULL, value REAL, PRIMARY KEY (run_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    group_id TEXT PRIMARY KEY, epoch INTEGER NOT NULL, wall_time_s REAL NOT NULL, state BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS evals (
    run_id TEXT NOT NULL REFERENCES runs(run_id), step INTEGER NOT NULL, examples_seen INTEGER NOT NULL,
    train_loss REAL, train_acc REAL, test_loss REAL, test_acc REAL, PRIMARY KEY (run_id, step)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS run_checkpoints (
    run_id TEXT NOT NULL REFERENCES runs(run_id), epoch INTEGER NOT NULL, state BLOB NOT NULL,
    PRIMARY KEY (run_id, epoch)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sharpness (
    run_id TEXT NOT NULL REFERENCES runs(run_id), epoch INTEGER NOT NULL, hessian_top_eigenvalue REAL,
    hessian_trace REAL, batch_sharpness REAL, PRIMARY KEY (run_id, epoch)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL REFERENCES runs(run_id), epoch INTEGER NOT NULL, first_step INTEGER NOT NULL,
    losses BLOB NOT NULL, PRIMARY KEY (run_id, epoch)
) WITHOUT ROWID;
"""

RUN_CHECKPOINTS_SCHEMA = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS run_checkpoints"):
                                SCHEMA.index("CREATE TABLE IF NOT EXISTS sharpness")].strip().rstrip(";")
"""The kept training states (`checkpoint_every`): one compressed NPZ of a run's (params, optimizer state)
leaves per kept epoch, written in the epoch's transaction. Studies made before it gain the table when opened
for writing."""
SHARPNESS_SCHEMA = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS sharpness"):
                          SCHEMA.index("CREATE TABLE IF NOT EXISTS steps")].strip().rstrip(";")
"""Curvature during training (`sharpness_every`); studies made before it gain the table when opened for writing."""

EVAL_FIELDS = ("step", "examples_seen", "train_loss", "train_acc", "test_loss", "test_acc")
"""Evaluations between epoch ends (`eval_every_steps`): at update `step`, after `examples_seen` examples."""
EPOCH_FIELDS = ("epoch", "updates", "examples_seen", "wall_time_s", "train_loss", "train_acc", "test_loss",
                "test_acc", "b_simple", "b_simple_low", "b_simple_high", "grad_sq_norm", "trace_sigma",
                "batch_size", "lr")
"""Per-epoch fields; the five of the gradient noise scale are NaN at epochs where it was not measured;
`batch_size` and `lr` are those in force that epoch (they change under schedules; the rate at the epoch's last
update)."""
BRANCH_RUN_COLUMNS = {"parent_run_id": "TEXT", "branch_epoch": "INTEGER", "multiplier": "REAL"}
"""Runs columns of branches (`batchlab branch`): the run branched from, its epoch, and k in k x B; NULL for
runs that are not branches. Studies made before them gain them when opened for writing."""
SCHEDULE_EPOCH_COLUMNS = {"batch_size": ("INTEGER", "batch_size"), "lr": ("REAL", "lr")}
"""Epochs columns added with schedules (issue 14): column -> (SQL type, the runs column older stores fall back
to, where they were constant)."""
SHARPNESS_FIELDS = ("hessian_top_eigenvalue", "hessian_trace", "batch_sharpness")
"""Curvature during training (`sharpness_every`), kept in their own table and read as further per-epoch fields
(NaN at epochs where it was not measured, and in studies written before it existed)."""


@dataclass(frozen=True)
class RunInfo:
    """What is known about a run before it trains."""

    run_id: str
    group_id: str
    batch_size: int
    lr: float
    seed: int
    init_seed: int
    order_seed: int
    n_train: int
    updates_per_epoch: int
    epochs_planned: int
    parent_run_id: str | None = None
    branch_epoch: int | None = None
    multiplier: float | None = None


@dataclass(frozen=True)
class EpochRow:
    """One run's results for one epoch; `step_losses` holds that epoch's minibatch losses (float32)."""

    run_id: str
    epoch: int
    updates: int
    examples_seen: int
    wall_time_s: float
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    step_losses: np.ndarray
    gns: tuple[float, float, float, float, float] | None = None
    """(b_simple, b_simple_low, b_simple_high, grad_sq_norm, trace_sigma) when measured at this epoch."""
    evals: np.ndarray | None = None
    """(n, 6) evaluations between this epoch's ends, columns EVAL_FIELDS, when there were any."""
    batch_size: int | None = None
    """The batch size in force this epoch (None: the run's)."""
    lr: float | None = None
    """The rate in force at this epoch's last update (None: the run's)."""
    sharpness: tuple[float, float, float] | None = None
    """(hessian_top_eigenvalue, hessian_trace, batch_sharpness) when measured at this epoch (SHARPNESS_FIELDS)."""


def _connect(path: Path) -> sqlite3.Connection:
    """A connection for the study's one writer (see :mod:`batchlab.store.lock`): WAL, explicit transactions."""
    con = sqlite3.connect(path, isolation_level=None)  # explicit BEGIN/COMMIT below
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("PRAGMA foreign_keys=ON")
    return con


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection (`mode=ro`): it never writes, so a study on a read-only disk or in a directory this
    user cannot write opens too. SQLite reads a WAL database read-only when it can create the -shm file beside
    it; where it cannot (a read-only directory) and no write-ahead log is waiting, the file is read as immutable."""
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    con = sqlite3.connect(uri, uri=True, isolation_level=None)
    try:
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        con.close()
        wal = path.with_name(path.name + "-wal")
        if os.access(path.parent, os.W_OK) or (wal.exists() and wal.stat().st_size > 0):
            raise
        con = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None)
    con.row_factory = sqlite3.Row
    return con


class StudyDamaged(BatchlabError):
    """study.db cannot be read as a study: truncated, overwritten, a table or the metadata missing."""


T = TypeVar("T")


def _guarded(*caught: type[BaseException]) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Turn what a damaged database, a full disk or a read-only file raise into one-line errors (see
    :meth:`Store.error`); a locked database or a broken constraint stays a traceback (a bug)."""

    def decorate(method: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(method)
        def wrapper(self: Store, *args: Any, **kwargs: Any) -> T:
            try:
                return method(self, *args, **kwargs)
            except (sqlite3.DatabaseError, OSError, *caught) as e:  # type: ignore[misc]  # a tuple of classes
                error = self.error(e)
                if error is None:
                    raise
                raise error from None

        return wrapper

    return decorate


_reading = _guarded(json.JSONDecodeError, zipfile.BadZipFile, KeyError, ValueError, TypeError)
"""For methods that decode what the database holds: a value that does not decode is damage."""
_writing = _guarded()


def study_exists(directory: str | Path) -> bool:
    """Whether `directory` holds a study (an empty study.db, which merely opening a path in sqlite3 creates, is
    none)."""
    path = Path(directory) / DB_NAME
    return path.is_file() and path.stat().st_size > 0


def require_directory_path(field: str, directory: str | Path) -> None:
    """Refuse a path that cannot become a directory because it, or a parent, is a file."""
    d = Path(directory)
    blocker = next((p for p in (d, *d.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise invalid(field, str(directory), f"a directory path ({blocker} is a file)")


def check_out(directory: str | Path) -> None:
    """A new study may go to `directory` only if it is (or can become) a directory holding no study yet."""
    d = Path(directory)
    require_directory_path("out", d)
    if study_exists(d):
        raise BatchlabError(f"out: {d} already holds a study ({DB_NAME}); allowed: a new --out directory, or "
                            f"batchlab resume {d} to finish it")


def check_outside_study(field: str, target: str | Path, study: str | Path) -> None:
    """Refuse a destination that is one of the study's own files (study.db, its journal, the lock) or lies in its
    parameter folders: a report or an export must never replace what it was made from."""
    t, d = Path(target).resolve(), Path(study).resolve()
    own = [d / name for name in STUDY_FILES]
    folders = [d / name for name in STUDY_FOLDERS]
    if t in own or any(t == f or f in t.parents for f in folders):
        raise invalid(field, str(target), f"a path outside the study's own files ({', '.join(STUDY_FILES[:1])}, "
                      f"{', '.join(f + '/' for f in STUDY_FOLDERS)} of {study})")


def remove_study(directory: str | Path) -> None:
    """Delete a study's files (the database, parameter folders, figures and report), and nothing else in the
    directory; the caller holds the study's lock (overwrite=True in the Python API)."""
    d = Path(directory)
    for name in STUDY_FILES[:-1]:
        (d / name).unlink(missing_ok=True)
    for name in (*STUDY_FOLDERS, *GENERATED):
        path = d / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Call `write(temporary path)` beside `path`, then rename it into place: a reader sees the old file or the
    whole new one, and a failed write (a full disk) leaves no temporary file behind."""
    tmp = path.with_name(f".{path.name}.partial")
    try:
        write(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


class Store:
    """A study directory opened for writing (:meth:`create`, :meth:`open` with `write=True`, under the study's
    lock) or reading (:meth:`open`, read-only)."""

    def __init__(self, directory: Path, con: sqlite3.Connection):
        self.directory = directory
        self._con = con

    def __repr__(self) -> str:
        return f"Store({str(self.directory)!r}, runs={len(self.runs())})"

    @property
    def path(self) -> Path:
        return self.directory / DB_NAME

    @classmethod
    def create(cls, directory: str | Path, *, meta: Mapping[str, Any]) -> Store:
        """Start a new study in `directory` (refused if it already holds one). The database is built under a
        temporary name and appears as study.db only at :meth:`publish`, so a process killed while registering
        runs leaves no half-made study behind. The caller holds the directory's lock, so a leftover temporary
        database is a dead writer's and is replaced."""
        d = Path(directory)
        check_out(d)
        d.mkdir(parents=True, exist_ok=True)
        for leftover in d.glob(PARTIAL_NAME + "*"):
            leftover.unlink()
        store = cls(d, _connect(d / PARTIAL_NAME))
        store._initialize(meta)
        return store

    @_writing
    def _initialize(self, meta: Mapping[str, Any]) -> None:
        with _transaction(self._con):
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self._con.execute(statement)
            self._con.executemany("INSERT INTO study VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])

    @_writing
    def publish(self) -> None:
        """Make a newly created study visible as study.db (atomically), and keep it open."""
        partial = self.directory / PARTIAL_NAME
        if not partial.exists():
            return
        self._con.close()
        partial.replace(self.directory / DB_NAME)
        self._con = _connect(self.directory / DB_NAME)

    def discard(self) -> None:
        """Remove a study that was created but never published (registration failed): its temporary database
        and the parameter files written so far."""
        self._con.close()
        for leftover in self.directory.glob(PARTIAL_NAME + "*"):
            leftover.unlink(missing_ok=True)
        for folder in STUDY_FOLDERS:
            shutil.rmtree(self.directory / folder, ignore_errors=True)

    @classmethod
    def open(cls, directory: str | Path, *, write: bool = False) -> Store:
        """Open an existing study directory: read-only (never writes, works on read-only files), or for writing
        by the study's lock holder. Raises StudyDamaged if study.db is not a readable study database."""
        d = Path(directory)
        if not study_exists(d):
            raise BatchlabError(f"dir: {d} holds no study ({DB_NAME} not found); allowed: a directory written "
                                "by 'batchlab run' or 'batchlab sweep'")
        store = cls(d, sqlite3.connect(":memory:"))
        store._attach(write)
        return store

    @_reading
    def _attach(self, write: bool) -> None:
        self._con.close()
        self._con = _connect(self.path) if write else _connect_readonly(self.path)
        tables = {r[0] for r in self._con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        missing = [t for t in TABLES if t not in tables]
        if missing:
            raise sqlite3.DatabaseError(f"no table {missing[0]!r}")
        if write:  # a study written before schedules gains their epochs columns (NULL: the run's values)
            self._con.execute(RUN_CHECKPOINTS_SCHEMA)
            self._con.execute(SHARPNESS_SCHEMA)
            have_runs = {r[1] for r in self._con.execute("PRAGMA table_info(runs)")}
            for name, kind in BRANCH_RUN_COLUMNS.items():
                if name not in have_runs:
                    self._con.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
            have = self._epoch_columns()
            for name, (kind, _) in SCHEDULE_EPOCH_COLUMNS.items():
                if name not in have:
                    self._con.execute(f"ALTER TABLE epochs ADD COLUMN {name} {kind}")

    def _epoch_columns(self) -> set[str]:
        return {r[1] for r in self._con.execute("PRAGMA table_info(epochs)")}

    def close(self) -> None:
        self._con.close()

    def error(self, e: BaseException) -> BatchlabError | None:
        """The one-line error for what reading or writing study.db raised: a full disk, a read-only file, or
        damage (StudyDamaged); None for anything else (a locked database, a constraint: bugs)."""
        if isinstance(e, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError):
            return None
        text = " ".join(str(e.args[0] if isinstance(e, KeyError) and e.args else e).split())
        if isinstance(e, sqlite3.OperationalError):
            if "locked" in text or "busy" in text or "interrupted" in text:
                return None
            if "disk is full" in text:
                return BatchlabError(f"{self.path}: no space left on device; free some space and run the same "
                                     "command again (what was committed is kept)")
            if "readonly" in text or "read-only" in text:
                return BatchlabError(f"{self.path}: cannot write (a read-only file or disk); allowed: a study "
                                     "directory this user can write")
        if isinstance(e, OSError) and not isinstance(e, zipfile.BadZipFile):
            return environment_error(e)
        return StudyDamaged(f"dir: {self.path} is damaged: {text or type(e).__name__}; the parameter files "
                            f"({', '.join(f + '/' for f in STUDY_FOLDERS)}) and any exported files are untouched "
                            "(restore study.db from a copy, or start again in a new directory)")

    # -- writing ------------------------------------------------------------------------------------------
    @_writing
    def add_runs(self, runs: Iterable[tuple[RunInfo, Mapping[str, Any]]], *, versions: Mapping[str, str],
                 device: str) -> None:
        """Register runs with their full config (the spec of their sweep point)."""
        now = time.time()
        runs = list(runs)
        with _transaction(self._con):
            branches = [(r.parent_run_id, r.branch_epoch, r.multiplier, r.run_id) for r, _ in runs
                         if r.parent_run_id is not None]
            self._con.executemany(
                "INSERT INTO runs (run_id, group_id, batch_size, lr, seed, init_seed, order_seed, n_train,"
                " updates_per_epoch, epochs_planned, config, versions, device, created_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(r.run_id, r.group_id, r.batch_size, r.lr, r.seed, r.init_seed, r.order_seed, r.n_train,
                  r.updates_per_epoch, r.epochs_planned,
                  json.dumps(dict(config, batch_size=r.batch_size, lr=r.lr, init_seed=r.init_seed,
                                  order_seed=r.order_seed), sort_keys=True),
                  json.dumps(dict(versions)), device, now) for r, config in runs])
            self._con.executemany("UPDATE runs SET parent_run_id=?, branch_epoch=?, multiplier=? WHERE run_id=?",
                                  branches)

    @_writing
    def save_params(self, run_id: str, flat_params: Mapping[str, np.ndarray], *, kind: str = "init") -> Path:
        """Write `kind/<run_id>.npz` (kind is `init` or `final`) atomically."""
        folder = self.directory / kind
        folder.mkdir(exist_ok=True)
        arrays = dict(flat_params)

        def write(tmp: Path) -> None:
            with tmp.open("wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types allow_pickle as a kwarg

        return write_atomic(folder / f"{run_id}.npz", write)

    @_writing
    def write_epoch(self, rows: Iterable[EpochRow], *, diverged: Iterable[str] = (),
                    compile_time_s: float | None = None, checkpoint: GroupCheckpoint | None = None,
                    kept: Mapping[str, list[np.ndarray]] | None = None) -> None:
        """Record one epoch of a group in one transaction: metrics, step losses, run progress and the group's
        checkpoint, so that a killed process resumes exactly after the last committed epoch. `kept`: run id ->
        that run's state leaves to keep at this epoch (`checkpoint_every`)."""
        rows = list(rows)
        diverged = set(diverged)
        with _transaction(self._con):
            if kept:
                epoch = rows[0].epoch if rows else checkpoint.epoch if checkpoint is not None else 0
                self._con.executemany("INSERT OR REPLACE INTO run_checkpoints VALUES (?, ?, ?)",
                                      [(rid, epoch, _npz_bytes({f"leaf{i:05d}": a for i, a in enumerate(leaves)},
                                                               compressed=True)) for rid, leaves in kept.items()])
            if checkpoint is not None:
                self._con.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?)",
                                  (checkpoint.group_id, checkpoint.epoch, checkpoint.wall_time_s,
                                   _npz_bytes(checkpoint.arrays())))
            self._con.executemany(
                f"INSERT INTO epochs ({', '.join(('run_id',) + EPOCH_FIELDS)}) VALUES "
                f"({', '.join('?' * (1 + len(EPOCH_FIELDS)))})",
                [(r.run_id, r.epoch, r.updates, r.examples_seen, r.wall_time_s, _real(r.train_loss),
                  _real(r.train_acc), _real(r.test_loss), _real(r.test_acc),
                  *(_real(v) for v in (r.gns or (np.nan,) * 5)), None if r.batch_size is None else int(r.batch_size),
                  None if r.lr is None else _real(r.lr)) for r in rows])
            self._con.executemany(
                f"INSERT INTO evals (run_id, {', '.join(EVAL_FIELDS)}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(r.run_id, int(e[0]), int(e[1]), *(_real(v) for v in e[2:])) for r in rows
                 if r.evals is not None for e in r.evals])
            self._con.executemany(
                f"INSERT INTO sharpness (run_id, epoch, {', '.join(SHARPNESS_FIELDS)}) VALUES (?, ?, ?, ?, ?)",
                [(r.run_id, r.epoch, *(_real(v) for v in r.sharpness)) for r in rows if r.sharpness is not None])
            self._con.executemany(
                "INSERT INTO steps VALUES (?, ?, ?, ?)",
                [(r.run_id, r.epoch, r.updates - len(r.step_losses), np.asarray(r.step_losses, "<f4").tobytes())
                 for r in rows if len(r.step_losses)])
            for r in rows:
                status = "diverged" if r.run_id in diverged else "running"
                self._con.execute(
                    "UPDATE runs SET status=?, diverged_epoch=CASE WHEN ?='diverged' THEN ? ELSE diverged_epoch END,"
                    " epochs_done=?, total_updates=?, examples_seen=?, wall_time_s=?,"
                    " compile_time_s=COALESCE(?, compile_time_s),"
                    " finished_at=CASE WHEN ?='diverged' THEN ? ELSE NULL END WHERE run_id=?",
                    (status, status, r.epoch, r.epoch, r.updates, r.examples_seen, r.wall_time_s, compile_time_s,
                     status, time.time(), r.run_id))

    @_writing
    def finish_runs(self, run_ids: Iterable[str], *, status: str) -> None:
        """Mark runs as `completed`, `interrupted` or `failed`; diverged runs keep their status."""
        with _transaction(self._con):
            self._con.executemany("UPDATE runs SET status=?, finished_at=? WHERE run_id=? AND status!='diverged'",
                                  [(status, time.time(), rid) for rid in run_ids])

    @_writing
    def write_run_metrics(self, metrics: Mapping[str, Mapping[str, float]]) -> None:
        """End-of-training measurements per run (sharpness, ...): {run_id: {name: value}}."""
        with _transaction(self._con):
            self._con.executemany("INSERT OR REPLACE INTO run_metrics VALUES (?, ?, ?)",
                                  [(rid, name, _real(v)) for rid, m in metrics.items() for name, v in m.items()])

    @_reading
    def run_metrics(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for r in self._con.execute("SELECT run_id, name, value FROM run_metrics ORDER BY run_id, name"):
            out.setdefault(r["run_id"], {})[r["name"]] = np.nan if r["value"] is None else r["value"]
        return out

    @_writing
    def mark_runs(self, run_ids: Iterable[str], *, status: str) -> None:
        """Set the status of runs that have not completed or diverged (e.g. `running` again on resume)."""
        with _transaction(self._con):
            self._con.executemany("UPDATE runs SET status=? WHERE run_id=? AND status NOT IN ('completed', 'diverged')",
                                  [(status, rid) for rid in run_ids])

    @_writing
    def interrupt_running(self) -> None:
        """Runs marked `running` become `interrupted`: called by the study's one writer (see
        :mod:`batchlab.store.lock`) when it stops, and when it opens a study a dead writer left."""
        with _transaction(self._con):
            self._con.execute("UPDATE runs SET status='interrupted' WHERE status='running'")

    # -- reading ------------------------------------------------------------------------------------------
    @_reading
    def checkpoint(self, group_id: str) -> GroupCheckpoint | None:
        """The last committed checkpoint of a group, or None if none was written."""
        row = self._con.execute("SELECT epoch, wall_time_s, state FROM checkpoints WHERE group_id=?",
                                (group_id,)).fetchone()
        if row is None:
            return None
        with np.load(io.BytesIO(row["state"])) as f:
            arrays = [f[k] for k in sorted(f.files)]
        return GroupCheckpoint(group_id, row["epoch"], row["wall_time_s"], arrays[0].astype(bool), arrays[1:])

    @_reading
    def kept_epochs(self, run_id: str) -> list[int]:
        """The epochs at which a run's full state was kept (`checkpoint_every`), increasing."""
        if not self._has_table("run_checkpoints"):
            return []
        return [int(r[0]) for r in self._con.execute("SELECT epoch FROM run_checkpoints WHERE run_id=? ORDER BY "
                                                     "epoch", (run_id,))]

    @_reading
    def kept_state(self, run_id: str, epoch: int) -> list[np.ndarray] | None:
        """A run's state leaves (params, then optimizer state; no replica axis) kept at `epoch`, or None."""
        if not self._has_table("run_checkpoints"):
            return None
        row = self._con.execute("SELECT state FROM run_checkpoints WHERE run_id=? AND epoch=?",
                                (run_id, epoch)).fetchone()
        if row is None:
            return None
        with np.load(io.BytesIO(row["state"])) as f:
            return [f[k] for k in sorted(f.files)]

    def _has_table(self, name: str) -> bool:
        return self._con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() \
            is not None

    @_reading
    def last_epoch(self, group_id: str) -> int | None:
        """The last epoch any run of the group has recorded (None before epoch 0): with per-epoch transactions,
        every run still training has recorded exactly this epoch."""
        row = self._con.execute("SELECT MAX(e.epoch) FROM epochs e JOIN runs r ON r.run_id = e.run_id "
                                "WHERE r.group_id=?", (group_id,)).fetchone()
        return None if row[0] is None else int(row[0])

    @_reading
    def statuses(self) -> dict[str, str]:
        return {r["run_id"]: r["status"] for r in self._con.execute("SELECT run_id, status FROM runs")}

    @_reading
    def meta(self, *, required: Mapping[str, type] | None = None) -> dict[str, Any]:
        """The study's metadata; with `required` ({key: type}), a missing or mistyped key is damage."""
        meta = {r["key"]: json.loads(r["value"]) for r in self._con.execute("SELECT key, value FROM study")}
        for key, kind in (required or {}).items():
            if not isinstance(meta.get(key), kind):
                raise KeyError(f"the study metadata lacks {key!r}" if key not in meta else
                               f"the study metadata's {key!r} is not a {kind.__name__}")
        return meta

    @_reading
    def runs(self) -> list[dict[str, Any]]:
        """All runs, ordered by batch size then seed, as dicts (config and versions decoded)."""
        out = []
        for r in self._con.execute("SELECT * FROM runs ORDER BY batch_size, lr, seed, run_id"):
            d: dict[str, Any] = {name: None for name in BRANCH_RUN_COLUMNS} | dict(r)  # older stores lack them
            d["config"], d["versions"] = json.loads(d["config"]), json.loads(d["versions"])
            out.append(d)
        return out

    @_reading
    def epochs(self, run_id: str) -> dict[str, np.ndarray]:
        """Per-epoch records of one run as arrays keyed by field name (missing values are NaN)."""
        have = self._epoch_columns()
        columns = [(f"COALESCE(e.{f}, r.{SCHEDULE_EPOCH_COLUMNS[f][1]})" if f in have else
                    f"r.{SCHEDULE_EPOCH_COLUMNS[f][1]}") if f in SCHEDULE_EPOCH_COLUMNS else f"e.{f}"
                   for f in EPOCH_FIELDS]
        rows = self._con.execute(f"SELECT {', '.join(columns)} FROM epochs e JOIN runs r ON r.run_id = e.run_id "
                                 "WHERE e.run_id=? ORDER BY e.epoch", (run_id,)).fetchall()
        counts = ("epoch", "updates", "examples_seen", "batch_size")
        out = {f: np.array([np.nan if r[i] is None else r[i] for r in rows], dtype=np.int64 if f in counts else float)
               for i, f in enumerate(EPOCH_FIELDS)}
        out.update(self._sharpness(run_id, out["epoch"]))
        return out

    def _sharpness(self, run_id: str, epochs: np.ndarray) -> dict[str, np.ndarray]:
        """SHARPNESS_FIELDS aligned with `epochs` (NaN where not measured)."""
        out = {f: np.full(len(epochs), np.nan) for f in SHARPNESS_FIELDS}
        has_table = self._con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='sharpness'").fetchone()
        if has_table is None:  # studies written before sharpness during training existed
            return out
        position = {int(e): i for i, e in enumerate(epochs)}
        for epoch, *values in self._con.execute(
                f"SELECT epoch, {', '.join(SHARPNESS_FIELDS)} FROM sharpness WHERE run_id=?", (run_id,)):
            if epoch in position:
                for f, v in zip(SHARPNESS_FIELDS, values):
                    out[f][position[epoch]] = np.nan if v is None else v
        return out

    @_reading
    def evals(self, run_id: str) -> dict[str, np.ndarray]:
        """Evaluations between epoch ends of one run, by update count, as arrays keyed by EVAL_FIELDS (empty
        arrays when the study evaluated at epoch ends only)."""
        has_table = self._con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='evals'").fetchone()
        rows = [] if has_table is None else self._con.execute(  # studies written before evals existed have none
            f"SELECT {', '.join(EVAL_FIELDS)} FROM evals WHERE run_id=? ORDER BY step", (run_id,)).fetchall()
        counts = ("step", "examples_seen")
        return {f: np.array([np.nan if r[i] is None else r[i] for r in rows], dtype=np.int64 if f in counts else float)
                for i, f in enumerate(EVAL_FIELDS)}

    @_reading
    def step_losses(self, run_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(epoch of each step, minibatch loss of each step) for one run, in step order."""
        rows = self._con.execute("SELECT epoch, losses FROM steps WHERE run_id=? ORDER BY epoch", (run_id,))
        epochs, losses = [], []
        for r in rows:
            values = np.frombuffer(r["losses"], "<f4")
            losses.append(values)
            epochs.append(np.full(len(values), r["epoch"], np.int64))
        if not losses:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        return np.concatenate(epochs), np.concatenate(losses)

    def load_params(self, run_id: str, *, kind: str = "init") -> dict[str, np.ndarray]:
        path = self.directory / kind / f"{run_id}.npz"
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except FileNotFoundError:
            raise BatchlabError(f"dir: {path} is missing (the {kind} parameters of run {run_id})") from None
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise BatchlabError(f"dir: {path} is damaged ({' '.join(str(e).split())})") from None


@dataclass(frozen=True)
class GroupCheckpoint:
    """A group's state after `epoch`: which replicas are active, and the state leaves (replica axis first)."""

    group_id: str
    epoch: int
    wall_time_s: float
    active: np.ndarray
    leaves: list[np.ndarray]

    def arrays(self) -> dict[str, np.ndarray]:
        return {"a_active": np.asarray(self.active), **{f"leaf{i:05d}": a for i, a in enumerate(self.leaves)}}


def _npz_bytes(arrays: Mapping[str, np.ndarray], *, compressed: bool = False) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **dict(arrays))  # type: ignore[arg-type]  # as above
    return buffer.getvalue()


def _real(x: float) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


class _transaction:
    def __init__(self, con: sqlite3.Connection):
        self.con = con

    def __enter__(self) -> sqlite3.Connection:
        if self.con.in_transaction:  # one that an abort (a second Ctrl-C) cut off between BEGIN and its block
            self.con.execute("ROLLBACK")
        self.con.execute("BEGIN IMMEDIATE")
        return self.con

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.con.execute("COMMIT")
        elif self.con.in_transaction:  # SQLite may already have rolled back (a full disk)
            self.con.execute("ROLLBACK")
