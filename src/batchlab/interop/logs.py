"""Readers for loss histories that other tools wrote: one function per format, each returning `LossHistory`s.

Formats (`detect_format` picks one from the path):

- ``csv``: any CSV with a header; the loss column is chosen by :func:`choose_loss_name` (so ``loss``,
  ``train_loss`` or batchlab's own ``batch_loss``) or named with ``column``; x is the ``step`` column, else the
  ``epoch`` column, else the row number. A ``run_id`` or ``run`` column (batchlab's ``steps.csv`` and
  ``epochs.csv`` exports) splits the file into one curve per run, in order of first appearance.
- ``tensorboard_csv``: TensorBoard's "download CSV" of one scalar, header ``Wall time,Step,Value``: Value is the
  loss and Step the x (in epochs when the tag in TensorBoard's file name, ``run-RUN-tag-TAG.csv``, has the token
  epoch).
- ``lightning``: a Lightning ``CSVLogger`` ``metrics.csv`` (a CSV with ``step`` and ``epoch`` columns that is
  named ``metrics.csv`` or has columns ending in ``_step``/``_epoch``). Rows mix step-level and epoch-level logs,
  so most cells are empty; a column's curve is its non-empty cells. The per-step training loss
  (``train_loss_step``) wins by :func:`choose_loss_name`. An epoch-level column (``train_loss_epoch``, or an
  epoch-only ``self.log(..., on_step=False, on_epoch=True)``, which writes the plain name once per epoch) is read
  against the epoch column.
- ``keras``: ``json.dump(history.history, f)``, i.e. ``{"loss": [...], "val_loss": [...]}`` (also accepted
  wrapped as ``{"history": {...}}``); one value per epoch.
- ``tensorboard``: an ``events.out.tfevents.*`` file, or a log directory, read with tensorboard's own
  ``event_file_loader`` (every event; TensorBoard's ``EventAccumulator`` would subsample to 1,000 points).
  Scalars written as ``simple_value`` (PyTorch, tensorboardX) and as one-element tensors (TF 2) both count. As in
  TensorBoard, each directory holding event files is a run, named by its path under the log directory (one curve
  per run, each read as if given alone); a directory named for a split (Keras writes ``train/`` and
  ``validation/`` with the same tags) belongs to its parent's run, its tags named ``SPLIT/TAG``. Runs without
  scalars (batchlab's hparams-only top level) are skipped. If a step was written twice (a resumed run), the
  later value wins.

When no column or tag is named and the chosen per-step series is too sparse to measure (fewer than `MIN_POINTS`
values: Lightning logs every 50 steps by default), the per-epoch training loss is read instead and the curve's
`notes` say so (:func:`sparse_fallback`).

Values are kept as written (non-finite ones too: the metrics drop them); empty cells are skipped. Every
problem a user can fix is a one-line :class:`~batchlab.errors.BatchlabError` that starts with the file's path
(and run).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from batchlab.errors import BatchlabError

MIN_POINTS = 5
"""Fewest finite loss values a curve needs: below this the noise metrics say nothing."""
FORMATS = ("csv", "tensorboard_csv", "lightning", "keras", "tensorboard")
TENSORBOARD_PREFIX = "events.out.tfevents."
TENSORBOARD_CSV_HEADER = ["Wall time", "Step", "Value"]
VALIDATION_TOKENS = frozenset({"val", "valid", "validation", "test", "eval", "evaluation", "dev"})
TRAINING_TOKENS = frozenset({"train", "training", "batch"})
"""A minibatch loss (``batch_loss``) is a training loss too."""
PER_STEP_TOKENS = frozenset({"step", "batch"})
SPLIT_DIRECTORIES = VALIDATION_TOKENS | {"train", "training"}
"""TensorBoard sub-directories that hold a split of their parent's run (Keras), not a run of their own."""
RUN_COLUMNS = ("run_id", "run")
"""CSV columns that name the run of each row, in order of precedence."""
ALLOWED_INPUT = ("a .csv file (a loss column with step or epoch), a Lightning metrics.csv, a Keras History .json, "
                 f"a TensorBoard {TENSORBOARD_PREFIX}* file or a directory holding them")

