"""Each reader on a file written the way the tool that owns the format writes it, and every bad input as one
BatchlabError that names the file."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from batchlab.errors import BatchlabError
from batchlab.interop.logs import (
    MIN_POINTS,
    choose_loss_name,
    detect_format,
    lightning_axis,
    read_loss_histories,
    read_loss_history,
    sparse_fallback,
)
from tests.paths import FIXTURES

LOSSES = [2.3, 1.9, 1.7, 1.2, 1.25, 0.9, 0.8, 0.85]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------------------
# Which series is the loss


@pytest.mark.parametrize(("counts", "chosen"), [
    ({"loss": 9, "val_loss": 9, "accuracy": 9}, "loss"),  # Keras History
    ({"epoch": 9, "step": 9, "train_loss_epoch": 3, "train_loss_step": 9, "val_loss": 3}, "train_loss_step"),
    ({"train_loss_epoch": 3, "train_loss_step": 0, "val_loss": 3}, "train_loss_epoch"),  # step column all empty
    ({"Loss/test": 9, "Loss/train": 9}, "Loss/train"),  # torch SummaryWriter tutorial
    ({"train/epoch_loss": 9, "validation/epoch_loss": 9}, "train/epoch_loss"),  # Keras TensorBoard callback
    ({"loss": 9, "loss_scale": 9}, "loss"),
    ({"val_loss": 9, "test_loss": 4}, "val_loss"),  # only validation: the one with more values
    ({"interval_loss": 9, "val_loss": 9}, "interval_loss"),  # 'interval' is not the token 'val'
    ({"epoch/train_loss": 11, "epoch/test_loss": 11, "step/batch_loss": 10}, "step/batch_loss"),  # batchlab's export
    ({"train/batch_loss": 90, "train/epoch_loss": 10, "validation/epoch_loss": 10}, "train/batch_loss"),  # Keras
    ({"step": 9, "accuracy": 9}, None),
])
def test_choose_loss_name(counts, chosen):
    assert choose_loss_name(counts) == chosen


@pytest.mark.parametrize(("counts", "name", "fallback"), [
    ({"train_loss_step": 4, "train_loss_epoch": 40, "val_loss": 40}, "train_loss_step", "train_loss_epoch"),
    ({"step/batch_loss": 3, "epoch/train_loss": 4, "epoch/test_loss": 4}, "step/batch_loss", None),  # both too few
    ({"step/batch_loss": 3, "epoch/train_loss": 6, "epoch/test_loss": 6}, "step/batch_loss", "epoch/train_loss"),
    ({"train_loss_step": 5, "train_loss_epoch": 40}, "train_loss_step", None),  # 5 values: measurable, kept
    ({"train_loss_step": 4, "val_loss": 40}, "train_loss_step", None),  # never a validation loss in its place
    ({"loss": 3, "val_loss": 40}, "loss", None),  # not a per-step series
])
def test_sparse_fallback(counts, name, fallback):
    assert sparse_fallback(counts, name) == fallback


# ---------------------------------------------------------------------------------------------------------
# Plain CSV


def test_csv_with_step_column_skips_empty_cells(tmp_path):
    path = write(tmp_path / "run.csv", "step,loss,acc\n" + "".join(
        f"{10 * (i + 1)},{'' if i == 2 else v},0.5\n" for i, v in enumerate(LOSSES)))
    h = read_loss_history(path)
    assert (h.format, h.source, h.x_unit) == ("csv", "loss", "step")
    np.testing.assert_array_equal(h.loss, [v for i, v in enumerate(LOSSES) if i != 2])
    np.testing.assert_array_equal(h.x, [10.0, 20, 40, 50, 60, 70, 80])
    assert h.resolution == "every 10 steps"


def test_csv_epoch_column_row_order_and_column_choice(tmp_path):
    by_epoch = read_loss_history(write(tmp_path / "a.csv", "epoch,train_loss,val_loss\n" + "".join(
        f"{i},{v},{v + 1}\n" for i, v in enumerate(LOSSES))))
    assert (by_epoch.source, by_epoch.x_unit, by_epoch.resolution) == ("train_loss", "epoch", "per epoch")
    rows = read_loss_history(write(tmp_path / "b.csv", "loss\n" + "".join(f"{v}\n" for v in LOSSES)))
    assert (rows.x_unit, rows.resolution, rows.n_points) == ("row", "per row", len(LOSSES))
    named = read_loss_history(tmp_path / "a.csv", column="val_loss")
    np.testing.assert_allclose(named.loss, np.array(LOSSES) + 1)


def test_batchlab_export_steps_csv_is_read_as_plain_csv(tmp_path):
    path = write(tmp_path / "steps.csv", "run_id,step,epoch,batch_loss\n" + "".join(
        f"b1,{i + 1},{i // 4 + 1},{v!r}\n" for i, v in enumerate(LOSSES)))
    h = read_loss_history(path)
    assert (h.format, h.source, h.x_unit, h.n_points) == ("csv", "batch_loss", "step", len(LOSSES))


def write_batchlab_steps(path: Path, runs: dict[str, int]) -> dict[str, list[float]]:
    """batchlab's steps.csv export (run_id,step,epoch,batch_loss), runs one after another; {run_id: losses}."""
    losses = {run: [float(2 * np.exp(-s / n) + 0.01 * (s % 3)) for s in range(n)] for run, n in runs.items()}
    write(path, "run_id,step,epoch,batch_loss\n" + "".join(
        f"{run},{s + 1},{s // 4 + 1},{v!r}\n" for run, values in losses.items() for s, v in enumerate(values)))
    return losses


