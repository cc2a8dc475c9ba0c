"""Readers for a user's data file: CSV, Parquet and NumPy `.npz`, each checked at the door.

A reader returns :class:`FileContents`: the feature rows (any numeric dtype, possibly memory-mapped, not yet
split or scaled), the raw target (numbers, booleans or strings: the task is decided later, in
:mod:`batchlab.data.load`), and the split when the file gives one. Every defect (a missing path, a file that is not
what its extension says, missing values, inconsistent shapes, a non-numeric feature) is a :class:`BatchlabError`
naming the file, the column or array, and where.

What is read and copied:

- CSV is parsed by Python's `csv` module: the whole file is read as text. Fine for thousands to a few million
  cells; for larger data use Parquet or NPZ.
- Parquet (`pip install 'batchlab[parquet]'`, pyarrow): the footer gives the column names, then only the
  target, the split column and the selected features are read, one column at a time, each written straight into
  the float32 feature matrix, so the peak is that matrix plus one column.
- NPZ (`numpy.savez`): arrays `X` (N, D), (N, H, W) or (N, H, W, C) and `y` (N,), optionally `X_test` and
  `y_test`. `numpy.load` ignores `mmap_mode` for `.npz` archives, so members stored uncompressed (`numpy.savez`)
  are memory-mapped here directly from their offset in the zip file: nothing is read until used, and only the
  rows and columns used are converted (once, to float32 in :mod:`batchlab.data.load`); each member's CRC-32 is
  checked first, in one sequential read (zipfile checks compressed members as it inflates them). Members written by
  `numpy.savez_compressed` have to be decompressed, so each of those is read into memory once, in its stored dtype.
"""

from __future__ import annotations

import csv
import struct
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from batchlab.errors import BatchlabError, invalid
from batchlab.spec import FLOAT32_MAX

ROW_CHUNK = 65_536
"""Rows per chunk when scanning a large array (bounded temporaries)."""
PARQUET_MAGIC, ZIP_MAGIC, NPY_MAGIC = b"PAR1", b"PK\x03\x04", b"\x93NUMPY"
"""How Parquet files (first and last 4 bytes), zip archives (.npz) and .npy files begin."""


@dataclass(frozen=True)
class FileContents:
    """A data file as read: features and raw target, before the task is decided, the split made or features scaled."""

    name: str
    x: np.ndarray
    """(N, D) feature rows, any numeric dtype (a memory map for uncompressed NPZ)."""
    target: np.ndarray
    """(N,) raw target values: integers, floats, booleans or strings, all present and finite."""
    feature_names: tuple[str, ...]
    target_source: str
    """How messages name the target, e.g. "column 'price' of houses.csv"."""
    is_train: np.ndarray | None = None
    """From a `split` column: True for train rows."""
    x_test: np.ndarray | None = None
    """NPZ `X_test` (flattened like x), with `target_test`."""
    target_test: np.ndarray | None = None
    image_shape: tuple[int, ...] | None = None
    """(H, W) or (H, W, C) when each row of x is a flattened image."""


def read_data_file(path: str, kind: str, *, target: str | None, features: tuple[str, ...] | None) -> FileContents:
    """Read the `kind` (CSV, Parquet or NPZ) file at `path`; raises BatchlabError on any defect."""
    p = Path(path)
    if not p.is_file():
        raise invalid("dataset", path, f"a built-in dataset name or the path of an existing {kind} file")
    reader = {"CSV": read_csv, "Parquet": read_parquet, "NPZ": read_npz}[kind]
    return reader(p, target=target, features=features)


def _select_features(columns: Sequence[str], *, target: str, features: tuple[str, ...] | None, file: str,
                     exclude: Sequence[str] = ()) -> list[str]:
    """The feature columns: `features` if given (each must exist and not be the target), else all other columns."""
    if features is None:
        return [c for c in columns if c != target and c not in exclude]
    for f in features:
        if f not in columns or f in exclude:
            others = [c for c in columns if c != target and c not in exclude]
            raise invalid("features", f, f"columns of {file}: {_list(others)}")
        if f == target:
            raise invalid("features", f, f"columns other than the target '{target}'")
    return list(features)