Rows = list[tuple[int, list[str]]]
"""CSV data rows as (line number, cells)."""


@dataclass(frozen=True)
class LossHistory:
    """One loss curve read from a file (one run of it, for files and directories that hold several)."""

    path: str
    format: str
    """One of FORMATS."""
    source: str
    """The column, key or tag the loss was read from."""
    x: np.ndarray
    """Where each value was logged: a step, an epoch or a row number (see `x_unit`)."""
    x_unit: str
    """'step', 'epoch' or 'row' (no step or epoch was written: the row order)."""
    loss: np.ndarray
    """The values as written, non-finite ones included."""
    run: str | None = None
    """The run within `path`: a CSV's run_id, a TensorBoard run directory; None for a file of one curve."""
    notes: tuple[str, ...] = ()
    """One-line notes on how the curve was read (a fallback to another series), for the user to see."""

    @property
    def label(self) -> str:
        """The curve's name: the path, and its run if any (``steps.csv:bs1-seed0-abc``, ``tb/bs1_lr0.03_seed0``)."""
        if self.run is None:
            return self.path
        return f"{self.path}/{self.run}" if self.format == "tensorboard" else f"{self.path}:{self.run}"

    @property
    def n_points(self) -> int:
        """Number of finite loss values (what the metrics use)."""
        return int(np.sum(np.isfinite(self.loss)))

    @property
    def resolution(self) -> str:
        """How often a value was logged: 'per step', 'every 50 steps', 'per epoch', 'per row', ..."""
        gaps = np.diff(self.x[np.isfinite(self.x)])
        spacing = float(np.median(gaps)) if len(gaps) else 1.0
        if self.x_unit == "row" or spacing == 1.0:
            return f"per {self.x_unit}"
        return f"every {spacing:g} {self.x_unit}s"

    def __repr__(self) -> str:
        return (f"LossHistory({self.label!r}, format={self.format!r}, source={self.source!r}, "
                f"n_points={self.n_points}, resolution={self.resolution!r})")


def read_loss_histories(path: str | Path, *, column: str | None = None,
                        tag: str | None = None) -> list[LossHistory]:
    """Every loss curve in `path`, whatever its format: one per run (a CSV's run column, a TensorBoard log
    directory's runs), else one. `column` names the CSV column or JSON key to read (CSV, Lightning, Keras); `tag`
    the TensorBoard scalar tag. Each is ignored by the formats it does not fit."""
    kind = detect_format(path)
    if kind == "tensorboard":
        return read_tensorboard(path, tag=tag)
    if kind == "csv":
        return read_csv(path, column=column)
    if kind == "tensorboard_csv":
        return [read_tensorboard_csv(path)]
    return [{"lightning": read_lightning_csv, "keras": read_keras_history}[kind](path, column=column)]


def read_loss_history(path: str | Path, *, column: str | None = None, tag: str | None = None) -> LossHistory:
    """The one loss curve in `path` (see :func:`read_loss_histories`); a BatchlabError if it holds several runs."""
    histories = read_loss_histories(path, column=column, tag=tag)
    if len(histories) > 1:
        runs = ", ".join(str(h.run) for h in histories[:3]) + (", ..." if len(histories) > 3 else "")
        raise BatchlabError(f"{path}: holds {len(histories)} runs ({runs}); HINT: read_loss_histories reads one "
                            "curve per run")
    return histories[0]


def detect_format(path: str | Path) -> str:
    """The format of `path`, from its name (and a CSV's header): one of FORMATS."""
    p = Path(path)
    if not p.exists():
        raise BatchlabError(f"{p}: no such file or directory")
    if p.is_dir() or p.name.startswith(TENSORBOARD_PREFIX):
        return "tensorboard"
    suffix = p.suffix.lower()
    if suffix == ".json":
        return "keras"
    if suffix == ".csv":
        header = _csv_header(p)
        if header == TENSORBOARD_CSV_HEADER:
            return "tensorboard_csv"
        lightning_like = p.name == "metrics.csv" or any(c.endswith(("_step", "_epoch")) for c in header)
        return "lightning" if {"step", "epoch"} <= set(header) and lightning_like else "csv"
    raise BatchlabError(f"{p}: unknown format; allowed: {ALLOWED_INPUT}")


