"""MLflow export: the study as MLflow runs in a local tracking database (``sqlite:///FILE.db``, no server).

In the experiment named after the study directory:

- one **study run** (tag ``batchlab.kind = study``): the study's settings as params, and as artifacts its
  figures (``figures/*.png``) and ``report.html``, as they are in the study directory (``batchlab show DIR
  --figures`` writes them);
- one **child run per batchlab run** (nested under it: tag ``mlflow.parentRunId``), named like
  ``bs32_lr0.03_seed1``: params (its config, batch size, lr, seeds, updates per epoch, n_train, device, and
  ``version.<package>``), tags ``run_id`` and ``status``, per-epoch metrics at step = epoch (``train_loss``,
  ``test_loss``, ``train_acc``, ``test_acc``, ``b_simple``, ... where measured; 0 is the evaluation before training),
  the per-step minibatch loss ``batch_loss`` at step = update number, end-of-training metrics ``end/<name>`` and
  ``compile_time_s``, and its own figure ``figures/lena_<run_id>.png``.

Per-step losses are min/max-decimated to ``max_step_points`` per run (default 10,000; 0 keeps all): MLflow's
tracking store takes about 130 µs per point even batched (1,000 per ``log_batch`` call), so the 143,700 steps of
batch size 1 on digits take ~18 s whole and ~1.3 s decimated. Every kept point is a real step, spikes included;
the run's tag ``batch_loss_points`` says how many of how many were kept. Artifacts go to ``mlartifacts/`` beside
the database file. MLflow's telemetry is switched off (``MLFLOW_DISABLE_TELEMETRY``) unless the user set it.

Needs mlflow-skinny with SQLAlchemy and Alembic (``pip install 'batchlab[mlflow]'``; the full ``mlflow`` package
brings the web UI: ``mlflow ui --backend-store-uri sqlite:///FILE.db``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from batchlab._optional import import_extra
from batchlab.errors import invalid
from batchlab.interop.export.common import check_max_step_points, kept_steps, run_names, run_params, step_wall_times
from batchlab.store.db import EPOCH_FIELDS, Store

URI_PREFIX = "sqlite:///"
DEFAULT_MAX_STEP_POINTS = 10_000
BATCH = 1000
"""Metrics per `log_batch` call: MLflow's limit."""
STATUS = {"completed": "FINISHED", "diverged": "FAILED", "interrupted": "KILLED", "running": "KILLED",
          "pending": "KILLED"}
"""batchlab run status -> MLflow run status (the batchlab status is kept in the tag `status`)."""


@dataclass(frozen=True)
class MlflowExport:
    """Where a study went: the tracking URI, the experiment, the study run and batchlab run_id -> MLflow run id."""

    tracking_uri: str
    experiment_name: str
    experiment_id: str
    study_run_id: str
    run_ids: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"MlflowExport({self.tracking_uri!r}, experiment={self.experiment_name!r}, "
                f"runs={len(self.run_ids)})")

    def describe(self) -> list[str]:
        """What the CLI prints."""
        return [(f"{self.tracking_uri}: experiment {self.experiment_name!r} (id {self.experiment_id}), study run "
                 f"{self.study_run_id} with {len(self.run_ids)} runs"),
                f"view: mlflow ui --backend-store-uri {self.tracking_uri}  (the UI needs: pip install mlflow)"]


