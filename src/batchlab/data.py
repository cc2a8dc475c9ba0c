"""Datasets as plain NumPy arrays: built-in (scikit-learn's bundled sets, synthetic) or a user's data file.

The flow: read (a built-in set, or a CSV, Parquet or NPZ file: :mod:`batchlab.datafiles`), decide the task
(classification or regression; `auto` infers it from the target and says so with a :class:`TaskInferredWarning`),
encode the target, split, standardize. Everything is offline. The split is seeded (stratified by class for
classification) unless the file gives one, and features (and, for regression, the target) are standardized with
training-set statistics only, so nothing about the test set leaks into training.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from batchlab.datafiles import ROW_CHUNK, read_data_file
from batchlab.errors import BatchlabError, BatchlabWarning, invalid
from batchlab.spec import StudySpec, data_file_kind

AUTO_MAX_CLASSES = 20
"""`task = auto`: an integer-valued float target with more distinct values than this is read as regression."""
IMAGE_SHAPES = {"digits": (8, 8)}
"""Built-in datasets whose rows are flattened images."""


class TaskInferredWarning(BatchlabWarning):
    """`task = auto` decided the task from the target; the message says what and how to override it."""


@dataclass(frozen=True)
class Dataset:
    """A dataset, split and ready: float32 features; int32 labels in [0, n_classes) for classification, float32
    standardized targets (training mean 0, std 1) for regression."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    """Classification: the name of each class index; empty for regression."""
    feature_names: tuple[str, ...]
    task: str = "classification"
    """`classification` or `regression` (as decided, never `auto`)."""
    image_shape: tuple[int, ...] | None = None
    """(H, W) or (H, W, C) when each row is a flattened image (row-major), e.g. (8, 8) for digits."""
    target_mean: float | None = None
    """Regression: training mean of the target in its own units (y = (target - mean) / std)."""
    target_std: float | None = None
    """Regression: training standard deviation of the target; MSE in the target's units = loss * std^2."""

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_classes(self) -> int:
        """Number of classes (0 for regression)."""
        return len(self.class_names)

    @property
    def n_outputs(self) -> int:
        """Width of the model's output: one logit per class, or 1 for regression."""
        return 1 if self.task == "regression" else self.n_classes

    def summary(self) -> dict[str, Any]:
        """Plain, JSON-able description (stored as the study's `meta["dataset"]`)."""
        out: dict[str, Any] = {"name": self.name, "n_train": self.n_train, "n_test": len(self.y_test),
                               "n_features": self.n_features, "n_classes": self.n_classes, "task": self.task,
                               "image_shape": None if self.image_shape is None else list(self.image_shape)}
        if self.task == "regression":
            out.update(target_mean=self.target_mean, target_std=self.target_std)
        else:
            out["class_names"] = list(self.class_names)
        return out

    def __repr__(self) -> str:
        target = f"n_classes={self.n_classes}" if self.task == "classification" else "regression"
        image = f", image_shape={self.image_shape}" if self.image_shape else ""
        return (f"Dataset({self.name!r}, n_train={self.n_train}, n_test={len(self.y_test)}, "
                f"n_features={self.n_features}, {target}{image})")


def load_dataset(spec: StudySpec) -> Dataset:
    """Load, split and (optionally) standardize the dataset named by `spec`. Raises BatchlabError on bad data;
    warns TaskInferredWarning when `spec.task` is `auto` and the dataset is a file."""
    kind = data_file_kind(spec.dataset)
    if kind is None:
        return _load_builtin(spec)
    contents = read_data_file(spec.dataset, kind, target=spec.target, features=spec.features)
    task, note = decide_task(contents.target, spec.task, source=contents.target_source)
    if contents.x_test is not None:
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
    if spec.standardize:
        standardize_inplace(x_train, x_test)
    common = {"name": contents.name, "x_train": x_train, "x_test": x_test, "feature_names": contents.feature_names,
              "image_shape": contents.image_shape}
    if task == "classification":
        y_train, y_test, names = encode_classes(target_train, target_test, source=contents.target_source)
        dataset = Dataset(y_train=y_train, y_test=y_test, class_names=names, **common)
    else:
        y_train, y_test, mean, std = standardize_target(target_train, target_test, source=contents.target_source)
        dataset = Dataset(y_train=y_train, y_test=y_test, class_names=(), task="regression", target_mean=mean,
                          target_std=std, **common)
    if note:  # only once the data passed every check: a defect is one line, not a note and an error
        warnings.warn(note, TaskInferredWarning, stacklevel=2)
    return dataset


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