def choose_loss_name(counts: dict[str, int]) -> str | None:
    """The series to read when the user named none, from {name: number of values}. Candidates are names holding
    'loss' with at least one value; among them, in order of precedence:

    1. training over validation (a name with a token val, valid, validation, test, eval, evaluation or dev loses);
    2. a name with the token train, training or batch (a minibatch loss is a training loss);
    3. per-step over anything else (the token step or batch: Lightning's ``train_loss_step`` over
       ``train_loss_epoch``, batchlab's ``step/batch_loss`` over ``epoch/train_loss``);
    4. more values (the finer resolution);
    5. the shorter name (``loss`` over ``loss_scale``), then alphabetical order.

    Tokens are the lower-case runs of letters and digits. None when there is no candidate."""
    candidates = sorted(n for n, c in counts.items() if "loss" in n.lower() and c > 0)
    if not candidates:
        return None

    def preference(name: str) -> tuple:
        tokens = _tokens(name)
        return (not tokens & VALIDATION_TOKENS, bool(tokens & TRAINING_TOKENS), bool(tokens & PER_STEP_TOKENS),
                counts[name], -len(name))

    return max(candidates, key=preference)


def sparse_fallback(counts: dict[str, int], name: str) -> str | None:
    """The series to read in place of the chosen `name` when `name` is a per-step series (token step or batch)
    with fewer than MIN_POINTS values: the training loss :func:`choose_loss_name` picks among the other series
    (neither per-step nor validation), if that has MIN_POINTS values or more. None when no fallback applies.

    Lightning's default ``log_every_n_steps=50`` leaves a short run with a handful of ``train_loss_step`` values
    beside a ``train_loss_epoch`` for every epoch; the per-epoch curve is measurable, the per-step one is not."""
    if counts.get(name, 0) >= MIN_POINTS or not _tokens(name) & PER_STEP_TOKENS:
        return None
    others = {n: c for n, c in counts.items() if not _tokens(n) & (PER_STEP_TOKENS | VALIDATION_TOKENS)}
    alternative = choose_loss_name(others)
    return alternative if alternative is not None and counts[alternative] >= MIN_POINTS else None


def read_csv(path: str | Path, *, column: str | None = None) -> list[LossHistory]:
    """A plain CSV: the loss column (`column`, else :func:`choose_loss_name`) against the `step` column, else the
    `epoch` column, else the row number; one curve per run when a RUN_COLUMNS column names the run of each row
    (the same loss column for every run). Rows whose loss cell is empty are skipped."""
    p = Path(path)
    header, rows = _csv_table(p)
    name, notes = _pick_column(str(p), header, rows, column)
    x_name = next((c for c in ("step", "epoch") if c in header), None)
    run_column = next((c for c in RUN_COLUMNS if c in header), None)
    histories = []
    for run, run_rows in _rows_by_run(header, rows, run_column).items():
        x, loss = _column_pairs(p, header, run_rows, name, x_name)
        histories.append(_checked(LossHistory(str(p), "csv", name, x, x_name or "row", loss, run=run, notes=notes)))
    return histories


def read_tensorboard_csv(path: str | Path) -> LossHistory:
    """TensorBoard's "download CSV" of one scalar (header ``Wall time,Step,Value``): Value against Step, in epochs
    when the tag in TensorBoard's file name ``run-RUN-tag-TAG.csv`` has the token epoch (``tag-epoch_loss``)."""
    p = Path(path)
    header, rows = _csv_table(p)
    _pick_column(str(p), header, rows, "Value")
    x, loss = _column_pairs(p, header, rows, "Value", "Step")
    tag = p.stem.split("-tag-", 1)[1] if "-tag-" in p.stem else ""
    unit = "epoch" if "epoch" in _tokens(tag) else "step"
    return _checked(LossHistory(str(p), "tensorboard_csv", "Value", x, unit, loss))


