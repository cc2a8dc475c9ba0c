"""Data files (CSV, Parquet, NPZ) as a user meets them: real files written here, read back, and every defect a
one-line error with exit code 2 that writes nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchlab.data.dataset import Dataset
from batchlab.data.files import read_data_file, read_npz
from batchlab.data.load import TaskInferredWarning, load_dataset
from batchlab.errors import BatchlabError
from batchlab.runner.driver import run_study
from batchlab.spec import StudySpec, build_spec
from batchlab.store.db import Store

SPECIES = np.array(["bird", "cat", "dog"])


def labelled(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n rows of 3 features and string labels that depend on them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    return x, SPECIES[np.arange(n) % 3]


def write_parquet(path: Path, columns: dict[str, object]) -> str:
    pq.write_table(pa.table(columns), path)
    return str(path)


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> str:
    path.write_text("\n".join([",".join(header), *(",".join(map(str, r)) for r in rows)]) + "\n")
    return str(path)


def load(dataset: str, **kw) -> Dataset:
    """load_dataset with the task given (so no inference note) unless the test asks for auto."""
    kw.setdefault("task", "classification")
    return load_dataset(build_spec({"dataset": dataset, **kw}))


# ---------------------------------------------------------------------------------------------------------
# Reading each format.


def test_parquet_with_string_labels_a_split_column_and_feature_selection(tmp_path):
    x, labels = labelled()
    split = np.where(np.arange(60) % 5 == 0, "test", "train")
    path = write_parquet(tmp_path / "d.parquet", {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2].astype(np.float32),
                                                  "species": labels, "split": split, "note": ["x"] * 60})
    d = load(path, target="species", features="c,a", standardize=False)
    assert d.class_names == ("bird", "cat", "dog") and d.feature_names == ("c", "a")
    assert (d.n_train, len(d.y_test)) == (48, 12)  # the split column, not a 0.8 split
    np.testing.assert_allclose(d.x_train, x[split == "train"][:, [2, 0]], rtol=1e-6)
    assert list(d.y_test) == [list(SPECIES).index(s) for s in labels[split == "test"]]


def test_parquet_reads_only_the_columns_it_uses(tmp_path, monkeypatch):
    x, labels = labelled()
    path = write_parquet(tmp_path / "d.parquet", {"a": x[:, 0], "b": x[:, 1], "text": ["free text"] * 60,
                                                  "y": labels})
    read = []
    original = pq.ParquetFile.read

    def spy(self, columns=None, **kw):
        read.append(tuple(columns or ()))
        return original(self, columns=columns, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read", spy)
    d = load(path, target="y", features="b")
    assert sorted(read) == [("b",), ("y",)]  # one column at a time; 'a' and the string column never read
    assert d.n_features == 1
    with pytest.raises(BatchlabError, match=r"^dataset: feature column 'text' of d.parquet has type string"):
        load(path, target="y")  # every column but the target is a feature by default


def test_parquet_integer_categorical_and_boolean_targets(tmp_path):
    x, labels = labelled()
    for name, target, classes in (("int", np.arange(60) % 4 * 10, ("0", "10", "20", "30")),
                                  ("cat", pa.array(labels).dictionary_encode(), ("bird", "cat", "dog")),
                                  ("bool", np.arange(60) % 2 == 0, ("False", "True"))):
        path = write_parquet(tmp_path / f"{name}.parquet", {"a": x[:, 0], "y": target})
        assert load(path, target="y").class_names == classes, name


def test_npz_with_string_labels_and_given_test_arrays(tmp_path):
    x, labels = labelled()
    path = tmp_path / "d.npz"
    np.savez(path, X=x[:45], y=labels[:45], X_test=x[45:], y_test=labels[45:])
    d = load(str(path), standardize=False)
    assert (d.n_train, len(d.y_test), d.class_names) == (45, 15, ("bird", "cat", "dog"))
    np.testing.assert_allclose(d.x_test, x[45:], rtol=1e-6)
    assert d.feature_names == ("0", "1", "2") and d.image_shape is None


def test_npz_named_target_and_column_indices(tmp_path):
    x, _ = labelled()
    path = tmp_path / "d.npz"
    np.savez(path, X=x, label=np.arange(60) % 2)
    d = load(str(path), target="label", features="2,0", standardize=False, test_fraction=0.5)
    assert d.feature_names == ("2", "0") and d.class_names == ("0", "1")
    rows = np.concatenate([d.x_train, d.x_test])
    assert {tuple(r) for r in rows.round(5)} == {tuple(r) for r in x[:, [2, 0]].astype(np.float32).round(5)}
    with pytest.raises(BatchlabError, match=r"^features: got '3'; allowed: column indices of the \(flattened\) X "
                                            r"of d.npz: 0 to 2$"):
        load(str(path), target="label", features="0,3")


@pytest.mark.parametrize("shape", [(8, 8), (4, 5, 3)])
def test_image_shaped_npz_is_flattened_row_major_and_keeps_its_shape(tmp_path, shape):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, size=(30, *shape), dtype=np.uint8)
    path = tmp_path / "images.npz"
    np.savez(path, X=images, y=np.arange(30) % 3)
    d = load(str(path), standardize=False, test_fraction=0.2)
    assert d.image_shape == shape and d.n_features == int(np.prod(shape))
    flat = images.reshape(30, -1).astype(np.float32)
    rows = {r.tobytes(): i for i, r in enumerate(flat)}
    assert all(r.tobytes() in rows for r in d.x_train)  # each row is one image, pixels in row-major order
    assert d.summary()["image_shape"] == list(shape)
    assert load(str(path), features="0,1").image_shape is None  # some pixels are not an image


def test_digits_has_image_shape_8x8():
    assert load_dataset(StudySpec(dataset="digits")).image_shape == (8, 8)
    assert load_dataset(StudySpec(dataset="iris")).image_shape is None


def test_builtin_feature_selection_by_name():
    d = load_dataset(build_spec({"dataset": "iris", "features": "petal width (cm),sepal length (cm)"}))
    assert d.feature_names == ("petal width (cm)", "sepal length (cm)") and d.n_features == 2
    with pytest.raises(BatchlabError, match=r"^features: got 'petals'; allowed: features of iris: sepal length"):
        load_dataset(build_spec({"dataset": "iris", "features": "petals"}))


def test_uncompressed_npz_members_are_memory_mapped_compressed_ones_read(tmp_path):
    x = np.asfortranarray(np.arange(600, dtype=np.float64).reshape(200, 3))  # Fortran order is honoured too
    y = np.arange(200) % 2
    np.savez(tmp_path / "stored.npz", X=x, y=y)
    np.savez_compressed(tmp_path / "packed.npz", X=x, y=y)
    stored = read_npz(tmp_path / "stored.npz", target=None)
    packed = read_npz(tmp_path / "packed.npz", target=None)
    assert isinstance(stored.x, np.memmap) and not isinstance(packed.x, np.memmap)
    np.testing.assert_array_equal(stored.x, x)
    np.testing.assert_array_equal(packed.x, x)
    a, b = load(str(tmp_path / "stored.npz")), load(str(tmp_path / "packed.npz"))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.x_train.dtype == np.float32 and a.x_train.flags.c_contiguous


def test_standardized_with_training_statistics_of_the_file(tmp_path):
    x, labels = labelled(seed=3)
    x[:, 1] = 7.0  # a constant column is only centred
    path = tmp_path / "d.npz"
    np.savez(path, X=x[:40] * 100 + 5, y=labels[:40], X_test=x[40:] * 100 + 5, y_test=labels[40:])
    d = load(str(path))
    train = x[:40] * 100 + 5
    mean, std = train.mean(0), np.where(train.std(0) > 0, train.std(0), 1)
    np.testing.assert_allclose(d.x_train, (train - mean) / std, atol=1e-5)
    np.testing.assert_allclose(d.x_test, (x[40:] * 100 + 5 - mean) / std, atol=1e-5)


def test_auto_task_says_what_it_inferred(tmp_path):
    x, labels = labelled()
    path = write_parquet(tmp_path / "d.parquet", {"a": x[:, 0], "y": labels})
    with pytest.warns(TaskInferredWarning, match=r"^task: inferred classification from column 'y' of d.parquet: it "
                                                 r"holds labels with 3 distinct values; to override, pass --task "
                                                 r"regression"):
        d = load(path, target="y", task="auto")
    assert d.task == "classification"


# ---------------------------------------------------------------------------------------------------------
# Classification end to end from each format (string labels).


@pytest.mark.parametrize("fmt", ["parquet", "npz"])
def test_string_labels_run_end_to_end(tmp_path, fmt):
    x, labels = labelled(n=40)
    if fmt == "parquet":
        path = write_parquet(tmp_path / "d.parquet", {"a": x[:, 0], "b": x[:, 1], "species": labels})
    else:
        path = str(tmp_path / "d.npz")
        np.savez(path, X=x, species=labels)
    spec = build_spec({"dataset": path, "target": "species", "task": "classification", "batch_sizes": "4,full",
                       "epochs": 2, "hidden": "8", "device": "cpu", "gns": "off", "sharpness": False})
    run_study(spec, tmp_path / "out")
    store = Store.open(tmp_path / "out")
    try:
        meta, runs = store.meta(), store.runs()
        accuracy = [store.epochs(r["run_id"])["test_acc"] for r in runs]
    finally:
        store.close()
    assert meta["dataset"]["n_classes"] == 3 and meta["dataset"]["task"] == "classification"
    assert meta["dataset"]["class_names"] == ["bird", "cat", "dog"]
    assert all(r["status"] == "completed" and r["config"]["task"] == "classification" for r in runs)
    assert all(np.all((a >= 0) & (a <= 1)) for a in accuracy)


# ---------------------------------------------------------------------------------------------------------
# Every defect: one line naming the file and what is allowed, exit code 2, nothing written.

GOOD_X = np.arange(24, dtype=float).reshape(8, 3) % 5
GOOD_Y = np.array(["a", "b"] * 4)


def _npz(**arrays):
    def write(path: Path) -> None:
        with path.open("wb") as f:  # a file object: savez would add .npz to a path not ending in it
            np.savez(f, **arrays)
    return write


def _parquet(**columns):
    def write(path: Path) -> None:
        pq.write_table(pa.table(columns), path)
    return write


def _text(text: str | bytes):
    def write(path: Path) -> None:
        (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return write


def _npy(path: Path) -> None:
    with path.open("wb") as f:
        np.save(f, GOOD_X)


def _zip_of_text(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")


def _parquet_as(path: Path) -> None:
    pq.write_table(pa.table({"a": [1.0, 2.0], "y": ["a", "b"]}), path)


NAN_X = GOOD_X.copy()
NAN_X[5, 1] = np.nan


class BadFile(NamedTuple):
    name: str
    write: Callable[[Path], None]
    flags: tuple[str, ...]
    message: str
    """A regex the whole error message (after "batchlab run: error: ") must match."""


BAD_FILES = {
    # missing values
    "parquet-null-feature": BadFile("d.parquet", _parquet(a=[1.0, None, 3.0, 4.0], y=["a", "b", "a", "b"]), (),
                             r"dataset: column 'a' of d\.parquet has a missing value \(null\) at row 1; allowed: a "
                             r"value in every row"),
    "parquet-nan-feature": BadFile("d.parquet", _parquet(a=[1.0, 2.0, float("nan"), 4.0], y=["a", "b", "a", "b"]), (),
                            r"dataset: feature column 'a' of d\.parquet has a missing or non-finite value \(nan\) at "
                            r"row 2; allowed: finite numbers"),
    "parquet-null-target": BadFile("d.parquet", _parquet(a=[1.0, 2.0, 3.0, 4.0], y=["a", None, "a", "b"]), (),
                            r"target: column 'y' of d\.parquet has a missing value \(null\) at row 1; allowed: a "
                            r"value in every row"),
    "npz-nan-in-X": BadFile("d.npz", _npz(X=NAN_X, y=GOOD_Y), (),
                     r"dataset: X of d\.npz has a missing or non-finite value in row 5; allowed: finite numbers"),
    "npz-nan-in-X_test": BadFile("d.npz", _npz(X=GOOD_X, y=GOOD_Y, X_test=NAN_X, y_test=GOOD_Y), (),
                          r"dataset: X_test of d\.npz has a missing or non-finite value in row 5; allowed: finite "
                          r"numbers"),
    "npz-nan-in-y": BadFile("d.npz", _npz(X=GOOD_X, y=np.array([1.5, 2, np.nan, 3, 4, 5, 6, 7])), (),
                     r"target: array 'y' of d\.npz has a missing or non-finite value \(nan\) at index 2; allowed: "
                     r"finite numbers or labels"),
    "csv-missing-target": BadFile("d.csv", _text("a,y\n1,0.5\n2,\n3,1.5\n"), (),
                           r"target: column 'y' of d\.csv is empty on line 3; every row needs a label or value"),
    "csv-nan-target": BadFile("d.csv", _text("a,y\n1,0.5\n2,nan\n3,1.5\n"), (),
                       r"target: column 'y' of d\.csv has a missing or non-finite value 'nan' on line 3; allowed: "
                       r"finite numbers or labels"),
    # inconsistent shapes
    "npz-X-y-lengths": BadFile("d.npz", _npz(X=GOOD_X, y=GOOD_Y[:7]), (),
                        r"dataset: X of d\.npz has 8 rows but y has 7; allowed: one target per row"),
    "npz-X_test-without-y_test": BadFile("d.npz", _npz(X=GOOD_X, y=GOOD_Y, X_test=GOOD_X), (),
                                  r"dataset: d\.npz has X_test but no y_test; allowed: both test arrays or neither"),
    "npz-y_test-without-X_test": BadFile("d.npz", _npz(X=GOOD_X, y=GOOD_Y, y_test=GOOD_Y), (),
                                  r"dataset: d\.npz has y_test but no X_test; allowed: both test arrays or neither"),
    "npz-X_test-features": BadFile("d.npz", _npz(X=GOOD_X, y=GOOD_Y, X_test=GOOD_X[:, :2], y_test=GOOD_Y), (),
                            r"dataset: X_test of d\.npz has shape \(8, 2\) but X has \(8, 3\); allowed: X_test rows "
                            r"of X's shape \(3,\) \(N_test >= 1\)"),
    "npz-X_test-y_test-lengths": BadFile("d.npz", _npz(X=GOOD_X, y=GOOD_Y, X_test=GOOD_X, y_test=GOOD_Y[:3]), (),
                                  r"dataset: X_test of d\.npz has 8 rows but y_test has 3; allowed: one target per "
                                  r"row"),
    "npz-y-two-dimensional": BadFile("d.npz", _npz(X=GOOD_X, y=np.eye(2)[np.arange(8) % 2]), (),
                              r"dataset: y of d\.npz has shape \(8, 2\); allowed: one value per row, shape \(8,\) "
                              r"\(use y\.ravel\(\) for a column, argmax for one-hot labels\)"),
    "npz-X-one-dimensional": BadFile("d.npz", _npz(X=np.arange(8.0), y=GOOD_Y), (),
                              r"dataset: X of d\.npz has shape \(8,\); allowed: \(N, D\), \(N, H, W\) or "
                              r"\(N, H, W, C\) with N >= 1 rows"),
    # a target with one class (or one value)
    "parquet-one-class": BadFile("d.parquet", _parquet(a=[1.0, 2.0, 3.0], y=["a", "a", "a"]), (),
                          r"target: column 'y' of d\.parquet holds only one class \('a'\); allowed: at least two "
                          r"classes"),
    "npz-one-class": BadFile("d.npz", _npz(X=GOOD_X, y=np.full(8, 3)), (),
                      r"target: array 'y' of d\.npz holds only one class \('3'\); allowed: at least two classes"),
    "csv-constant-regression-target": BadFile("d.csv", _text("a,y\n1,2.5\n2,2.5\n3,2.5\n"), ("--task", "regression"),
                                       r"target: column 'y' of d\.csv holds only one value \('2\.5'\); allowed: a "
                                       r"target that varies"),
    "regression-on-string-labels": BadFile("d.parquet", _parquet(a=[1.0, 2.0, 3.0], y=["a", "b", "a"]),
                                    ("--task", "regression"),
                                    r"task: got 'regression'; allowed: classification or auto: column 'y' of "
                                    r"d\.parquet holds labels such as 'a', not numbers"),
    # not what the extension says
    "text-named-parquet": BadFile("d.parquet", _text("a,y\n1,2\n"), (),
                           r"dataset: d\.parquet is not a Parquet file \(it does not begin and end with the Parquet "
                           r"magic bytes PAR1\)"),
    "text-named-npz": BadFile("d.npz", _text("a,y\n1,2\n"), (),
                       r"dataset: d\.npz is not an NPZ file \(not a zip archive\); allowed: an archive written by "
                       r"numpy\.savez\(path, X=\.\.\., y=\.\.\.\)"),
    "npy-named-npz": BadFile("d.npz", _npy, (),
                      r"dataset: d\.npz is not an NPZ file \(a single NumPy array \(\.npy\)\); allowed: an archive "
                      r"written by numpy\.savez\(path, X=\.\.\., y=\.\.\.\)"),
    "zip-named-npz": BadFile("d.npz", _zip_of_text, (),
                      r"dataset: d\.npz is a zip archive but not an NPZ file \(it holds 'readme\.txt' besides \.npy "
                      r"arrays\)"),
    "parquet-named-npz": BadFile("d.npz", _parquet_as, (),
                          r"dataset: d\.npz is not an NPZ file \(not a zip archive\); allowed: an archive written by "
                          r"numpy\.savez\(path, X=\.\.\., y=\.\.\.\)"),
    "npz-named-parquet": BadFile("d.parquet", _npz(X=GOOD_X, y=GOOD_Y), (),
                          r"dataset: d\.parquet is not a Parquet file \(it does not begin and end with the Parquet "
                          r"magic bytes PAR1\)"),
    "parquet-named-csv": BadFile("d.csv", _parquet_as, (), r"dataset: d\.csv is not a text CSV file \(it is a Parquet file\)"),
    "binary-named-csv": BadFile("d.csv", _text(b"a,y\n\x00\x01\x02,1\n"), (),
                         r"dataset: d\.csv is not a text CSV file \(it holds NUL bytes: binary data\)"),
    # NPZ arrays
    "npz-without-X": BadFile("d.npz", _npz(data=GOOD_X, y=GOOD_Y), (),
                      r"dataset: d\.npz holds an array 'data'; allowed arrays: X, y, X_test, y_test"),
    "npz-without-y": BadFile("d.npz", _npz(X=GOOD_X), (),
                      r"dataset: d\.npz has no array 'y'; allowed: arrays X and y, optionally X_test and y_test "
                      r"\(or name the target array with --target\)"),
    "npz-object-array": BadFile("d.npz", _npz(X=GOOD_X, y=np.array([{"a": 1}] * 8, dtype=object)), (),
                         r"dataset: array 'y' of d\.npz holds Python objects; allowed: numeric or string arrays "
                         r"\(saved without pickling\)"),
    # a path that does not exist, an unknown extension
    "missing-parquet": BadFile("other.parquet", _text("unused"), (),
                        r"dataset: got 'd\.parquet'; allowed: a built-in dataset name or the path of an existing "
                        r"Parquet file"),
    "missing-npz": BadFile("other.npz", _text("unused"), (),
                    r"dataset: got 'd\.npz'; allowed: a built-in dataset name or the path of an existing NPZ file"),
    "unknown-extension": BadFile("d.xlsx", _text("a,y\n1,2\n"), (),
                          r"dataset: got 'd\.xlsx'; allowed: one of digits, iris, wine, breast_cancer, moons, "
                          r"circles, blobs, mnist1d, text, or a path ending in \.csv, \.parquet, \.npz or \.txt"),
    # features
    "unknown-feature": BadFile("d.parquet", _parquet(a=[1.0, 2.0, 3.0], b=[1, 2, 3], y=["a", "b", "a"]),
                        ("--features", "a,c"), r"features: got 'c'; allowed: columns of d\.parquet: a, b"),
    "target-as-feature": BadFile("d.csv", _text("a,y\n1,0\n2,1\n"), ("--features", "a,y"),
                          r"features: got 'y'; allowed: columns other than the target 'y'"),
    # hostile or unlucky files (issue 12): what float32 cannot hold, duplicate names, a damaged member
    "csv-feature-beyond-float32": BadFile("d.csv", _text("a,y\n1,0\n1e39,1\n2,0\n"), (),
                                   r"dataset: feature column 'a' of d\.csv holds '1e39' on line 3, beyond float32's "
                                   r"range; allowed: finite numbers that float32 holds \(\|x\| <= 3\.4e\+38\) "
                                   r"\(rescale it\)"),
    "csv-target-beyond-float32": BadFile("d.csv", _text("a,y\n1,0.5\n2,1e308\n3,1.5\n"), (),
                                  r"target: column 'y' of d\.csv holds '1e308' on line 3, beyond float32's range; "
                                  r"allowed: .*"),
    "npz-X-beyond-float32": BadFile("d.npz", _npz(X=np.where(GOOD_X == 4, 1e39, GOOD_X), y=GOOD_Y), (),
                             r"dataset: X of d\.npz holds a number in row 1, beyond float32's range; allowed: .*"),
    "parquet-beyond-float32": BadFile("d.parquet", _parquet(a=[1.0, 2.0, -1e300, 4.0], y=["a", "b", "a", "b"]), (),
                               r"dataset: feature column 'a' of d\.parquet holds -1e\+300 at row 2, beyond float32's "
                               r"range; allowed: .*"),
    "csv-duplicate-columns": BadFile("d.csv", _text("a,a,y\n1,2,0\n3,4,1\n"), (),
                              r"dataset: d\.csv has two columns named 'a'; allowed: distinct column names "
                              r"\(rename one\)"),
    "parquet-duplicate-columns": BadFile("d.parquet", lambda path: pq.write_table(
        pa.Table.from_arrays([pa.array([1.0, 2.0]), pa.array([3.0, 4.0]), pa.array(["a", "b"])], names=["a", "a", "y"]),
        path), (), r"dataset: d\.parquet has two columns named 'a'; allowed: distinct column names \(rename one\)"),
    "npz-stored-bad-crc": BadFile("d.npz", lambda path: _flip_a_data_byte(_npz(X=GOOD_X, y=GOOD_Y), path), (),
                           r"dataset: d\.npz is a damaged NPZ file \('X': Bad CRC-32 for file 'X\.npy'\)"),
    "csv-decimal-commas": BadFile("d.csv", _text("a;y\n1,5;0\n2;1\n"), (),
                           r"dataset: feature column 'a' of d\.csv has a non-numeric value '1,5' on line 2; allowed: "
                           r"numbers \(a decimal comma\? write 1\.5, not 1,5\)"),
}


def _flip_a_data_byte(write: Callable[[Path], None], path: Path) -> None:
    """Write an uncompressed NPZ, then corrupt one byte of X's data (its zip CRC-32 no longer matches)."""
    write(path)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("X.npy")
    data = bytearray(path.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size - 3] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def bad_outcomes(tmp_path_factory) -> dict[str, dict]:
    """Run `batchlab run` once per bad file, all in one Python process (one JAX start), each in its own
    directory; returns {id: {"code", "stderr", "files_before", "files_after"}}."""
    root = tmp_path_factory.mktemp("bad")
    cases = []
    for case_id, (name, write, flags, _) in BAD_FILES.items():
        cwd = root / case_id
        cwd.mkdir()
        write(cwd / name)
        dataset = name if not case_id.startswith("missing-") else "d" + Path(name).suffix
        target = () if dataset.endswith(".npz") else ("--target", "y")
        argv = ["run", "--dataset", dataset, *target, *flags, "--epochs", "1", "--no-figures"]
        cases.append((case_id, str(cwd), argv))
    script = textwrap.dedent("""
        import contextlib, io, json, os, sys
        from batchlab.cli import main
        out = {}
        for case_id, cwd, argv in json.loads(sys.argv[1]):
            os.chdir(cwd)
            before = sorted(os.listdir(cwd))
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = main(argv)
            out[case_id] = {"code": code, "stderr": err.getvalue(), "files_before": before,
                            "files_after": sorted(os.listdir(cwd))}
        print(json.dumps(out))
    """)
    p = subprocess.run([sys.executable, "-c", script, json.dumps(cases)], capture_output=True, text=True, check=False,
                       timeout=300, env={**os.environ, "BATCHLAB_NO_PIN": "1"})
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.splitlines()[-1])