def export_mlflow(directory: str | Path, tracking_uri: str, *, max_step_points: int | None = None) -> MlflowExport:
    """Log the study in `directory` to the MLflow tracking database `tracking_uri` (``sqlite:///runs.db``).

    `max_step_points`: per-step losses kept per run, min/max-decimated; None: DEFAULT_MAX_STEP_POINTS; 0: all.

    Refused, before anything is written, if the experiment there already holds a run of this study.

    Example::

        from batchlab.interop.export import export_mlflow
        export = export_mlflow("runs/wine", "sqlite:///mlflow.db")
        from mlflow import MlflowClient
        client = MlflowClient(tracking_uri="sqlite:///mlflow.db")
        runs = client.search_runs([export.experiment_id], "tags.run_id != ''")
    """
    check_max_step_points(max_step_points)
    max_step_points = DEFAULT_MAX_STEP_POINTS if max_step_points is None else max_step_points
    db = _database_path(tracking_uri)
    store = Store.open(directory)
    try:
        runs, meta, end_metrics = store.runs(), store.meta(), store.run_metrics()
        purpose = "--format mlflow"
        for module in ("sqlalchemy", "alembic"):
            import_extra(module, extra="mlflow", purpose=purpose)
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        tracking = import_extra("mlflow.tracking", extra="mlflow", purpose=purpose)
        with _quiet("mlflow", "alembic"):
            db.parent.mkdir(parents=True, exist_ok=True)
            client = tracking.MlflowClient(tracking_uri=tracking_uri)
            name = Path(directory).resolve().name
            experiment_id = _experiment(client, name, tracking_uri, db, {r["run_id"] for r in runs})
            study = Path(directory)
            started = min((r["created_at"] for r in runs), default=meta.get("created_at", 0.0))
            parent_id = client.create_run(experiment_id, start_time=_ms(started), run_name=f"{name} (study)", tags={
                "batchlab.kind": "study", "batchlab.study": str(study.resolve())}).info.run_id
            _log_params(client, parent_id, _study_params(meta))
            for path in sorted((study / "figures").glob("*.png")):
                client.log_artifact(parent_id, str(path), "figures")
            if (study / "report.html").is_file():
                client.log_artifact(parent_id, str(study / "report.html"))
            names = run_names(runs)
            ids = {r["run_id"]: _log_run(client, r, experiment_id, parent_id, name=names[r["run_id"]],
                                         epochs=store.epochs(r["run_id"]), steps=store.step_losses(r["run_id"]),
                                         end_metrics=end_metrics.get(r["run_id"], {}), study=study,
                                         max_step_points=max_step_points) for r in runs}
            finished = max((r["finished_at"] or r["created_at"] for r in runs), default=started)
            client.set_terminated(parent_id, "FINISHED", end_time=_ms(finished))
        return MlflowExport(tracking_uri, name, experiment_id, parent_id, ids)
    finally:
        store.close()


def _log_run(client: Any, r: dict[str, Any], experiment_id: str, parent_id: str, *, name: str,
             epochs: dict[str, np.ndarray], steps: tuple[np.ndarray, np.ndarray], end_metrics: dict[str, float],
             study: Path, max_step_points: int | None) -> str:
    """One batchlab run as a child run of the study run; returns its MLflow run id."""
    from mlflow.entities import Metric

    start, (step_epoch, losses) = r["created_at"], steps
    keep = kept_steps(losses, max_step_points)
    tags = {"run_id": r["run_id"], "status": r["status"], "mlflow.parentRunId": parent_id,
            "batchlab.study": str(study.resolve()), "batch_loss_points": f"{len(keep)} of {len(losses)}"
            + (" (min/max-decimated)" if len(keep) < len(losses) else "")}
    if r["diverged_epoch"] is not None:
        tags["diverged_epoch"] = str(r["diverged_epoch"])
    run_id = client.create_run(experiment_id, start_time=_ms(start), run_name=name, tags=tags).info.run_id
    _log_params(client, run_id, {**run_params(r), **{k: r[k] for k in ("updates_per_epoch", "epochs_planned",
                                                                         "n_train", "device")},
                                 **{f"version.{k}": v for k, v in sorted(r["versions"].items())}})
    metrics = [Metric(f, float(v), _ms(start + t), int(epoch)) for f in EPOCH_FIELDS if f != "epoch"
               for epoch, v, t in zip(epochs["epoch"], epochs[f], epochs["wall_time_s"]) if np.isfinite(v)]
    end = _ms(start + r["wall_time_s"])
    metrics += [Metric(f"end/{k}", float(v), end, int(r["epochs_done"])) for k, v in sorted(end_metrics.items())
                if np.isfinite(v)]
    if r["compile_time_s"] is not None:
        metrics.append(Metric("compile_time_s", float(r["compile_time_s"]), end, 0))
    times = start + step_wall_times(step_epoch, epochs["epoch"], epochs["wall_time_s"])
    metrics += [Metric("batch_loss", v, _ms(t), i + 1)
                for i, v, t in zip(keep.tolist(), losses[keep].astype(float).tolist(), times[keep].tolist())]
    for i in range(0, len(metrics), BATCH):
        client.log_batch(run_id, metrics=metrics[i:i + BATCH])
    figure = study / "figures" / f"lena_{r['run_id']}.png"
    if figure.is_file():
        client.log_artifact(run_id, str(figure), "figures")
    client.set_terminated(run_id, STATUS.get(r["status"], "KILLED"),
                          end_time=_ms(r["finished_at"] or start + r["wall_time_s"]))
    return run_id