def read_lightning_csv(path: str | Path, *, column: str | None = None) -> LossHistory:
    """A Lightning CSVLogger metrics.csv: the loss column (`column`, else :func:`choose_loss_name`, which prefers
    the per-step training loss, else :func:`sparse_fallback`) over its non-empty cells, against the axis
    :func:`lightning_axis` gives (Lightning's global step, or the epoch for an epoch-level column)."""
    p = Path(path)
    header, rows = _csv_table(p)
    name, notes = _pick_column(str(p), header, rows, column)
    epochs, loss = _column_pairs(p, header, rows, name, "epoch")
    steps, _ = _column_pairs(p, header, rows, name, "step")
    x_name = lightning_axis(epochs, steps, name=name)
    x = epochs if x_name == "epoch" else steps
    return _checked(LossHistory(str(p), "lightning", name, x, x_name, loss, notes=notes))


def lightning_axis(epochs: np.ndarray, steps: np.ndarray, *, name: str) -> str:
    """'epoch' or 'step': the axis of a Lightning column, from its name (the token epoch or step, as Lightning's
    ``on_step=True, on_epoch=True`` suffixes write them), else from where its values sit (`epochs`, `steps`: the
    epoch and step cells of its rows): once per epoch over consecutive epochs, more than one step apart, is an
    epoch-level log (Lightning writes it at the epoch's last step); anything else is per step."""
    tokens = _tokens(name)
    if "epoch" in tokens or "step" in tokens:
        return "epoch" if "epoch" in tokens else "step"
    once_per_epoch = len(epochs) > 1 and bool(np.all(np.diff(epochs) == 1))
    return "epoch" if once_per_epoch and float(np.median(np.diff(steps))) > 1 else "step"