def test_multi_run_csv_gives_one_curve_per_run_labelled_file_and_run(tmp_path):
    # issue 11: batchlab's steps.csv of a three-run study was read as one 143,800-point curve
    path = tmp_path / "steps.csv"
    losses = write_batchlab_steps(path, {"bs1-seed0-abc": 40, "bs16-seed0-def": 12, "bs142-seed0-0a1": 6})
    histories = read_loss_histories(path)
    assert [h.label for h in histories] == [f"{path}:{run}" for run in ("bs1-seed0-abc", "bs16-seed0-def",
                                                                        "bs142-seed0-0a1")]
    assert [h.run for h in histories] == list(losses)
    for h, values in zip(histories, losses.values(), strict=True):
        assert (h.format, h.source, h.x_unit, h.resolution) == ("csv", "batch_loss", "step", "per step")
        np.testing.assert_array_equal(h.loss, values)
        np.testing.assert_array_equal(h.x, np.arange(1.0, len(values) + 1))
    with pytest.raises(BatchlabError, match=r"steps\.csv: holds 3 runs \(bs1-seed0-abc, bs16-seed0-def, bs142.*HINT"):
        read_loss_history(path)


def test_multi_run_epochs_csv_and_a_run_column_named_run(tmp_path):
    path = write(tmp_path / "epochs.csv", "run_id,epoch,updates,train_loss,test_loss\n" + "".join(
        f"{run},{e},{10 * e},{v},{v + 1}\n" for run in ("b", "a") for e, v in enumerate(LOSSES)))
    histories = read_loss_histories(path)
    assert [(h.run, h.source, h.x_unit, h.resolution, h.n_points) for h in histories] == [
        ("b", "train_loss", "epoch", "per epoch", len(LOSSES)), ("a", "train_loss", "epoch", "per epoch", len(LOSSES))]
    by_run = write(tmp_path / "r.csv", "run,loss\n" + "".join(f"{r},{v}\n" for r in "xy" for v in LOSSES))
    assert [h.label for h in read_loss_histories(by_run)] == [f"{by_run}:x", f"{by_run}:y"]


def test_multi_run_csv_with_a_short_run_names_the_run(tmp_path):
    path = tmp_path / "steps.csv"
    write_batchlab_steps(path, {"bs1-seed0-abc": 40, "bs142-seed0-0a1": 3})
    with pytest.raises(BatchlabError, match=r"steps\.csv:bs142-seed0-0a1: 'batch_loss': got 3 finite loss values"):
        read_loss_histories(path)