def _log_params(client: Any, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    entities = [Param(k, _text(v)) for k, v in params.items()]
    for i in range(0, len(entities), 100):  # MLflow's limit per call
        client.log_batch(run_id, params=entities[i:i + 100])


def _database_path(tracking_uri: str) -> Path:
    """The SQLite file of a ``sqlite:///PATH`` URI (relative PATH; ``sqlite:////abs/path`` for an absolute one),
    checked: not a directory, its folder can exist, and an existing file is an SQLite database."""
    allowed = f"a local MLflow tracking URI {URI_PREFIX}FILE.db (a relative path; four slashes for an absolute one)"
    if not isinstance(tracking_uri, str) or not tracking_uri.startswith(URI_PREFIX) or \
            not tracking_uri[len(URI_PREFIX):] or "?" in tracking_uri:
        raise invalid("to", tracking_uri, allowed)
    db = Path(tracking_uri[len(URI_PREFIX):])
    if db.is_dir():
        raise invalid("to", tracking_uri, f"{allowed}; {db} is a directory")
    blocker = next((p for p in (db.parent, *db.parent.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise invalid("to", tracking_uri, f"{allowed}; {blocker} is a file, not a directory")
    if db.is_file() and db.stat().st_size and db.read_bytes()[:16] != b"SQLite format 3\x00":
        raise invalid("to", tracking_uri, f"{allowed}; {db} exists and is not an SQLite database")
    return db


def _experiment(client: Any, name: str, tracking_uri: str, db: Path, run_ids: set[str]) -> str:
    """The experiment's id, created (artifacts beside the database) if new; refused if it holds one of `run_ids`."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location=(db.parent.resolve() / "mlartifacts").as_uri())
    if experiment.lifecycle_stage != "active":
        raise invalid("to", tracking_uri, f"a database whose experiment {name!r} is not deleted (restore it, or "
                      "export to a new file)")
    page = None
    while True:
        found = client.search_runs([experiment.experiment_id], max_results=1000, page_token=page)
        done = {run.data.tags.get("run_id") for run in found} & run_ids
        if done:
            raise invalid("to", tracking_uri, f"a database whose experiment {name!r} does not hold this study yet "
                          f"(run {min(done)} is there: delete the experiment's runs, or export to a new file)")
        page = found.token
        if not page:
            return experiment.experiment_id


def _study_params(meta: dict[str, Any]) -> dict[str, Any]:
    spec, dataset = meta.get("spec", {}), meta.get("dataset", {})
    params = {k: v for k, v in spec.items() if v is not None}
    params.update({f"dataset.{k}": v for k, v in dataset.items()})
    params.update({"model": meta.get("model", ""), "device": meta.get("device", ""),
                   "axes": json.dumps(meta.get("axes", []))})
    params.update({f"version.{k}": v for k, v in sorted(meta.get("versions", {}).items())})
    return params


def _text(value: Any) -> str:
    """A param value: lists as JSON, the rest as str, cut to MLflow's 6,000 characters."""
    text = json.dumps(value) if isinstance(value, list | tuple | dict) else str(value)
    return text[:6000]


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


@contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """MLflow and Alembic log INFO lines (creating tables, migrations) to stderr: keep them below WARNING here."""
    saved = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