def read_keras_history(path: str | Path, *, column: str | None = None) -> LossHistory:
    """A Keras History dumped as JSON, ``{"loss": [...], "val_loss": [...]}``: the key `column`, else the one
    :func:`choose_loss_name` picks (``loss``); one value per epoch, epochs numbered from 1. null counts as NaN."""
    p = Path(path)
    text = _read_text(p)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BatchlabError(f"{p}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if isinstance(data, dict) and isinstance(data.get("history"), dict):
        data = data["history"]
    series = {k: v for k, v in data.items() if isinstance(v, list)} if isinstance(data, dict) else {}
    if not series:
        raise BatchlabError(f'{p}: not a Keras History; allowed: a JSON object of lists, e.g. {{"loss": [...]}}')
    name, notes = _pick_name(str(p), "key", {k: len(v) for k, v in series.items()}, column)
    values = [np.nan if v is None else v for v in series[name]]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise BatchlabError(f"{p}: key {name!r} holds a value that is not a number; allowed: numbers and null")
    loss = np.asarray(values, float)
    return _checked(LossHistory(str(p), "keras", name, np.arange(1.0, len(loss) + 1), "epoch", loss, notes=notes))


def read_tensorboard(path: str | Path, *, tag: str | None = None) -> list[LossHistory]:
    """TensorBoard event files: one curve per run (module docstring), each the scalar `tag`, else the one
    :func:`choose_loss_name` picks (or :func:`sparse_fallback`), sorted by step. x is the step TensorBoard
    stored, in epochs when the tag has the token epoch (Keras's ``epoch_loss``, batchlab's ``epoch/train_loss``)."""
    p = Path(path)
    histories = []
    for run, scalars in _tensorboard_scalars(p).items():
        where = str(p) if run is None else f"{p}/{run}"
        name, notes = _pick_name(where, "scalar tag", {k: len(v) for k, v in scalars.items()}, tag, flag="--tag")
        steps = np.array(sorted(scalars[name]), float)
        loss = np.array([scalars[name][int(s)] for s in steps], float)
        unit = "epoch" if "epoch" in _tokens(name) else "step"
        histories.append(_checked(LossHistory(str(p), "tensorboard", name, steps, unit, loss, run=run, notes=notes)))
    return histories


def tensorboard_runs(path: Path) -> dict[str | None, list[tuple[str, Path]]]:
    """{run: [(tag prefix, event file), ...]} under `path`, as TensorBoard groups them: a run per directory holding
    event files, named by its path under `path` (None for `path` itself or a single file); a SPLIT_DIRECTORIES
    directory joins its parent's run with the tag prefix ``NAME/``. Runs in natural order (bs2 before bs16); files
    in name order (their names start with the time written), so a resumed run's later values come last."""
    if not path.is_dir():
        return {None: [("", path)]}
    files = sorted((f for f in path.rglob(f"{TENSORBOARD_PREFIX}*") if f.is_file()), key=lambda f: f.name)
    if not files:
        raise BatchlabError(f"{path}: no {TENSORBOARD_PREFIX}* files in this directory")
    runs: dict[str | None, list[tuple[str, Path]]] = {}
    for f in files:
        folder, prefix = f.parent, ""
        if folder != path and folder.name.lower() in SPLIT_DIRECTORIES:
            folder, prefix = folder.parent, f"{folder.name}/"
        run = folder.relative_to(path).as_posix()
        runs.setdefault(None if run == "." else run, []).append((prefix, f))
    return dict(sorted(runs.items(), key=lambda item: _natural_order(item[0] or "")))


def _tensorboard_scalars(p: Path) -> dict[str | None, dict[str, dict[int, float]]]:
    """{run: {tag: {step: value}}}; runs without any scalar are left out unless no run has one."""
    try:
        from tensorboard.backend.event_processing import event_file_loader
        from tensorboard.util import tensor_util
    except ImportError:
        raise BatchlabError(f"{p}: reading TensorBoard files needs the tensorboard package; "
                            "HINT: pip install 'batchlab[tensorboard]'") from None
    by_run: dict[str | None, dict[str, dict[int, float]]] = {}
    for run, files in tensorboard_runs(p).items():
        scalars = by_run.setdefault(run, {})
        for prefix, f in files:
            for event in event_file_loader.EventFileLoader(str(f)).Load():
                for value in event.summary.value:
                    number = _scalar(value, tensor_util)
                    if number is not None:
                        scalars.setdefault(prefix + value.tag, {})[int(event.step)] = number
    return {run: s for run, s in by_run.items() if s} or dict(list(by_run.items())[:1])


def _scalar(value, tensor_util) -> float | None:
    """A summary value as a number: simple_value, or a one-element numeric tensor; None for anything else."""
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return float(value.simple_value)
    if kind == "tensor":
        array = tensor_util.make_ndarray(value.tensor)
        if array.size == 1 and array.dtype.kind in "fiu":
            return float(array.reshape(()))
    return None


def _natural_order(name: str) -> list[tuple[int, int | str]]:
    """Sort key that puts bs2 before bs16 and version_9 before version_10."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part]


def _tokens(name: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", name.lower()))


def _read_text(p: Path) -> str:
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise BatchlabError(f"{p}: not a UTF-8 text file") from None
    except OSError as e:
        raise BatchlabError(f"{p}: cannot read: {e.strerror}") from None
    if not text.strip():
        raise BatchlabError(f"{p}: empty file")
    return text


def _csv_table(p: Path) -> tuple[list[str], Rows]:
    """The header and the data rows with their line numbers; whitespace stripped; blank lines dropped."""
    reader = csv.reader(io.StringIO(_read_text(p), newline=""))
    try:
        rows = [(reader.line_num, [cell.strip() for cell in row]) for row in reader if row]
    except csv.Error as e:
        raise BatchlabError(f"{p}: not a readable CSV ({e})") from None
    return rows[0][1], rows[1:]


def _csv_header(p: Path) -> list[str]:
    """The first non-blank row, without reading the rest of the file."""
    try:
        with p.open(encoding="utf-8-sig", newline="") as f:
            row = next((r for r in csv.reader(f) if r), None)
    except (UnicodeDecodeError, csv.Error):
        row = None  # reported by the reader, which reads the whole file
    except OSError as e:
        raise BatchlabError(f"{p}: cannot read: {e.strerror}") from None
    return [cell.strip() for cell in row or []]


def _rows_by_run(header: list[str], rows: Rows, run_column: str | None) -> dict[str | None, Rows]:
    """The rows of each run (the `run_column` cell), in order of first appearance; all under None without one."""
    if run_column is None:
        return {None: rows}
    i = header.index(run_column)
    runs: dict[str | None, Rows] = {}
    for line, row in rows:
        runs.setdefault(row[i] if i < len(row) else "", []).append((line, row))
    return runs


def _pick_column(where: str, header: list[str], rows: Rows, column: str | None) -> tuple[str, tuple[str, ...]]:
    if not rows:
        raise BatchlabError(f"{where}: a header but no data rows")
    counts = {c: sum(1 for _, r in rows if i < len(r) and r[i] != "") for i, c in enumerate(header)}
    return _pick_name(where, "column", counts, column)


def _pick_name(where: str, what: str, counts: dict[str, int], wanted: str | None,
               flag: str = "--column") -> tuple[str, tuple[str, ...]]:
    """The series to read (`wanted`, else :func:`choose_loss_name`, else :func:`sparse_fallback`) and the notes
    on how it was chosen."""
    found = ", ".join(counts) or "none"
    if wanted is not None:
        if wanted not in counts:
            raise BatchlabError(f"{where}: no {what} {wanted!r}; {what}s found: {found}")
        return wanted, ()
    name = choose_loss_name(counts)
    if name is None:
        raise BatchlabError(f"{where}: no loss {what} (none with 'loss' in its name holds a value); {what}s found: "
                            f"{found}; HINT: name one with {flag} NAME")
    fallback = sparse_fallback(counts, name)
    if fallback is None:
        return name, ()
    note = (f"{where}: {name!r} holds {counts[name]} values, too few to measure (at least {MIN_POINTS}), so "
            f"{fallback!r} ({counts[fallback]} values) was read instead; HINT: log the step loss more often "
            f"(Lightning: Trainer(log_every_n_steps=1)) or name one with {flag} NAME")
    return fallback, (note,)


def _column_pairs(p: Path, header: list[str], rows: Rows, name: str,
                  x_name: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(x, loss) over the rows whose `name` cell is not empty; x is the row number when `x_name` is None."""
    i, j = header.index(name), (header.index(x_name) if x_name else None)
    xs, losses = [], []
    for row_number, (line, row) in enumerate(rows, start=1):
        cell = row[i] if i < len(row) else ""
        if cell == "":
            continue
        losses.append(_number(p, line, name, cell))
        x_cell = row[j] if j is not None and j < len(row) else ""
        xs.append(float(row_number) if j is None else _number(p, line, x_name, x_cell) if x_cell else np.nan)
    return np.array(xs, float), np.array(losses, float)


def _number(p: Path, line: int, column: str | None, cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise BatchlabError(f"{p}: line {line}, column {column!r}: got {cell!r}; allowed: a number or an empty "
                            "cell") from None


def _checked(history: LossHistory) -> LossHistory:
    """Validate at the door: enough finite values, none negative (the metrics work on log-loss)."""
    where = f"{history.label}: {history.source!r}"
    finite = history.loss[np.isfinite(history.loss)]
    if len(history.loss) and not len(finite):
        raise BatchlabError(f"{where}: all {len(history.loss)} values are non-finite (nan or inf)")
    if len(finite) < MIN_POINTS:
        raise BatchlabError(f"{where}: got {len(finite)} finite loss values; allowed: at least {MIN_POINTS}")
    if finite.min() < 0:
        raise BatchlabError(f"{where}: got a negative loss ({finite.min():g}); allowed: losses >= 0 (the noise "
                            "metrics work on log-loss)")
    return history