def test_tensorboard_csv_download(tmp_path):
    # issue 11: TensorBoard's "download CSV" needed --column Value
    rows = "".join(f"{1.7e9 + i:.3f},{10 * i},{v}\n" for i, v in enumerate(LOSSES))
    path = write(tmp_path / "run-bs1_lr0.03_seed0-tag-step_batch_loss.csv", "Wall time,Step,Value\n" + rows)
    assert detect_format(path) == "tensorboard_csv"
    h = read_loss_history(path, column="loss")  # --column fits other files, not this one: ignored
    assert (h.format, h.source, h.x_unit, h.resolution) == ("tensorboard_csv", "Value", "step", "every 10 steps")
    np.testing.assert_array_equal(h.loss, LOSSES)
    keras = write(tmp_path / "run-train-tag-epoch_loss.csv", "Wall time,Step,Value\n" + "".join(
        f"{1.7e9 + i},{i},{v}\n" for i, v in enumerate(LOSSES)))
    assert (read_loss_history(keras).x_unit, read_loss_history(keras).resolution) == ("epoch", "per epoch")
    with pytest.raises(BatchlabError, match="a header but no data rows"):
        read_loss_history(write(tmp_path / "empty.csv", "Wall time,Step,Value\n"))


def test_csv_keeps_non_finite_values_and_strips_bom_and_spaces(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffstep, loss\n".encode() + "".join(f"{i}, {v}\n" for i, v in enumerate(
        LOSSES + ["nan", "inf"])).encode())
    h = read_loss_history(path)
    assert h.source == "loss" and len(h.loss) == len(LOSSES) + 2 and h.n_points == len(LOSSES)


# ---------------------------------------------------------------------------------------------------------
# Lightning CSVLogger


def write_lightning_metrics(path: Path, steps_per_epoch: int = 6, epochs: int = 3) -> list[float]:
    """Rows as Lightning's CSVLogger writes them: one dict per log call (the trainer adds `epoch`; the logger adds
    `step`), header = sorted union of keys, csv.DictWriter filling absent keys with empty cells."""
    rows, step_losses, step = [], [], 0
    for epoch in range(epochs):
        epoch_losses = []
        for _ in range(steps_per_epoch):
            loss = 2.0 * np.exp(-0.1 * step) + 0.05 * (step % 3)
            rows.append({"train_loss_step": loss, "epoch": epoch, "step": step})
            step_losses.append(loss)
            epoch_losses.append(loss)
            step += 1
        rows.append({"val_loss": 1.5 - 0.1 * epoch, "epoch": epoch, "step": step - 1})
        rows.append({"train_loss_epoch": float(np.mean(epoch_losses)), "epoch": epoch, "step": step - 1})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=sorted(set().union(*rows)))
        writer.writeheader()
        writer.writerows(rows)
    return step_losses


def test_lightning_metrics_csv_reads_the_per_step_training_loss(tmp_path):
    path = tmp_path / "lightning_logs" / "version_0" / "metrics.csv"
    step_losses = write_lightning_metrics(path)
    assert path.read_text().splitlines()[0] == "epoch,step,train_loss_epoch,train_loss_step,val_loss"
    assert detect_format(path) == "lightning"
    h = read_loss_history(path)
    assert (h.format, h.source, h.x_unit, h.resolution) == ("lightning", "train_loss_step", "step", "per step")
    np.testing.assert_allclose(h.loss, step_losses)
    np.testing.assert_array_equal(h.x, np.arange(18.0))


def test_lightning_epoch_column_uses_the_epoch_axis(tmp_path):
    path = tmp_path / "metrics.csv"
    write_lightning_metrics(path, epochs=6)
    h = read_loss_history(path, column="train_loss_epoch")
    assert (h.x_unit, h.n_points, h.resolution) == ("epoch", 6, "per epoch")
    np.testing.assert_array_equal(h.x, np.arange(6.0))


LIGHTNING_LOGS = FIXTURES / "lightning"


def test_sparse_lightning_step_loss_falls_back_to_the_epoch_loss():
    # issue 11: log_every_n_steps=50 left 4 train_loss_step values and diagnose exited 2
    path = LIGHTNING_LOGS / "sparse_steps" / "metrics.csv"  # written by Lightning 2.6.6 (make_logs.py)
    h = read_loss_history(path)
    assert (h.source, h.x_unit, h.resolution, h.n_points) == ("train_loss_epoch", "epoch", "per epoch", 40)
    np.testing.assert_array_equal(h.x, np.arange(40.0))
    (note,) = h.notes
    assert note.startswith(f"{path}: 'train_loss_step' holds 4 values, too few to measure (at least 5), so "
                           "'train_loss_epoch' (40 values) was read instead; HINT")
    with pytest.raises(BatchlabError, match="'train_loss_step': got 4 finite loss values"):
        read_loss_history(path, column="train_loss_step")  # named: no fallback


