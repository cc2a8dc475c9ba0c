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

import io
import json
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from batchlab.errors import BatchlabError, invalid

DB_NAME = "study.db"
PARTIAL_NAME = ".study.db.partial"

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
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT NOT NULL REFERENCES runs(run_id), epoch INTEGER NOT NULL, updates INTEGER NOT NULL,
    examples_seen INTEGER NOT NULL, wall_time_s REAL NOT NULL, train_loss REAL, train_acc REAL,
    test_loss REAL, test_acc REAL, b_simple REAL, b_simple_low REAL, b_simple_high REAL, grad_sq_norm REAL,
    trace_sigma REAL, PRIMARY KEY (run_id, epoch)
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
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL REFERENCES runs(run_id), epoch INTEGER NOT NULL, first_step INTEGER NOT NULL,
    losses BLOB NOT NULL, PRIMARY KEY (run_id, epoch)
) WITHOUT ROWID;
"""

EVAL_FIELDS = ("step", "examples_seen", "train_loss", "train_acc", "test_loss", "test_acc")
"""Evaluations between epoch ends (`eval_every_steps`): at update `step`, after `examples_seen` examples."""
EPOCH_FIELDS = ("epoch", "updates", "examples_seen", "wall_time_s", "train_loss", "train_acc", "test_loss",
                "test_acc", "b_simple", "b_simple_low", "b_simple_high", "grad_sq_norm", "trace_sigma")
"""Per-epoch fields; the last five (the gradient noise scale) are NaN at epochs where it was not measured."""


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


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)  # explicit BEGIN/COMMIT below
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("PRAGMA foreign_keys=ON")
    return con


def study_exists(directory: str | Path) -> bool:
    return (Path(directory) / DB_NAME).exists()


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
        raise BatchlabError(f"out: {d} already holds a study ({DB_NAME}); choose a new --out directory")


class Store:
    """A study directory opened for writing (:meth:`create`) or reading (:meth:`open`)."""

    def __init__(self, directory: Path, con: sqlite3.Connection):
        self.directory = directory
        self._con = con

    def __repr__(self) -> str:
        return f"Store({str(self.directory)!r}, runs={len(self.runs())})"

    @classmethod
    def create(cls, directory: str | Path, *, meta: Mapping[str, Any]) -> Store:
        """Start a new study in `directory` (refused if it already holds one). The database is built under a
        temporary name and appears as study.db only at :meth:`publish`, so a process killed while registering
        runs leaves no half-made study behind."""
        d = Path(directory)
        check_out(d)
        d.mkdir(parents=True, exist_ok=True)
        for leftover in d.glob(PARTIAL_NAME + "*"):
            leftover.unlink()
        con = _connect(d / PARTIAL_NAME)
        with _transaction(con):
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)
            con.executemany("INSERT INTO study VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
        return cls(d, con)

    def publish(self) -> None:
        """Make a newly created study visible as study.db (atomically), and keep it open."""
        partial = self.directory / PARTIAL_NAME
        if not partial.exists():
            return
        self._con.close()
        partial.replace(self.directory / DB_NAME)
        self._con = _connect(self.directory / DB_NAME)

    @classmethod
    def open(cls, directory: str | Path) -> Store:
        """Open an existing study directory."""
        d = Path(directory)
        if not study_exists(d):
            raise BatchlabError(f"dir: {d} holds no study ({DB_NAME} not found); allowed: a directory written "
                                "by 'batchlab run'")
        return cls(d, _connect(d / DB_NAME))

    def close(self) -> None:
        self._con.close()

    # -- writing ------------------------------------------------------------------------------------------
    def add_runs(self, runs: Iterable[tuple[RunInfo, Mapping[str, Any]]], *, versions: Mapping[str, str],
                 device: str) -> None:
        """Register runs with their full config (the spec of their sweep point)."""
        now = time.time()
        with _transaction(self._con):
            self._con.executemany(
                "INSERT INTO runs (run_id, group_id, batch_size, lr, seed, init_seed, order_seed, n_train,"
                " updates_per_epoch, epochs_planned, config, versions, device, created_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(r.run_id, r.group_id, r.batch_size, r.lr, r.seed, r.init_seed, r.order_seed, r.n_train,
                  r.updates_per_epoch, r.epochs_planned,
                  json.dumps(dict(config, batch_size=r.batch_size, lr=r.lr, init_seed=r.init_seed,
                                  order_seed=r.order_seed), sort_keys=True),
                  json.dumps(dict(versions)), device, now) for r, config in runs])

    def save_params(self, run_id: str, flat_params: Mapping[str, np.ndarray], *, kind: str = "init") -> Path:
        """Write `kind/<run_id>.npz` (kind is `init` or `final`) atomically."""
        folder = self.directory / kind
        folder.mkdir(exist_ok=True)
        path = folder / f"{run_id}.npz"
        tmp = folder / f".{run_id}.tmp.npz"
        np.savez(tmp, **dict(flat_params))  # type: ignore[arg-type]  # numpy's stub types allow_pickle as a kwarg
        tmp.replace(path)
        return path

    def write_epoch(self, rows: Iterable[EpochRow], *, diverged: Iterable[str] = (),
                    compile_time_s: float | None = None, checkpoint: GroupCheckpoint | None = None) -> None:
        """Record one epoch of a group in one transaction: metrics, step losses, run progress and the group's
        checkpoint, so that a killed process resumes exactly after the last committed epoch."""
        rows = list(rows)
        diverged = set(diverged)
        with _transaction(self._con):
            if checkpoint is not None:
                self._con.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?)",
                                  (checkpoint.group_id, checkpoint.epoch, checkpoint.wall_time_s,
                                   _npz_bytes(checkpoint.arrays())))
            self._con.executemany(
                f"INSERT INTO epochs ({', '.join(('run_id',) + EPOCH_FIELDS)}) VALUES ({', '.join('?' * 14)})",
                [(r.run_id, r.epoch, r.updates, r.examples_seen, r.wall_time_s, _real(r.train_loss),
                  _real(r.train_acc), _real(r.test_loss), _real(r.test_acc),
                  *(_real(v) for v in (r.gns or (np.nan,) * 5))) for r in rows])
            self._con.executemany(
                f"INSERT INTO evals (run_id, {', '.join(EVAL_FIELDS)}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(r.run_id, int(e[0]), int(e[1]), *(_real(v) for v in e[2:])) for r in rows
                 if r.evals is not None for e in r.evals])
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

    def finish_runs(self, run_ids: Iterable[str], *, status: str) -> None:
        """Mark runs that are still running as `completed` or `interrupted`; diverged runs keep their status."""
        with _transaction(self._con):
            self._con.executemany("UPDATE runs SET status=?, finished_at=? WHERE run_id=? AND status!='diverged'",
                                  [(status, time.time(), rid) for rid in run_ids])

    def write_run_metrics(self, metrics: Mapping[str, Mapping[str, float]]) -> None:
        """End-of-training measurements per run (sharpness, ...): {run_id: {name: value}}."""
        with _transaction(self._con):
            self._con.executemany("INSERT OR REPLACE INTO run_metrics VALUES (?, ?, ?)",
                                  [(rid, name, _real(v)) for rid, m in metrics.items() for name, v in m.items()])

    def run_metrics(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for r in self._con.execute("SELECT run_id, name, value FROM run_metrics ORDER BY run_id, name"):
            out.setdefault(r["run_id"], {})[r["name"]] = np.nan if r["value"] is None else r["value"]
        return out

    def mark_runs(self, run_ids: Iterable[str], *, status: str) -> None:
        """Set the status of runs that have not completed or diverged (e.g. `running` again on resume)."""
        with _transaction(self._con):
            self._con.executemany("UPDATE runs SET status=? WHERE run_id=? AND status NOT IN ('completed', 'diverged')",
                                  [(status, rid) for rid in run_ids])

    # -- reading ------------------------------------------------------------------------------------------
    def checkpoint(self, group_id: str) -> GroupCheckpoint | None:
        """The last committed checkpoint of a group, or None if none was written."""
        row = self._con.execute("SELECT epoch, wall_time_s, state FROM checkpoints WHERE group_id=?",
                                (group_id,)).fetchone()
        if row is None:
            return None
        with np.load(io.BytesIO(row["state"])) as f:
            arrays = [f[k] for k in sorted(f.files)]
        return GroupCheckpoint(group_id, row["epoch"], row["wall_time_s"], arrays[0].astype(bool), arrays[1:])

    def statuses(self) -> dict[str, str]:
        return {r["run_id"]: r["status"] for r in self._con.execute("SELECT run_id, status FROM runs")}

    def meta(self) -> dict[str, Any]:
        return {r["key"]: json.loads(r["value"]) for r in self._con.execute("SELECT key, value FROM study")}

    def runs(self) -> list[dict[str, Any]]:
        """All runs, ordered by batch size then seed, as dicts (config and versions decoded)."""
        out = []
        for r in self._con.execute("SELECT * FROM runs ORDER BY batch_size, lr, seed, run_id"):
            d = dict(r)
            d["config"], d["versions"] = json.loads(d["config"]), json.loads(d["versions"])
            out.append(d)
        return out

    def epochs(self, run_id: str) -> dict[str, np.ndarray]:
        """Per-epoch records of one run as arrays keyed by field name (missing values are NaN)."""
        rows = self._con.execute(f"SELECT {', '.join(EPOCH_FIELDS)} FROM epochs WHERE run_id=? ORDER BY epoch",
                                 (run_id,)).fetchall()
        counts = ("epoch", "updates", "examples_seen")
        return {f: np.array([np.nan if r[i] is None else r[i] for r in rows], dtype=np.int64 if f in counts else float)
                for i, f in enumerate(EPOCH_FIELDS)}

    def evals(self, run_id: str) -> dict[str, np.ndarray]:
        """Evaluations between epoch ends of one run, by update count, as arrays keyed by EVAL_FIELDS (empty
        arrays when the study evaluated at epoch ends only)."""
        rows = self._con.execute(f"SELECT {', '.join(EVAL_FIELDS)} FROM evals WHERE run_id=? ORDER BY step",
                                 (run_id,)).fetchall()
        counts = ("step", "examples_seen")
        return {f: np.array([np.nan if r[i] is None else r[i] for r in rows], dtype=np.int64 if f in counts else float)
                for i, f in enumerate(EVAL_FIELDS)}

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
        with np.load(self.directory / kind / f"{run_id}.npz") as f:
            return {k: f[k] for k in f.files}


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


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **dict(arrays))  # type: ignore[arg-type]  # as above
    return buffer.getvalue()


def _real(x: float) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


class _transaction:
    def __init__(self, con: sqlite3.Connection):
        self.con = con

    def __enter__(self) -> sqlite3.Connection:
        self.con.execute("BEGIN IMMEDIATE")
        return self.con

    def __exit__(self, exc_type, exc, tb) -> None:
        self.con.execute("COMMIT" if exc_type is None else "ROLLBACK")