def _list(names: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _split_mask(values: np.ndarray, file: str) -> np.ndarray:
    bad = sorted({str(v) for v in np.unique(values)} - {"train", "test"})
    if bad:
        raise BatchlabError(f"dataset: the split column of {file} holds {bad[0]!r}; allowed: train, test")
    is_train = values == "train"
    if is_train.all() or not is_train.any():
        raise BatchlabError(f"dataset: {file}'s split column must hold both 'train' and 'test' rows")
    return is_train


FLOAT32_RANGE = f"finite numbers that float32 holds (|x| <= {FLOAT32_MAX:.3g})"
"""What every feature and numeric target must be: training runs in float32, where a larger number becomes inf."""


def first_nonfinite_row(x: np.ndarray, *, limit: float | None = None) -> int | None:
    """Index of the first row of `x` holding a NaN or infinity (with `limit`: a number larger than that in
    absolute value), scanning ROW_CHUNK rows at a time; None if none."""
    if x.dtype.kind not in "fc" or (limit is not None and x.dtype.itemsize <= 4):
        return None  # a float32 array holds nothing beyond float32's range
    for start in range(0, len(x), ROW_CHUNK):
        chunk = x[start:start + ROW_CHUNK]
        good = np.isfinite(chunk) if limit is None else np.abs(chunk) <= limit
        ok = good.reshape(min(ROW_CHUNK, len(x) - start), -1).all(axis=1)
        if not ok.all():
            return start + int(np.argmin(ok))
    return None


def first_too_large_row(x: np.ndarray) -> int | None:
    """Index of the first row of `x` (finite) holding a number beyond float32's range, which would become inf in
    training; None if none."""
    return first_nonfinite_row(x, limit=FLOAT32_MAX)


def too_large(what: str, value: object, where: str) -> BatchlabError:
    """The one message for a number float32 cannot hold."""
    return BatchlabError(f"{what} holds {value} {where}, beyond float32's range; allowed: {FLOAT32_RANGE} "
                         "(rescale it)")


# ---------------------------------------------------------------------------------------------------------
# CSV


def read_csv(p: Path, *, target: str | None, features: tuple[str, ...] | None = None) -> FileContents:
    """A CSV with a header row: numeric feature columns, a target column (numbers or strings), optionally a
    `split` column of `train`/`test`."""
    target = target or ""
    with p.open("rb") as f:
        head = f.read(8192)
    for magic, what in ((PARQUET_MAGIC, "a Parquet file"), (ZIP_MAGIC, "a zip archive (an NPZ file?)"),
                        (NPY_MAGIC, "a NumPy array (.npy)")):
        if head.startswith(magic):
            raise BatchlabError(f"dataset: {p} is not a text CSV file (it is {what})")
    if b"\x00" in head:
        raise BatchlabError(f"dataset: {p} is not a text CSV file (it holds NUL bytes: binary data)")
    try:
        with p.open(newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not part of a name
            delimiter = _delimiter(f.readline())
            f.seek(0)
            rows = list(csv.reader(f, delimiter=delimiter))
    except UnicodeDecodeError:
        raise BatchlabError(f"dataset: {p} is not a text CSV file (it is not UTF-8)") from None
    except csv.Error as e:
        raise BatchlabError(f"dataset: {p} is not a text CSV file ({e})") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise BatchlabError(f"dataset: {p} is empty; allowed: a CSV with a header row and data rows")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    _refuse_duplicates(header, p.name)
    if target not in header:
        raise invalid("target", target, f"a column of {p.name}: " + ", ".join(header))
    if not body:
        raise BatchlabError(f"dataset: {p} has a header but no data rows")
    for line, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise BatchlabError(f"dataset: {p.name} line {line} has {len(r)} fields, the header has {len(header)}")
    split = "split" if "split" in header and target != "split" else None
    names = _select_features(header, target=target, features=features, file=p.name, exclude=[split] if split else [])
    if not names:
        raise BatchlabError(f"dataset: {p.name} has no feature columns besides '{target}'")
    cells = {h: [r[i].strip() for r in body] for i, h in enumerate(header)}
    x = np.empty((len(body), len(names)), np.float32)
    for j, name in enumerate(names):
        x[:, j] = _numeric_column(name, cells[name], p.name)
    is_train = _split_mask(np.array(cells[split]), p.name) if split else None
    return FileContents(p.name, x, _csv_target(cells[target], target, p.name), tuple(names),
                        f"column '{target}' of {p.name}", is_train=is_train)


def _delimiter(header: str) -> str:
    """`,` unless the header line holds no comma but semicolons (or tabs): the CSV dialects spreadsheets write
    where the comma is the decimal separator (or as TSV)."""
    if "," in header:
        return ","
    return max((";", "\t"), key=header.count) if header.count(";") or header.count("\t") else ","


def _refuse_duplicates(names: list[str], file: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise BatchlabError(f"dataset: {file} has two columns named {name!r}; allowed: distinct column names "
                                "(rename one)")
        seen.add(name)


def _numeric_column(name: str, cells: list[str], file: str) -> np.ndarray:
    try:
        values = np.array(cells, dtype=np.float64)
    except ValueError:
        for i, cell in enumerate(cells):
            if not cell.strip():
                raise BatchlabError(f"dataset: feature column '{name}' of {file} has a missing value (an empty cell) "
                                    f"on line {i + 2}; allowed: numbers in every row (fill or drop that row)")
            try:
                float(cell)
            except ValueError:
                hint = " (a decimal comma? write 1.5, not 1,5)" if "," in cell else " (drop or encode the column)"
                raise BatchlabError(f"dataset: feature column '{name}' of {file} has a non-numeric value {cell!r} "
                                    f"on line {i + 2}; allowed: numbers{hint}") from None
        raise
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise BatchlabError(f"dataset: feature column '{name}' of {file} has a missing or non-finite value "
                            f"{cells[bad[0]]!r} on line {bad[0] + 2}; allowed: finite numbers")
    large = np.flatnonzero(np.abs(values) > FLOAT32_MAX)
    if len(large):
        raise too_large(f"dataset: feature column '{name}' of {file}", repr(cells[large[0]]), f"on line {large[0] + 2}")
    return values


def _csv_target(cells: list[str], target: str, file: str) -> np.ndarray:
    """Integers if every cell is one, else floats if every cell is a number, else strings."""
    if "" in cells:
        raise BatchlabError(f"target: column '{target}' of {file} is empty on line {cells.index('') + 2}; every row "
                            "needs a label or value")
    try:
        return np.array([int(c) for c in cells], dtype=np.int64)
    except (ValueError, OverflowError):
        pass
    try:
        values = np.array(cells, dtype=np.float64)
    except ValueError:
        return np.array(cells, dtype=str)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise BatchlabError(f"target: column '{target}' of {file} has a missing or non-finite value "
                            f"{cells[bad[0]]!r} on line {bad[0] + 2}; allowed: finite numbers or labels")
    large = np.flatnonzero(np.abs(values) > FLOAT32_MAX)
    if len(large):
        raise too_large(f"target: column '{target}' of {file}", repr(cells[large[0]]), f"on line {large[0] + 2}")
    return values


# ---------------------------------------------------------------------------------------------------------
# Parquet

def read_parquet(p: Path, *, target: str | None, features: tuple[str, ...] | None = None) -> FileContents:
    """A Parquet file: numeric feature columns, a target column (numbers, booleans, strings or categories),
    optionally a string `split` column of `train`/`test`. Only the columns used are read."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise BatchlabError(f"dataset: reading {p.name} needs pyarrow, which is not installed; allowed: pip install "
                            "'batchlab[parquet]', or a .csv or .npz file") from None
    with p.open("rb") as f:
        head = f.read(4)
        f.seek(max(p.stat().st_size - 4, 0))
        tail = f.read(4)
    if head != PARQUET_MAGIC or tail != PARQUET_MAGIC or p.stat().st_size < 12:
        raise BatchlabError(f"dataset: {p} is not a Parquet file (it does not begin and end with the Parquet "
                            "magic bytes PAR1)")
    try:
        pf = pq.ParquetFile(p)
        columns = list(pf.schema_arrow.names)
    except (pa.ArrowException, OSError) as e:
        raise BatchlabError(f"dataset: {p} is not a readable Parquet file ({_one_line(e)})") from None
    target = target or ""
    _refuse_duplicates(columns, p.name)
    if target not in columns:
        raise invalid("target", target, f"a column of {p.name}: {_list(columns)}")
    if pf.metadata.num_rows == 0:
        raise BatchlabError(f"dataset: {p} has columns but no rows")
    split = "split" if "split" in columns and target != "split" else None
    names = _select_features(columns, target=target, features=features, file=p.name, exclude=[split] if split else [])
    if not names:
        raise BatchlabError(f"dataset: {p.name} has no feature columns besides '{target}'")

    def column(name: str):
        try:
            col = pf.read(columns=[name]).column(0)
        except (pa.ArrowException, OSError) as e:
            raise BatchlabError(f"dataset: column '{name}' of {p} cannot be read ({_one_line(e)})") from None
        if col.null_count:
            row = int(np.argmax(np.asarray(col.is_null())))
            role = "target" if name == target else "dataset"
            raise BatchlabError(f"{role}: column '{name}' of {p.name} has a missing value (null) at row {row}; "
                                "allowed: a value in every row")
        return col

    x = np.empty((pf.metadata.num_rows, len(names)), np.float32)
    for j, name in enumerate(names):
        col = column(name)
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)):
            raise BatchlabError(f"dataset: feature column '{name}' of {p.name} has type {col.type}; allowed: numeric "
                                "columns (drop or encode it, or choose others with --features)")
        values = col.to_numpy()
        bad = first_nonfinite_row(values)
        if bad is not None:
            raise BatchlabError(f"dataset: feature column '{name}' of {p.name} has a missing or non-finite value "
                                f"({values[bad]}) at row {bad}; allowed: finite numbers")
        large = first_too_large_row(values)
        if large is not None:
            raise too_large(f"dataset: feature column '{name}' of {p.name}", values[large], f"at row {large}")
        x[:, j] = values
    is_train = _split_mask(column(split).cast(pa.string()).to_numpy(zero_copy_only=False).astype(str), p.name) \
        if split else None
    return FileContents(p.name, x, _parquet_target(column(target), target, p.name), tuple(names),
                        f"column '{target}' of {p.name}", is_train=is_train)


def _parquet_target(col, target: str, file: str) -> np.ndarray:
    import pyarrow as pa

    t = col.type
    if pa.types.is_dictionary(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
        return col.cast(pa.string()).to_numpy(zero_copy_only=False).astype(str)
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        raise BatchlabError(f"target: column '{target}' of {file} has type {t}; allowed: numbers, booleans, "
                            "strings or categories")
    values = col.to_numpy()
    bad = first_nonfinite_row(values)
    if bad is not None:
        raise BatchlabError(f"target: column '{target}' of {file} has a missing or non-finite value ({values[bad]}) "
                            f"at row {bad}; allowed: finite numbers or labels")
    large = first_too_large_row(values)
    if large is not None:
        raise too_large(f"target: column '{target}' of {file}", values[large], f"at row {large}")
    return values


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


# ---------------------------------------------------------------------------------------------------------
# NPZ

def read_npz(p: Path, *, target: str | None, features: tuple[str, ...] | None = None) -> FileContents:
    """An archive written by `numpy.savez` (or `savez_compressed`) with `X` and the target array (`y`, or the
    name given as `target`), and optionally `X_test` with `<target>_test`. Features are the columns of X
    flattened row by row; `features` selects them by index."""
    y_name = target or "y"
    allowed = ("X", y_name, "X_test", f"{y_name}_test")
    if not zipfile.is_zipfile(p):
        with p.open("rb") as f:
            npy = f.read(len(NPY_MAGIC)) == NPY_MAGIC
        what = "a single NumPy array (.npy)" if npy else "not a zip archive"
        raise BatchlabError(f"dataset: {p} is not an NPZ file ({what}); allowed: an archive written by "
                            f"numpy.savez(path, X=..., {y_name}=...)")
    with zipfile.ZipFile(p) as zf:
        members = {n[:-4]: zf.getinfo(n) for n in zf.namelist() if n.endswith(".npy")}
        others = [n for n in zf.namelist() if not n.endswith(".npy")]
    if others or not members:
        raise BatchlabError(f"dataset: {p} is a zip archive but not an NPZ file (it holds {others[0]!r} "
                            "besides .npy arrays)" if others else f"dataset: {p} is a zip archive holding no arrays")
    for name in members:
        if name not in allowed:
            raise BatchlabError(f"dataset: {p.name} holds an array {name!r}; allowed arrays: {', '.join(allowed)}")
    for name in ("X", y_name):
        if name not in members:
            hint = " (or name the target array with --target)" if name == y_name else ""
            raise BatchlabError(f"dataset: {p.name} has no array {name!r}; allowed: arrays {allowed[0]} and "
                                f"{allowed[1]}, optionally {allowed[2]} and {allowed[3]}{hint}")
    arrays = {name: _npz_member(p, name, info) for name, info in members.items()}
    x, y = arrays["X"], arrays[y_name]
    x_test, y_test = arrays.get("X_test"), arrays.get(f"{y_name}_test")
    if x.ndim not in (2, 3, 4) or len(x) == 0 or x.size == 0:
        raise BatchlabError(f"dataset: X of {p.name} has shape {x.shape}; allowed: (N, D), (N, H, W) or "
                            "(N, H, W, C) with N >= 1 rows")
    _check_labels_shape(y, y_name, x, "X", p.name)
    if (x_test is None) != (y_test is None):
        have, lack = ("X_test", f"{y_name}_test") if y_test is None else (f"{y_name}_test", "X_test")
        raise BatchlabError(f"dataset: {p.name} has {have} but no {lack}; allowed: both test arrays or neither")
    if x_test is not None and y_test is not None:
        if x_test.shape[1:] != x.shape[1:] or len(x_test) == 0:
            raise BatchlabError(f"dataset: X_test of {p.name} has shape {x_test.shape} but X has {x.shape}; "
                                f"allowed: X_test rows of X's shape {x.shape[1:]} (N_test >= 1)")
        _check_labels_shape(y_test, f"{y_name}_test", x_test, "X_test", p.name)
    image_shape = tuple(int(d) for d in x.shape[1:]) if x.ndim > 2 else None
    x, x_test = x.reshape(len(x), -1), None if x_test is None else x_test.reshape(len(x_test), -1)
    names = tuple(str(j) for j in range(x.shape[1]))
    if features is not None:
        columns = _column_indices(features, x.shape[1], p.name)
        x = x[:, columns]
        x_test = None if x_test is None else x_test[:, columns]
        names, image_shape = tuple(str(j) for j in columns), None  # a subset of pixels is no longer an image
    for name, a in (("X", x), ("X_test", x_test)):
        bad = None if a is None else first_nonfinite_row(a)
        if bad is not None:
            raise BatchlabError(f"dataset: {name} of {p.name} has a missing or non-finite value in row {bad}; "
                                "allowed: finite numbers")
        large = None if a is None else first_too_large_row(a)
        if large is not None:
            raise too_large(f"dataset: {name} of {p.name}", "a number", f"in row {large}")
    return FileContents(p.name, x, _npz_target(y, y_name, p.name), names, f"array '{y_name}' of {p.name}",
                        x_test=x_test, target_test=None if y_test is None else
                        _npz_target(y_test, f"{y_name}_test", p.name), image_shape=image_shape)


def _check_labels_shape(y: np.ndarray, y_name: str, x: np.ndarray, x_name: str, file: str) -> None:
    if y.ndim != 1:
        raise BatchlabError(f"dataset: {y_name} of {file} has shape {y.shape}; allowed: one value per row, shape "
                            f"({len(x)},) (use y.ravel() for a column, argmax for one-hot labels)")
    if len(y) != len(x):
        raise BatchlabError(f"dataset: {x_name} of {file} has {len(x)} rows but {y_name} has {len(y)}; allowed: "
                            "one target per row")
    if y.dtype.kind not in "biufUS":
        raise BatchlabError(f"target: {y_name} of {file} has dtype {y.dtype}; allowed: numbers, booleans or strings")


def _npz_target(y: np.ndarray, name: str, file: str) -> np.ndarray:
    values = np.array(y)  # the target is small: one value per row, read into memory
    if values.dtype.kind == "S":
        values = values.astype(str)
    bad = first_nonfinite_row(values)
    if bad is not None:
        raise BatchlabError(f"target: array '{name}' of {file} has a missing or non-finite value ({values[bad]}) at "
                            f"index {bad}; allowed: finite numbers or labels")
    large = first_too_large_row(values)
    if large is not None:
        raise too_large(f"target: array '{name}' of {file}", values[large], f"at index {large}")
    return values


def _column_indices(features: tuple[str, ...], n_columns: int, file: str) -> list[int]:
    out = []
    for f in features:
        try:
            j = int(f)
        except ValueError:
            j = -1
        if not 0 <= j < n_columns:
            raise invalid("features", f, f"column indices of the (flattened) X of {file}: 0 to {n_columns - 1}")
        out.append(j)
    return out


def _npz_member(p: Path, name: str, info: zipfile.ZipInfo) -> np.ndarray:
    """One array of the archive: memory-mapped when stored uncompressed, else decompressed into memory."""
    try:
        if info.compress_type == zipfile.ZIP_STORED:
            mapped = _memmap_stored_member(p, info)
            if mapped is not None:
                return mapped
        with zipfile.ZipFile(p) as zf, zf.open(info) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e) or "object" in str(e).lower():
            raise BatchlabError(f"dataset: array {name!r} of {p.name} holds Python objects; allowed: numeric or "
                                "string arrays (saved without pickling)") from None
        raise BatchlabError(f"dataset: array {name!r} of {p.name} is not a readable .npy array ({e})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise BatchlabError(f"dataset: {p} is a damaged NPZ file ({name!r}: {e})") from None


def _check_crc(p: Path, info: zipfile.ZipInfo, *, start: int) -> None:
    """Compare a stored member's bytes with the CRC-32 its zip entry records (zipfile checks compressed members
    itself as it inflates them): one sequential read in 4 MiB chunks, before the member is mapped."""
    crc, left = 0, info.compress_size
    with p.open("rb") as f:
        f.seek(start)
        while left > 0:
            chunk = f.read(min(left, 1 << 22))
            if not chunk:
                raise OSError("the archive ends inside the array")
            crc, left = zlib.crc32(chunk, crc), left - len(chunk)
    if crc != info.CRC:
        raise zipfile.BadZipFile(f"Bad CRC-32 for file {info.filename!r}")


def _memmap_stored_member(p: Path, info: zipfile.ZipInfo) -> np.ndarray | None:
    """Map a stored (uncompressed) .npy member in place: its data start after the zip local header and the
    .npy header, both read here. None for a .npy format version this reader does not parse (read it instead)."""
    with p.open("rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != ZIP_MAGIC:
            raise OSError("bad local file header")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            return None
        shape, fortran_order, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                       else np.lib.format.read_array_header_2_0(f))
        offset = f.tell()
    if dtype.hasobject:
        raise ValueError("object arrays cannot be memory-mapped (pickled)")
    _check_crc(p, info, start=info.header_offset + 30 + name_len + extra_len)
    if int(np.prod(shape)) == 0:
        return np.empty(shape, dtype)
    return np.memmap(p, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran_order else "C")