def test_epoch_only_lightning_log_is_per_epoch():
    # issue 11: on_step=False, on_epoch=True writes a plain `train_loss` every 142 steps; it was called
    # "every 142 steps" and drew a false resolution warning against per-epoch curves
    h = read_loss_history(LIGHTNING_LOGS / "epoch_only" / "metrics.csv")
    assert (h.source, h.x_unit, h.resolution, h.n_points, h.notes) == ("train_loss", "epoch", "per epoch", 12, ())
    np.testing.assert_array_equal(h.x, np.arange(12.0))


@pytest.mark.parametrize(("name", "epochs", "steps", "axis"), [
    ("train_loss", [0, 1, 2, 3], [141, 283, 425, 567], "epoch"),  # once per epoch, at its last step
    ("train_loss", [0, 0, 0, 1, 1, 1], [0, 1, 2, 3, 4, 5], "step"),  # every step
    ("train_loss", [0, 1, 2, 3], [0, 1, 2, 3], "step"),  # one step per epoch (full batch): per step
    ("train_loss", [0, 0, 1, 2, 4], [49, 99, 149, 199, 249], "step"),  # every 50 steps, skipping epoch 3
    ("train_loss_step", [0, 1, 2, 3], [49, 99, 149, 199], "step"),  # named by Lightning's suffix
    ("train_loss_epoch", [0, 1, 2, 3], [4, 9, 14, 19], "epoch"),
])
def test_lightning_axis(name, epochs, steps, axis):
    assert lightning_axis(np.array(epochs, float), np.array(steps, float), name=name) == axis


@pytest.mark.skipif(importlib.util.find_spec("lightning") is None, reason="lightning is not installed")
@pytest.mark.filterwarnings("ignore")  # lightning's own deprecation and tip warnings
def test_fresh_lightning_logs_match_the_committed_ones(tmp_path):
    sys.path.insert(0, str(LIGHTNING_LOGS))
    try:
        from make_logs import write_logs
    finally:
        sys.path.remove(str(LIGHTNING_LOGS))
    for name, path in write_logs(tmp_path).items():
        fresh, committed = read_loss_history(path), read_loss_history(LIGHTNING_LOGS / name / "metrics.csv")
        assert (fresh.source, fresh.x_unit, fresh.n_points) == (committed.source, committed.x_unit, committed.n_points)
        np.testing.assert_array_equal(fresh.x, committed.x)


def test_lightning_is_detected_by_suffixes_under_another_name(tmp_path):
    path = tmp_path / "renamed.csv"
    write_lightning_metrics(path)
    assert detect_format(path) == "lightning"
    assert read_loss_history(path).source == "train_loss_step"


# ---------------------------------------------------------------------------------------------------------
# Keras History JSON


def test_keras_history_json(tmp_path):
    history = {"loss": LOSSES, "val_loss": [v + 0.1 for v in LOSSES], "accuracy": [0.5] * len(LOSSES)}
    path = tmp_path / "history.json"
    with path.open("w") as f:
        json.dump(history, f)  # what users do with `history.history`
    h = read_loss_history(path)
    assert (h.format, h.source, h.x_unit, h.resolution) == ("keras", "loss", "epoch", "per epoch")
    np.testing.assert_array_equal(h.loss, LOSSES)
    np.testing.assert_array_equal(h.x, np.arange(1.0, len(LOSSES) + 1))
    assert read_loss_history(path, column="val_loss").loss[0] == pytest.approx(2.4)


def test_keras_history_nan_null_and_wrapped(tmp_path):
    path = tmp_path / "h.json"
    path.write_text(json.dumps({"history": {"loss": LOSSES + [float("nan"), None]}, "params": {"epochs": 10}}))
    h = read_loss_history(path)
    assert len(h.loss) == len(LOSSES) + 2 and h.n_points == len(LOSSES)


# ---------------------------------------------------------------------------------------------------------
# TensorBoard event files, written by tensorboard's own writer

needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                       reason="the tensorboard extra is not installed")