def _load_builtin(spec: StudySpec) -> Dataset:
    x, y, class_names, feature_names = _builtin(spec)
    image_shape = IMAGE_SHAPES.get(spec.dataset)
    if spec.features is not None:
        columns = []
        for f in spec.features:
            if f not in feature_names:
                raise invalid("features", f, f"features of {spec.dataset}: " + ", ".join(feature_names))
            columns.append(feature_names.index(f))
        x, feature_names, image_shape = x[:, columns], tuple(spec.features), None
    is_train = stratified_train_mask(y, test_fraction=spec.test_fraction, seed=spec.split_seed)
    x_train, x_test = x[is_train], x[~is_train]  # small: scaled in float64, then stored as float32
    if spec.standardize:
        x_train, x_test = standardize(x_train, x_test)
    return Dataset(spec.dataset, x_train.astype(np.float32), y[is_train].astype(np.int32), x_test.astype(np.float32),
                   y[~is_train].astype(np.int32), class_names, feature_names, image_shape=image_shape)


def _builtin(spec: StudySpec) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    from sklearn import datasets

    if spec.dataset in ("moons", "circles", "blobs"):
        n, rng = spec.n_samples, spec.data_seed
        if spec.dataset == "moons":
            x, y = datasets.make_moons(n_samples=n, noise=spec.noise, random_state=rng)
        elif spec.dataset == "circles":
            x, y = datasets.make_circles(n_samples=n, noise=spec.noise, factor=0.5, random_state=rng)
        else:
            x, y = datasets.make_blobs(n_samples=n, centers=3, cluster_std=5 * spec.noise, random_state=rng)
        classes = tuple(str(c) for c in np.unique(y))
        return x, y, classes, tuple(f"x{i}" for i in range(x.shape[1]))
    bunch = getattr(datasets, f"load_{spec.dataset}")()
    features = tuple(str(f) for f in getattr(bunch, "feature_names", range(bunch.data.shape[1])))
    return bunch.data, bunch.target, tuple(str(c) for c in bunch.target_names), features


def stratified_train_mask(y: np.ndarray, *, test_fraction: float, seed: int, stratify: bool = True) -> np.ndarray:
    """A boolean mask of training rows holding out `test_fraction` of the rows: of each class (y holds class
    indices) when `stratify`, else of all rows at random (regression)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    strata = None
    if stratify:
        counts = np.bincount(y)
        strata = y if counts[counts > 0].min() >= 2 else None
    try:
        _, test_idx = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=strata)
    except ValueError as e:
        raise invalid("test_fraction", test_fraction, f"a fraction leaving every split non-empty ({e})") from None
    mask = np.ones(len(y), dtype=bool)
    mask[test_idx] = False
    return mask


def as_float32_rows(x: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """x[rows] (all rows when None) as a new float32 array, gathered ROW_CHUNK rows at a time, so a memory-mapped
    or integer-typed x is never copied whole in its own dtype."""
    index = np.arange(len(x)) if rows is None else np.flatnonzero(rows) if rows.dtype == bool else rows
    out = np.empty((len(index), x.shape[1]), np.float32)
    for start in range(0, len(index), ROW_CHUNK):
        chunk = index[start:start + ROW_CHUNK]
        out[start:start + len(chunk)] = x[chunk[0]:chunk[-1] + 1] if _consecutive(chunk) else x[chunk]
    return out


def _consecutive(index: np.ndarray) -> bool:
    return len(index) > 0 and index[-1] - index[0] == len(index) - 1


def feature_scale(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation (1/n) of x, in float64, merged over ROW_CHUNK-row chunks (Chan et
    al.'s parallel update) so no float64 copy of x is made; a constant column gets std 1 (it is only centred)."""
    n, mean, m2 = 0, np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for start in range(0, len(x), ROW_CHUNK):
        chunk = np.asarray(x[start:start + ROW_CHUNK], np.float64)
        k, chunk_mean = len(chunk), chunk.mean(axis=0)
        chunk_m2 = ((chunk - chunk_mean) ** 2).sum(axis=0)
        delta = chunk_mean - mean
        mean = mean + delta * k / (n + k)
        m2 = m2 + chunk_m2 + delta ** 2 * n * k / (n + k)
        n += k
    std = np.sqrt(m2 / max(n, 1))
    return mean, np.where(std > 0, std, 1.0)


def standardize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale to zero mean and unit variance with training statistics; constant features are only centred."""
    mean, std = feature_scale(x_train)
    return (x_train - mean) / std, (x_test - mean) / std


def standardize_inplace(x_train: np.ndarray, x_test: np.ndarray) -> None:
    """:func:`standardize` in place, for float arrays this module made (no temporary copies)."""
    mean, std = feature_scale(x_train)
    for x in (x_train, x_test):
        x -= mean.astype(x.dtype)
        x /= std.astype(x.dtype)

