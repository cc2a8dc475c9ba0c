"""Datasets as plain NumPy arrays: built-in (scikit-learn's bundled sets, synthetic) or a user's CSV file.

Everything is offline. The split is stratified and seeded (or given by a CSV `split` column), and features are
standardized with training-set statistics only, so nothing about the test set leaks into training.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from batchlab.errors import BatchlabError, invalid
from batchlab.spec import StudySpec


@dataclass(frozen=True)
class Dataset:
    """A classification dataset, split and ready: float32 features, int32 labels in [0, n_classes)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...]

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, n_train={self.n_train}, n_test={len(self.y_test)}, "
                f"n_features={self.n_features}, n_classes={self.n_classes})")


def load_dataset(spec: StudySpec) -> Dataset:
    """Load, split and (optionally) standardize the dataset named by `spec`. Raises BatchlabError on bad data."""
    if spec.dataset.lower().endswith(".csv"):
        name = Path(spec.dataset).name
        x, y, class_names, feature_names, is_train = read_csv(spec.dataset, target=spec.target or "")
    else:
        name = spec.dataset
        x, y, class_names, feature_names = _builtin(spec)
        is_train = None
    if is_train is None:
        is_train = stratified_train_mask(y, test_fraction=spec.test_fraction, seed=spec.split_seed)
    x_train, x_test = x[is_train], x[~is_train]
    if spec.standardize:
        x_train, x_test = standardize(x_train, x_test)
    return Dataset(name, x_train.astype(np.float32), y[is_train].astype(np.int32), x_test.astype(np.float32),
                   y[~is_train].astype(np.int32), class_names, feature_names)


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


def stratified_train_mask(y: np.ndarray, *, test_fraction: float, seed: int) -> np.ndarray:
    """A boolean mask of training rows: a stratified split holding out `test_fraction` of each class."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 else None
    try:
        _, test_idx = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=stratify)
    except ValueError as e:
        raise invalid("test_fraction", test_fraction, f"a fraction leaving every split non-empty ({e})") from None
    mask = np.ones(len(y), dtype=bool)
    mask[test_idx] = False
    return mask


def standardize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale to zero mean and unit variance with training statistics; constant features are only centred."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (x_train - mean) / std, (x_test - mean) / std


def read_csv(path: str, *, target: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...],
                                                   np.ndarray | None]:
    """Read a CSV with a header: numeric feature columns, a class-label column `target` (integers or strings),
    and optionally a `split` column of `train`/`test`. Returns x, y, class names, feature names, train mask."""
    p = Path(path)
    if not p.is_file():
        raise invalid("dataset", path, "a built-in dataset name or the path of an existing CSV file")
    try:
        with p.open(newline="") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError:
        raise BatchlabError(f"dataset: {path} is not a text CSV file (it is not UTF-8)") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise BatchlabError(f"dataset: {path} is empty; allowed: a CSV with a header row and data rows")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if target not in header:
        raise invalid("target", target, f"a column of {p.name}: " + ", ".join(header))
    if not body:
        raise BatchlabError(f"dataset: {path} has a header but no data rows")
    for line, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise BatchlabError(f"dataset: {p.name} line {line} has {len(r)} fields, the header has {len(header)}")
    columns = {h: [r[i].strip() for r in body] for i, h in enumerate(header)}
    labels = columns.pop(target)
    is_train = _split_column(columns.pop("split"), p.name) if "split" in columns else None
    if not columns:
        raise BatchlabError(f"dataset: {p.name} has no feature columns besides '{target}'")
    x = np.column_stack([_numeric_column(name, cells, p.name) for name, cells in columns.items()])
    y, class_names = _labels(labels, target, p.name)
    if is_train is not None and (is_train.all() or not is_train.any()):
        raise BatchlabError(f"dataset: {p.name}'s split column must hold both 'train' and 'test' rows")
    return x, y, class_names, tuple(columns), is_train


def _numeric_column(name: str, cells: list[str], file: str) -> np.ndarray:
    values = np.empty(len(cells))
    for i, cell in enumerate(cells):
        try:
            values[i] = float(cell)
        except ValueError:
            raise BatchlabError(f"dataset: feature column '{name}' of {file} has a non-numeric value {cell!r} "
                                f"on line {i + 2}; allowed: numbers (drop or encode the column)") from None
        if not math.isfinite(values[i]):
            raise BatchlabError(f"dataset: feature column '{name}' of {file} has a missing or non-finite value "
                                f"{cell!r} on line {i + 2}; allowed: finite numbers")
    return values


def _labels(cells: list[str], target: str, file: str) -> tuple[np.ndarray, tuple[str, ...]]:
    if any(c == "" for c in cells):
        line = cells.index("") + 2
        raise BatchlabError(f"target: column '{target}' of {file} is empty on line {line}; every row needs a label")
    try:
        as_int = [int(c) for c in cells]
        classes = sorted(set(as_int))
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[c] for c in as_int])
        names = tuple(str(c) for c in classes)
    except ValueError:
        names = tuple(sorted(set(cells)))
        index = {c: i for i, c in enumerate(names)}
        y = np.array([index[c] for c in cells])
    if len(names) < 2:
        raise BatchlabError(f"target: column '{target}' of {file} holds only one class ({names[0]!r}); "
                            "allowed: at least two classes")
    return y, names


def _split_column(cells: list[str], file: str) -> np.ndarray:
    bad = sorted({c for c in cells if c not in ("train", "test")})
    if bad:
        raise BatchlabError(f"dataset: the split column of {file} holds {bad[0]!r}; allowed: train, test")
    return np.array([c == "train" for c in cells])