def write_events(logdir: Path, scalars: dict[str, list[tuple[int, float]]], *, tensor: bool = False) -> Path:
    """One events.out.tfevents.* file, as PyTorch's SummaryWriter (simple_value) or TF 2's tf.summary.scalar
    (a one-element tensor with scalars-plugin metadata) writes it."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.scalar import summary_v2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(logdir))
    events = sorted((step, tag, value) for tag, points in scalars.items() for step, value in points)
    for step, tag, value in events:
        if tensor:
            summary = summary_v2.scalar_pb(tag, value)
        else:
            summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
        writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
    writer.close()
    return max(logdir.glob("events.out.tfevents.*"))  # the newest: names carry the time, pid and a counter


def curve(n: int, offset: float = 0.0) -> list[tuple[int, float]]:
    return [(step, float(2.0 * np.exp(-0.05 * step) + offset)) for step in range(n)]


@needs_tensorboard
def test_tensorboard_file_simple_values(tmp_path):
    path = write_events(tmp_path / "tb", {"Loss/train": curve(40), "Loss/test": curve(8, 0.3), "lr": curve(40)})
    assert detect_format(path) == "tensorboard"
    h = read_loss_history(path)
    assert (h.format, h.source, h.x_unit, h.n_points) == ("tensorboard", "Loss/train", "step", 40)
    np.testing.assert_allclose(h.loss, [v for _, v in curve(40)], rtol=1e-6)  # float32 on disk
    assert read_loss_history(path, tag="Loss/test").n_points == 8


@needs_tensorboard
def test_tensorboard_tf2_tensor_scalars_in_a_keras_style_directory(tmp_path):
    logs = tmp_path / "logs"
    write_events(logs / "train", {"epoch_loss": curve(12)}, tensor=True)
    write_events(logs / "validation", {"epoch_loss": curve(12, 0.5)}, tensor=True)
    h = read_loss_history(logs)
    assert (h.source, h.x_unit, h.n_points) == ("train/epoch_loss", "epoch", 12)
    np.testing.assert_allclose(h.loss, [v for _, v in curve(12)], rtol=1e-6)
    assert read_loss_history(logs, tag="validation/epoch_loss").loss[0] == pytest.approx(2.5)


@needs_tensorboard
def test_tensorboard_resumed_run_later_value_wins_and_steps_are_sorted(tmp_path):
    logdir = tmp_path / "run"
    write_events(logdir, {"train_loss": [(s, 1.0) for s in range(10)]})
    write_events(logdir, {"train_loss": [(s, 0.5) for s in range(5, 15)]})
    h = read_loss_history(logdir)
    np.testing.assert_array_equal(h.x, np.arange(15.0))
    np.testing.assert_array_equal(h.loss, [1.0] * 5 + [0.5] * 10)


@needs_tensorboard
def test_tensorboard_log_directory_gives_one_curve_per_run(tmp_path):
    # issue 11: a log directory of three runs was read as one curve (the first run's) and --tag then failed
    tensorboard = pytest.importorskip("torch.utils.tensorboard")
    logdir = tmp_path / "runs"
    for run, n in (("bs16", 30), ("bs2", 40), ("bs128", 20)):
        writer = tensorboard.SummaryWriter(str(logdir / run))
        for step, value in curve(n):
            writer.add_scalar("Loss/train", value, step)
            writer.add_scalar("Loss/test", value + 0.5, step)
        writer.close()
    write_events(logdir, {})  # a top-level file without scalars (batchlab's export puts its hparams there)
    histories = read_loss_histories(logdir)
    assert [(h.label, h.run, h.source, h.n_points) for h in histories] == [
        (f"{logdir}/bs2", "bs2", "Loss/train", 40), (f"{logdir}/bs16", "bs16", "Loss/train", 30),
        (f"{logdir}/bs128", "bs128", "Loss/train", 20)]  # natural order
    np.testing.assert_allclose(histories[0].loss, [v for _, v in curve(40)], rtol=1e-6)
    assert [h.n_points for h in read_loss_histories(logdir, tag="Loss/test")] == [40, 30, 20]
    assert read_loss_history(logdir / "bs16").label == str(logdir / "bs16")  # a run's own directory: one curve
    with pytest.raises(BatchlabError, match=r"runs: holds 3 runs \(bs2, bs16, bs128\)"):
        read_loss_history(logdir)


@needs_tensorboard
def test_tensorboard_runs_keep_their_keras_splits_and_each_needs_the_tag(tmp_path):
    logs = tmp_path / "logs"
    for run, offset in (("adam", 0.0), ("sgd", 0.2)):
        write_events(logs / run / "train", {"epoch_loss": curve(12, offset)}, tensor=True)
        write_events(logs / run / "validation", {"epoch_loss": curve(12, offset + 0.5)}, tensor=True)
    histories = read_loss_histories(logs)
    assert [(h.label, h.source, h.x_unit) for h in histories] == [
        (f"{logs}/adam", "train/epoch_loss", "epoch"), (f"{logs}/sgd", "train/epoch_loss", "epoch")]
    assert read_loss_histories(logs, tag="validation/epoch_loss")[1].loss[0] == pytest.approx(2.7)
    write_events(logs / "other", {"accuracy": curve(12)})
    with pytest.raises(BatchlabError, match=r"logs/other: no loss scalar tag .* scalar tags found: accuracy"):
        read_loss_histories(logs)


@needs_tensorboard
def test_tensorboard_errors_name_the_path_and_the_tags(tmp_path):
    path = write_events(tmp_path / "tb", {"accuracy": curve(20)})
    with pytest.raises(BatchlabError, match=r"no loss scalar tag .* scalar tags found: accuracy; HINT: .*--tag"):
        read_loss_history(path)
    with pytest.raises(BatchlabError, match=r"no scalar tag 'loss'; scalar tags found: accuracy"):
        read_loss_history(path, tag="loss")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BatchlabError, match=r"empty: no events\.out\.tfevents\.\* files"):
        read_loss_history(tmp_path / "empty")


@needs_tensorboard
def test_missing_tensorboard_package_is_a_one_line_hint(tmp_path, monkeypatch):
    path = write_events(tmp_path / "tb", {"loss": curve(20)})
    for name in [m for m in sys.modules if m == "tensorboard" or m.startswith("tensorboard.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(BatchlabError, match=r"needs the tensorboard package; HINT: pip install 'batchlab\[tensorboard"):
        read_loss_history(path)


# ---------------------------------------------------------------------------------------------------------
# Bad input: one BatchlabError, one line, the path first


@pytest.mark.parametrize(("name", "text", "message"), [
    ("missing.csv", None, "no such file or directory"),
    ("loss.txt", "loss\n1\n", "unknown format; allowed: a .csv file"),
    ("empty.csv", "", "empty file"),
    ("blank.json", "\n  \n", "empty file"),
    ("header.csv", "step,loss\n", "a header but no data rows"),
    ("noloss.csv", "step,acc,lr\n1,0.5,0.1\n", "no loss column .* columns found: step, acc, lr; HINT"),
    ("short.csv", "loss\n1\n0.9\n0.8\n0.7\n", f"got 4 finite loss values; allowed: at least {MIN_POINTS}"),
    ("nans.csv", "loss\nnan\nnan\ninf\n-inf\nnan\nnan\n", "all 6 values are non-finite"),
    ("negative.csv", "loss\n1\n0.5\n-0.2\n0.3\n0.2\n", "got a negative loss"),
    ("text.csv", "step,loss\n1,0.5\n2,abc\n", "line 3, column 'loss': got 'abc'; allowed: a number"),
    ("bad.json", '{"loss": [1, 2,', "not valid JSON"),
    ("list.json", "[1, 2, 3]", "not a Keras History"),
    ("strings.json", '{"loss": ["a", "b", "c", "d", "e"]}', "key 'loss' holds a value that is not a number"),
])
def test_bad_input_is_one_line_naming_the_file(tmp_path, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(BatchlabError, match=message) as info:
        read_loss_history(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_column_not_found_lists_the_columns(tmp_path):
    path = write(tmp_path / "a.csv", "step,loss\n" + "".join(f"{i},{v}\n" for i, v in enumerate(LOSSES)))
    with pytest.raises(BatchlabError, match=r"no column 'train_loss'; columns found: step, loss"):
        read_loss_history(path, column="train_loss")


def test_binary_csv_is_a_user_error(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(BatchlabError, match="not a UTF-8 text file"):
        read_loss_history(path)