@pytest.mark.parametrize("case_id", list(BAD_FILES))
def test_bad_file_is_one_line_exit_2_and_writes_nothing(bad_outcomes, case_id):
    outcome, pattern = bad_outcomes[case_id], BAD_FILES[case_id].message
    assert outcome["code"] == 2, outcome
    lines = outcome["stderr"].splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("batchlab run: error: "), lines
    message = lines[0].removeprefix("batchlab run: error: ")
    assert re.fullmatch(pattern, message), message
    assert outcome["files_after"] == outcome["files_before"]  # no study directory, no runs/


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path, monkeypatch):
    path = write_parquet(tmp_path / "d.parquet", {"a": [1.0, 2.0], "y": ["a", "b"]})
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(BatchlabError, match=r"^dataset: reading d.parquet needs pyarrow, which is not installed; "
                                            r"allowed: pip install 'batchlab\[parquet\]'"):
        load(path, target="y")


def test_a_byte_order_mark_and_semicolons_are_read_as_a_spreadsheet_writes_them(tmp_path):
    rows = "".join(f"{i % 5};{i % 3};{'ab'[i % 2]}\n" for i in range(20))
    (tmp_path / "semi.csv").write_bytes(("\ufeffa;b;label\n" + rows).encode("utf-8"))
    contents = read_data_file(str(tmp_path / "semi.csv"), "CSV", target="label", features=None)
    assert contents.feature_names == ("a", "b")  # not "\ufeffa"
    np.testing.assert_array_equal(contents.x[:3], [[0, 0], [1, 1], [2, 2]])
    assert list(contents.target[:2]) == ["a", "b"]
