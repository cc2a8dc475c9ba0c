"""Datasets: offline, stratified, standardized with training statistics only; bad CSVs are clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from batchlab.data.load import load_dataset
from batchlab.data.split import standardize, stratified_train_mask
from batchlab.errors import BatchlabError
from batchlab.spec import BUILTIN_DATASETS, StudySpec


@pytest.mark.parametrize("name", [n for n in BUILTIN_DATASETS if n != "text"])  # text: tests/data/test_text.py
def test_every_builtin_dataset_loads_offline_and_is_split(name):
    d = load_dataset(StudySpec(dataset=name, n_samples=200))
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32
    assert d.n_classes >= 2 and set(np.unique(d.y_train)) == set(range(d.n_classes))
    total = d.n_train + len(d.y_test)
    assert abs(len(d.y_test) - 0.2 * total) <= d.n_classes
    np.testing.assert_allclose(d.x_train.mean(axis=0), 0, atol=1e-4)


def test_digits_default_split_sizes():
    d = load_dataset(StudySpec(dataset="digits"))
    assert (d.n_train, len(d.y_test), d.n_features, d.n_classes) == (1437, 360, 64, 10)


def test_split_is_stratified_and_seeded():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    mask = stratified_train_mask(y, test_fraction=0.2, seed=0)
    assert list(np.bincount(y[~mask])) == [10, 6, 4]
    assert np.array_equal(mask, stratified_train_mask(y, test_fraction=0.2, seed=0))
    assert not np.array_equal(mask, stratified_train_mask(y, test_fraction=0.2, seed=1))


def test_standardize_uses_training_statistics_only():
    train = np.array([[1.0, 5.0], [3.0, 5.0]])
    test = np.array([[5.0, 7.0]])
    a, b = standardize(train, test)
    np.testing.assert_allclose(a, [[-1, 0], [1, 0]])
    np.testing.assert_allclose(b, [[3, 2]])  # constant column: centred, not divided by zero


def test_no_standardize_keeps_raw_features():
    d = load_dataset(StudySpec(dataset="iris", standardize=False))
    assert d.x_train.max() > 5


def write(tmp_path, text, name="d.csv"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_csv_with_string_labels_and_a_split_column(tmp_path):
    rows = ["a,b,label,split"] + [f"{i},{i % 3},{'cat' if i % 2 else 'dog'},{'test' if i % 5 == 0 else 'train'}"
                                  for i in range(20)]
    d = load_dataset(StudySpec(dataset=write(tmp_path, "\n".join(rows)), target="label", task="classification"))
    assert d.class_names == ("cat", "dog") and d.feature_names == ("a", "b")
    assert (d.n_train, len(d.y_test)) == (16, 4)


def test_csv_with_integer_labels_gets_a_stratified_split(tmp_path):
    rows = ["x,y"] + [f"{i / 10},{i % 2 * 7}" for i in range(30)]
    d = load_dataset(StudySpec(dataset=write(tmp_path, "\n".join(rows)), target="y", standardize=False,
                               task="classification"))
    assert d.class_names == ("0", "7") and (d.n_train, len(d.y_test)) == (24, 6)


@pytest.mark.parametrize("text,target,pattern", [
    ("", "y", r"^dataset: .* is empty"),
    ("x,y\n", "y", r"^dataset: .* has a header but no data rows"),
    ("x,y\n1,0\n2,1\n", "label", r"^target: got 'label'; allowed: a column of d.csv: x, y"),
    ("x,y\n1,0\nnan,1\n", "y", r"^dataset: feature column 'x' of d.csv has a missing or non-finite value 'nan' on line 3"),
    ("x,y\n1,0\n,1\n", "y", r"^dataset: feature column 'x' of d.csv has a missing value \(an empty cell\) on line 3"),
    ("x,y\n1,0\n2,1\n", "y", r"^dataset: d.csv is too small: .* 1 training and 1 test example; allowed: at least 2"),
    ("x,y\n1,0\nabc,1\n", "y", r"^dataset: feature column 'x' of d.csv has a non-numeric value 'abc' on line 3"),
    ("x,y\n1,0\n2,0\n", "y", r"^target: column 'y' of d.csv holds only one class"),
    ("x,y\n1,0\n2,\n", "y", r"^target: column 'y' of d.csv is empty on line 3"),
    ("x,y\n1,0\n2\n", "y", r"^dataset: d.csv line 3 has 1 fields, the header has 2"),
    ("y\n0\n1\n", "y", r"^dataset: d.csv has no feature columns"),
    ("x,y,split\n1,0,train\n2,1,validation\n", "y", r"^dataset: the split column of d.csv holds 'validation'"),
])
def test_bad_csv_files_are_one_line_errors(tmp_path, text, target, pattern):
    with pytest.raises(BatchlabError, match=pattern) as e:
        load_dataset(StudySpec(dataset=write(tmp_path, text), target=target))
    assert "\n" not in str(e.value)


def test_missing_csv_path_and_binary_file(tmp_path):
    with pytest.raises(BatchlabError, match=r"^dataset: got '.*nope.csv'; allowed: a built-in dataset name"):
        load_dataset(StudySpec(dataset=str(tmp_path / "nope.csv"), target="y"))
    p = tmp_path / "bin.csv"
    p.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(BatchlabError, match="is not a text CSV file"):
        load_dataset(StudySpec(dataset=str(p), target="y"))
