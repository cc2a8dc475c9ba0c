"""The one door to a study's data: read (a built-in set or a data file), decide the task, encode, split, standardize.

The flow: read (a built-in set, or a CSV, Parquet or NPZ file: :mod:`batchlab.data.files`), decide the task
(classification or regression; `auto` infers it from the target and says so with a :class:`TaskInferredWarning`),
encode the target, split, standardize. Everything is offline. The split is seeded (stratified by class for
classification) unless the file gives one, and features (and, for regression, the target) are standardized with
training-set statistics only, so nothing about the test set leaks into training.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from batchlab.data.builtin import load_builtin
from batchlab.data.dataset import Dataset
from batchlab.data.files import first_nonfinite_row, read_data_file
from batchlab.data.split import as_float32_rows, standardize_inplace, stratified_train_mask
from batchlab.errors import BatchlabError, BatchlabWarning, invalid
from batchlab.spec import StudySpec, data_file_kind

AUTO_MAX_CLASSES = 20
"""`task = auto`: an integer-valued float target with more distinct values than this is read as regression."""


MIN_TRAIN_EXAMPLES = 2
"""Fewest training examples a study trains on: with one, batch size 1 and the full batch are the same run."""
MIN_TEST_EXAMPLES = 1
"""Fewest test examples: the test loss needs one."""


class TaskInferredWarning(BatchlabWarning):
    """`task = auto` decided the task from the target; the message says what and how to override it."""


def load_dataset(spec: StudySpec) -> Dataset:
    """Load, split and (optionally) standardize the dataset named by `spec`. Raises BatchlabError on bad data;
    warns TaskInferredWarning when `spec.task` is `auto` and the dataset is a file."""
    kind = data_file_kind(spec.dataset)
    if spec.dataset == "mnist1d":
        from batchlab.data.mnist1d import load_mnist1d

        return load_mnist1d(spec)
    if spec.is_text:
        from batchlab.data.text import load_text

        return load_text(spec)
    if kind is None:
        return load_builtin(spec)
    contents = read_data_file(spec.dataset, kind, target=spec.target, features=spec.features)
    task, note = decide_task(contents.target, spec.task, source=contents.target_source)
    if contents.x_test is not None and contents.target_test is not None:
        x_train, x_test = as_float32_rows(contents.x), as_float32_rows(contents.x_test)
        target_train, target_test = contents.target, contents.target_test
    else:
        is_train = contents.is_train
        if is_train is None:
            stratify = task == "classification"
            labels = np.unique(contents.target, return_inverse=True)[1] if stratify else contents.target
            is_train = stratified_train_mask(labels, test_fraction=spec.test_fraction, seed=spec.split_seed,
                                             stratify=stratify)
        x_train, x_test = as_float32_rows(contents.x, is_train), as_float32_rows(contents.x, ~is_train)
        target_train, target_test = contents.target[is_train], contents.target[~is_train]
    check_split_sizes(len(target_train), len(target_test), name=contents.name, test_fraction=spec.test_fraction,
                      given=contents.x_test is not None and contents.target_test is not None)
    if spec.standardize:
        standardize_inplace(x_train, x_test)
        for x in (x_train, x_test):
            if first_nonfinite_row(x) is not None:  # the float32 arithmetic overflowed (features near 3.4e38)
                raise BatchlabError(f"dataset: standardizing the features of {contents.name} overflows float32 "
                                    "(their spread is too large); allowed: features whose differences float32 "
                                    "holds (rescale them, or pass --no-standardize)")
    if task == "classification":
        y_train, y_test, names = encode_classes(target_train, target_test, source=contents.target_source)
        dataset = Dataset(contents.name, x_train, y_train, x_test, y_test, names, contents.feature_names,
                          image_shape=contents.image_shape)
    else:
        y_train, y_test, mean, std = standardize_target(target_train, target_test, source=contents.target_source)
        dataset = Dataset(contents.name, x_train, y_train, x_test, y_test, (), contents.feature_names,
                          task="regression", image_shape=contents.image_shape, target_mean=mean, target_std=std)
    if note:  # only once the data passed every check: a defect is one line, not a note and an error
        warnings.warn(note, TaskInferredWarning, stacklevel=2)
    return dataset


def check_split_sizes(n_train: int, n_test: int, *, name: str, test_fraction: float, given: bool = False) -> None:
    """Refuse a split too small to compare batch sizes: fewer than MIN_TRAIN_EXAMPLES training examples (batch
    size 1 and the full batch would be the same run) or fewer than MIN_TEST_EXAMPLES test examples."""
    if n_train >= MIN_TRAIN_EXAMPLES and n_test >= MIN_TEST_EXAMPLES:
        return
    how = "its X_test holds" if given else f"a test fraction of {test_fraction:g} splits it into"
    fix = "more rows" if given else "more rows, or another --test-fraction"
    raise BatchlabError(f"dataset: {name} is too small: {how} {n_train:,} training and {n_test:,} test "
                        f"example{'s' if n_test != 1 else ''}; allowed: at least {MIN_TRAIN_EXAMPLES} training and "
                        f"{MIN_TEST_EXAMPLES} test example ({fix})")


def decide_task(target: np.ndarray, requested: str, *, source: str) -> tuple[str, str | None]:
    """(task, note): the requested task, or for `auto` the inferred one with a one-line note saying why and how
    to override. Inference: regression when the target is floats that are not all integers, or integer-valued
    floats with more than AUTO_MAX_CLASSES distinct values; classification otherwise (integers, booleans,
    strings). Raises BatchlabError for regression on a non-numeric target."""
    numeric = target.dtype.kind in "iuf"
    values = np.unique(target)
    if len(values) < 2:
        allowed = "a target that varies" if requested == "regression" else "at least two classes"
        raise BatchlabError(f"target: {source} holds only one {'value' if requested == 'regression' else 'class'} "
                            f"({_class_name(values[0])!r}); allowed: {allowed}")
    if requested == "regression" and not numeric:
        raise invalid("task", requested, f"classification or auto: {source} holds labels such as "
                      f"{str(values[0])!r}, not numbers")
    if requested != "auto":
        return requested, None
    distinct = len(values)
    if target.dtype.kind == "f" and not np.all(target == np.round(target)):
        task, why = "regression", "it holds numbers that are not all integers"
    elif target.dtype.kind == "f" and distinct > AUTO_MAX_CLASSES:
        task, why = "regression", f"its {distinct:,} distinct numbers are more than {AUTO_MAX_CLASSES} classes"
    else:
        kind = {"f": "integer-valued numbers", "i": "integers", "u": "integers", "b": "booleans"}.get(
            target.dtype.kind, "labels")
        task, why = "classification", f"it holds {kind} with {distinct:,} distinct values"
    other = "classification" if task == "regression" else "regression"
    return task, (f"task: inferred {task} from {source}: {why}; to override, pass --task {other} "
                  f"(task = \"{other}\" in a study file)")


def encode_classes(train: np.ndarray, test: np.ndarray, *, source: str) -> tuple[np.ndarray, np.ndarray,
                                                                                  tuple[str, ...]]:
    """Class indices (int32, classes sorted by value) for train and test labels, and each class's name."""
    classes, index = np.unique(np.concatenate([train, test]), return_inverse=True)
    names = tuple(_class_name(c) for c in classes)
    if len(names) < 2:
        raise BatchlabError(f"target: {source} holds only one class ({names[0]!r}); allowed: at least two classes")
    index = index.astype(np.int32)
    return index[:len(train)], index[len(train):], names


def _class_name(value: Any) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def standardize_target(train: np.ndarray, test: np.ndarray, *, source: str) -> tuple[np.ndarray, np.ndarray,
                                                                                     float, float]:
    """Regression targets as float32 (target - mean) / std with training mean and std; returns them and (mean, std)."""
    train, test = np.asarray(train, np.float64), np.asarray(test, np.float64)
    mean, std = float(train.mean()), float(train.std())
    if not std > 0:
        raise BatchlabError(f"target: {source} is constant on the training rows ({mean:g}); allowed: a target that "
                            "varies (regression) or at least two classes")
    return ((train - mean) / std).astype(np.float32), ((test - mean) / std).astype(np.float32), mean, std
