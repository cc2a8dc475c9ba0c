"""TensorBoard export: event files written with TensorBoard's own writer and protos (no TensorFlow, no torch).

Layout of the log directory `to`::

    events.out.tfevents.*             the hparams experiment: each hyperparameter with its values, and the metrics
    <run name>/events.out.tfevents.*  one batchlab run (named by batch size, lr and seed, see `run_names`):
                                      its hparams; per-epoch scalars `epoch/<field>` at step = epoch (0 is the
                                      evaluation before training); the per-step minibatch loss `step/batch_loss`
                                      at step = update number (1, 2, ...); the end-of-training curvature
                                      `end/hessian_top_eigenvalue`, `end/hessian_trace`, ... at step = the
                                      last epoch, where it was measured

Values are float32 (TensorBoard's scalars). A noise-scale field appears only at the epochs where it was measured.
An event's wall time is the run's start plus its training time at that point (compile excluded; steps placed
evenly within their epoch), so TensorBoard's "relative" axis shows training time. Every step is written
(about 40 µs each: TensorBoard's writer computes its checksums in Python; ~6 s for the 143,700 steps of batch
size 1 on digits); TensorBoard samples long series when it loads them (`--samples_per_plugin scalars=0` keeps all).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from batchlab._optional import import_extra
from batchlab.errors import invalid
from batchlab.interop.export.common import check_max_step_points, kept_steps, run_names, run_params, step_wall_times
from batchlab.store.db import EPOCH_FIELDS, Store, require_directory_path
from batchlab.store.tables import CURVATURE_FIELDS

EVENTS_PREFIX = "events.out.tfevents."
STEP_TAG = "step/batch_loss"
HPARAM_METRICS = ("test_loss", "test_acc", "train_loss", "train_acc")
"""Per-epoch fields shown as metric columns in TensorBoard's HParams dashboard (their last value)."""


def export_tensorboard(directory: str | Path, to: str | Path, *, max_step_points: int | None = None) -> list[Path]:
    """Write one TensorBoard run per batchlab run under the log directory `to`; return the run directories.

    `max_step_points` keeps at most that many per-step losses per run (min/max decimation, see
    `batchlab.analysis.decimate`: every kept point is a real step); None or 0 keeps all.

    Example::

        from batchlab.interop.export import export_tensorboard
        export_tensorboard("runs/wine", "tb/")   # then: tensorboard --logdir tb/
    """
    out = Path(to)
    require_directory_path("to", out)
    check_max_step_points(max_step_points)
    import_extra("tensorboard.summary.writer.event_file_writer", extra="tensorboard", purpose="--format tensorboard")
    store = Store.open(directory)
    try:
        runs, metrics = store.runs(), store.run_metrics()
        names = run_names(runs)
        _refuse_earlier_export(out, [out / names[r["run_id"]] for r in runs])
        params = {r["run_id"]: run_params(r) for r in runs}
        _write_experiment(out, list(params.values()), start=min((r["created_at"] for r in runs), default=0.0))
        paths = []
        for r in runs:
            paths.append(out / names[r["run_id"]])
            _write_run(paths[-1], r, params[r["run_id"]], trial_id=names[r["run_id"]],
                       epochs=store.epochs(r["run_id"]), steps=store.step_losses(r["run_id"]),
                       end_metrics=metrics.get(r["run_id"], {}), max_step_points=max_step_points)
        return paths
    finally:
        store.close()


def _write_experiment(out: Path, params: list[dict[str, Any]], *, start: float) -> None:
    """The HParams dashboard's experiment, in the log directory itself: each hyperparameter, and the metrics."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    metrics = [hp.Metric(f"epoch/{m}") for m in HPARAM_METRICS if m in EPOCH_FIELDS]
    writer = EventFileWriter(str(out))
    writer.add_event(event_pb2.Event(wall_time=start, summary=hp.hparams_config_pb(
        hparams=_hparam_domains(hp, params), metrics=metrics)))
    writer.close()


def _write_run(folder: Path, r: dict[str, Any], params: dict[str, Any], *, trial_id: str,
               epochs: dict[str, np.ndarray], steps: tuple[np.ndarray, np.ndarray], end_metrics: dict[str, float],
               max_step_points: int | None) -> None:
    """One run's event file: its hparams, its per-epoch scalars where measured, its per-step losses, its
    end-of-training curvature (the runs table's names, see `batchlab.store.tables.CURVATURE_FIELDS`)."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    def scalar(tag: str, value: float, step: int, wall_time: float) -> event_pb2.Event:
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
        return event_pb2.Event(wall_time=wall_time, step=step, summary=summary)

    start, e = r["created_at"], epochs
    writer = EventFileWriter(str(folder), max_queue_size=1000)
    writer.add_event(event_pb2.Event(wall_time=start, summary=hp.hparams_pb(params, trial_id=trial_id,
                                                                             start_time_secs=start)))
    for field in (f for f in EPOCH_FIELDS if f != "epoch"):
        for epoch, value, t in zip(e["epoch"].tolist(), e[field].tolist(), e["wall_time_s"].tolist()):
            if np.isfinite(value):
                writer.add_event(scalar(f"epoch/{field}", value, epoch, start + t))
    step_epoch, losses = steps
    times = start + step_wall_times(step_epoch, e["epoch"], e["wall_time_s"])
    keep = kept_steps(losses, max_step_points)
    for i, value, t in zip(keep.tolist(), losses[keep].tolist(), times[keep].tolist()):
        writer.add_event(scalar(STEP_TAG, value, i + 1, t))
    end_time = start + (float(e["wall_time_s"][-1]) if len(e["wall_time_s"]) else 0.0)
    for column, name in CURVATURE_FIELDS.items():
        value = end_metrics.get(name, np.nan)
        if np.isfinite(value):
            writer.add_event(scalar(f"end/{column}", value, int(r["epochs_done"]), end_time))
    writer.close()


def _refuse_earlier_export(out: Path, run_dirs: list[Path]) -> None:
    """TensorBoard merges every event file of a directory: exporting twice into one would show each point twice."""
    for folder in (out, *run_dirs):
        if folder.is_dir() and any(p.name.startswith(EVENTS_PREFIX) for p in folder.iterdir()):
            raise invalid("to", str(out), f"a log directory without event files of an earlier export ({folder} "
                          "has some; TensorBoard would merge them): a new or empty directory")


def _hparam_domains(hp: Any, params: list[dict[str, Any]]) -> list[Any]:
    """An HParam per hyperparameter, its domain the values that occur (TensorBoard's HParams dashboard filters)."""
    out = []
    for key in sorted({k for p in params for k in p}):
        values = {p[key] for p in params if key in p}
        if not all(isinstance(v, bool) for v in values) and all(isinstance(v, int | float) for v in values):
            values = {float(v) for v in values}
        elif not all(isinstance(v, bool) for v in values):
            values = {str(v) for v in values}
        out.append(hp.HParam(key, hp.Discrete(sorted(values))))
    return out
