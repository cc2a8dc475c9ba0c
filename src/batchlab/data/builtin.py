"""The built-in datasets: scikit-learn's bundled sets (digits, iris, wine, breast_cancer) and synthetic ones
(moons, circles, blobs), all offline, split with :func:`batchlab.data.split.stratified_train_mask`."""

from __future__ import annotations

import numpy as np

from batchlab.data.dataset import Dataset
from batchlab.data.split import standardize, stratified_train_mask
from batchlab.errors import invalid
from batchlab.spec import StudySpec

IMAGE_SHAPES = {"digits": (8, 8)}
"""Built-in datasets whose rows are flattened images."""


def load_builtin(spec: StudySpec) -> Dataset:
    x, y, class_names, feature_names = builtin_arrays(spec)
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


def builtin_arrays(spec: StudySpec) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...]]:
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
