"""Readers for loss histories that other tools wrote: one function per format, each returning a `LossHistory`.

Formats (`detect_format` picks one from the path):

- ``csv``: any CSV with a header; the loss column is chosen by :func:`choose_loss_name` (so ``loss``,
  ``train_loss`` or batchlab's own ``batch_loss``) or named with ``column``; x is the ``step`` column, else the
  ``epoch`` column, else the row number.
- ``lightning``: a Lightning ``CSVLogger`` ``metrics.csv`` (a CSV with ``step`` and ``epoch`` columns that is
  named ``metrics.csv`` or has columns ending in ``_step``/``_epoch``). Rows mix step-level and epoch-level logs,
  so most cells are empty; a column's curve is its non-empty cells. The per-step training loss
  (``train_loss_step``) wins by :func:`choose_loss_name`.
- ``keras``: ``json.dump(history.history, f)``, i.e. ``{"loss": [...], "val_loss": [...]}`` (also accepted
  wrapped as ``{"history": {...}}``); one value per epoch.
- ``tensorboard``: an ``events.out.tfevents.*`` file, or a directory searched recursively for them, read with
  tensorboard's own ``event_file_loader`` (every event; TensorBoard's ``EventAccumulator`` would subsample to
  1,000 points). Scalars written as ``simple_value`` (PyTorch, tensorboardX) and as one-element tensors (TF 2)
  both count. A tag in a subdirectory is named ``SUBDIR/TAG`` (Keras writes ``train/`` and ``validation/``
  with the same tag); if a step was written twice (a resumed run), the later value wins.

Values are kept as written (non-finite ones too: the metrics drop them); empty cells are skipped. Every
problem a user can fix is a one-line :class:`~batchlab.errors.BatchlabError` that starts with the file's path.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from batchlab.errors import BatchlabError

MIN_POINTS = 5
"""Fewest finite loss values a curve needs: below this the noise metrics say nothing."""
FORMATS = ("csv", "lightning", "keras", "tensorboard")
TENSORBOARD_PREFIX = "events.out.tfevents."
VALIDATION_TOKENS = frozenset({"val", "valid", "validation", "test", "eval", "evaluation", "dev"})
ALLOWED_INPUT = ("a .csv file (a loss column with step or epoch), a Lightning metrics.csv, a Keras History .json, "
                 f"a TensorBoard {TENSORBOARD_PREFIX}* file or a directory holding them")


@dataclass(frozen=True)
class LossHistory:
    """One loss curve read from a file."""

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
        return (f"LossHistory({self.path!r}, format={self.format!r}, source={self.source!r}, "
                f"n_points={self.n_points}, resolution={self.resolution!r})")


def read_loss_history(path: str | Path, *, column: str | None = None, tag: str | None = None) -> LossHistory:
    """Read the loss curve in `path`, whatever its format. `column` names the CSV column or JSON key to read
    (CSV, Lightning, Keras); `tag` the TensorBoard scalar tag. Each is ignored by the formats it does not fit."""
    kind = detect_format(path)
    if kind == "tensorboard":
        return read_tensorboard(path, tag=tag)
    return {"csv": read_csv, "lightning": read_lightning_csv, "keras": read_keras_history}[kind](path, column=column)


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
        lightning_like = p.name == "metrics.csv" or any(c.endswith(("_step", "_epoch")) for c in header)
        return "lightning" if {"step", "epoch"} <= set(header) and lightning_like else "csv"
    raise BatchlabError(f"{p}: unknown format; allowed: {ALLOWED_INPUT}")


def choose_loss_name(counts: dict[str, int]) -> str | None:
    """The series to read when the user named none, from {name: number of values}. Candidates are names holding
    'loss' with at least one value; among them, in order of precedence:

    1. training over validation (a name with a token val, valid, validation, test, eval, evaluation or dev loses);
    2. a name with the token train or training;
    3. per-step over anything else (the token step: Lightning's ``train_loss_step`` over ``train_loss_epoch``);
    4. more values (the finer resolution);
    5. the shorter name (``loss`` over ``loss_scale``), then alphabetical order.

    Tokens are the lower-case runs of letters and digits. None when there is no candidate."""
    candidates = sorted(n for n, c in counts.items() if "loss" in n.lower() and c > 0)
    if not candidates:
        return None

    def preference(name: str) -> tuple:
        tokens = set(re.findall(r"[a-z0-9]+", name.lower()))
        return (not tokens & VALIDATION_TOKENS, bool(tokens & {"train", "training"}), "step" in tokens,
                counts[name], -len(name))

    return max(candidates, key=preference)


def read_csv(path: str | Path, *, column: str | None = None) -> LossHistory:
    """A plain CSV: the loss column (`column`, else :func:`choose_loss_name`) against the `step` column, else the
    `epoch` column, else the row number. Rows whose loss cell is empty are skipped."""
    p = Path(path)
    header, *rows = _csv_rows(p)
    name = _pick_column(p, header, rows, column)
    x_name = next((c for c in ("step", "epoch") if c in header), None)
    x, loss = _column_pairs(p, header, rows, name, x_name)
    return _checked(LossHistory(str(p), "csv", name, x, x_name or "row", loss))


def read_lightning_csv(path: str | Path, *, column: str | None = None) -> LossHistory:
    """A Lightning CSVLogger metrics.csv: the loss column (`column`, else :func:`choose_loss_name`, which prefers
    the per-step training loss) over its non-empty cells, against the `epoch` column when the column's name has
    the token epoch (``train_loss_epoch``), else against the `step` column (Lightning's global step)."""
    p = Path(path)
    header, *rows = _csv_rows(p)
    name = _pick_column(p, header, rows, column)
    x_name = "epoch" if "epoch" in re.findall(r"[a-z0-9]+", name.lower()) else "step"
    x, loss = _column_pairs(p, header, rows, name, x_name)
    return _checked(LossHistory(str(p), "lightning", name, x, x_name, loss))


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
    name = _pick_name(p, "key", {k: len(v) for k, v in series.items()}, column)
    values = [np.nan if v is None else v for v in series[name]]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise BatchlabError(f"{p}: key {name!r} holds a value that is not a number; allowed: numbers and null")
    loss = np.asarray(values, float)
    return _checked(LossHistory(str(p), "keras", name, np.arange(1.0, len(loss) + 1), "epoch", loss))


def read_tensorboard(path: str | Path, *, tag: str | None = None) -> LossHistory:
    """TensorBoard event files: the scalar `tag`, else the one :func:`choose_loss_name` picks, sorted by step.
    x is the step TensorBoard stored, in epochs when the tag has the token epoch (Keras's ``epoch_loss``)."""
    p = Path(path)
    scalars = _tensorboard_scalars(p)
    name = _pick_name(p, "scalar tag", {k: len(v) for k, v in scalars.items()}, tag, flag="--tag")
    steps = np.array(sorted(scalars[name]), float)
    loss = np.array([scalars[name][int(s)] for s in steps], float)
    unit = "epoch" if "epoch" in re.findall(r"[a-z0-9]+", name.lower()) else "step"
    return _checked(LossHistory(str(p), "tensorboard", name, steps, unit, loss))


def _tensorboard_scalars(p: Path) -> dict[str, dict[int, float]]:
    try:
        from tensorboard.backend.event_processing import event_file_loader
        from tensorboard.util import tensor_util
    except ImportError:
        raise BatchlabError(f"{p}: reading TensorBoard files needs the tensorboard package; "
                            "HINT: pip install 'batchlab[tensorboard]'") from None
    files = sorted(f for f in p.rglob(f"{TENSORBOARD_PREFIX}*") if f.is_file()) if p.is_dir() else [p]
    if not files:
        raise BatchlabError(f"{p}: no {TENSORBOARD_PREFIX}* files in this directory")
    scalars: dict[str, dict[int, float]] = {}
    for f in files:
        prefix = f.parent.relative_to(p).as_posix() + "/" if p.is_dir() and f.parent != p else ""
        for event in event_file_loader.EventFileLoader(str(f)).Load():
            for value in event.summary.value:
                kind = value.WhichOneof("value")
                if kind == "simple_value":
                    number = float(value.simple_value)
                elif kind == "tensor":
                    array = tensor_util.make_ndarray(value.tensor)
                    if array.size != 1 or array.dtype.kind not in "fiu":
                        continue
                    number = float(array.reshape(()))
                else:
                    continue
                scalars.setdefault(prefix + value.tag, {})[int(event.step)] = number
    return scalars


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


def _csv_rows(p: Path) -> list[list[str]]:
    """Header first; whitespace stripped; blank lines dropped."""
    try:
        rows = [[cell.strip() for cell in row] for row in csv.reader(_read_text(p).splitlines()) if row]
    except csv.Error as e:
        raise BatchlabError(f"{p}: not a readable CSV ({e})") from None
    return rows


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


def _pick_column(p: Path, header: list[str], rows: list[list[str]], column: str | None) -> str:
    if not rows:
        raise BatchlabError(f"{p}: a header but no data rows")
    counts = {c: sum(1 for r in rows if i < len(r) and r[i] != "") for i, c in enumerate(header)}
    return _pick_name(p, "column", counts, column)


def _pick_name(p: Path, what: str, counts: dict[str, int], wanted: str | None, flag: str = "--column") -> str:
    found = ", ".join(counts) or "none"
    if wanted is not None:
        if wanted not in counts:
            raise BatchlabError(f"{p}: no {what} {wanted!r}; {what}s found: {found}")
        return wanted
    name = choose_loss_name(counts)
    if name is None:
        raise BatchlabError(f"{p}: no loss {what} (none with 'loss' in its name holds a value); {what}s found: "
                            f"{found}; HINT: name one with {flag} NAME")
    return name


def _column_pairs(p: Path, header: list[str], rows: list[list[str]], name: str,
                  x_name: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(x, loss) over the rows whose `name` cell is not empty; x is the row number when `x_name` is None."""
    i, j = header.index(name), (header.index(x_name) if x_name else None)
    xs, losses = [], []
    for line, row in enumerate(rows, start=2):
        cell = row[i] if i < len(row) else ""
        if cell == "":
            continue
        losses.append(_number(p, line, name, cell))
        x_cell = row[j] if j is not None and j < len(row) else ""
        xs.append(float(line - 1) if j is None else _number(p, line, x_name, x_cell) if x_cell else np.nan)
    return np.array(xs, float), np.array(losses, float)


def _number(p: Path, line: int, column: str | None, cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise BatchlabError(f"{p}: line {line}, column {column!r}: got {cell!r}; allowed: a number or an empty "
                            "cell") from None


def _checked(history: LossHistory) -> LossHistory:
    """Validate at the door: enough finite values, none negative (the metrics work on log-loss)."""
    where = f"{history.path}: {history.source!r}"
    finite = history.loss[np.isfinite(history.loss)]
    if len(history.loss) and not len(finite):
        raise BatchlabError(f"{where}: all {len(history.loss)} values are non-finite (nan or inf)")
    if len(finite) < MIN_POINTS:
        raise BatchlabError(f"{where}: got {len(finite)} finite loss values; allowed: at least {MIN_POINTS}")
    if finite.min() < 0:
        raise BatchlabError(f"{where}: got a negative loss ({finite.min():g}); allowed: losses >= 0 (the noise "
                            "metrics work on log-loss)")
    return history

