"""MNIST-1D (Greydanus 2020, "Scaling down deep learning", arXiv 2011.14439), generated offline and cached.

The `mnist1d` package builds the dataset procedurally from ten 1-D digit templates (padding, shear, translation,
correlated and i.i.d. noise): :func:`mnist1d.data.make_dataset` with the paper's :func:`get_dataset_args` gives
4,000 training and 1,000 test sequences of 40 values, 10 classes, already scaled by the generator to mean 0 and
standard deviation 1 over the whole set. Nothing is downloaded: the arrays are generated once and cached as an
NPZ file keyed by the generator's arguments (:func:`cache_path`), written to a temporary file and renamed, so
concurrent first builds cannot leave a partial file. The package's own train/test split is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from batchlab.data.dataset import Dataset
from batchlab.data.split import standardize
from batchlab.spec import StudySpec

SEQUENCE_LENGTH = 40
"""The paper's `final_seq_length`: features per example, recorded as the dataset's shape (40,)."""
CACHE_ENV = "BATCHLAB_CACHE_DIR"
"""The environment variable of batchlab's cache folder (also JAX's compilation cache, see
`batchlab.train.device.enable_compilation_cache`); generated data go to its `data` subfolder."""


def cache_dir() -> Path | None:
    """Where generated datasets are cached: $BATCHLAB_CACHE_DIR/data, else ~/.cache/batchlab/data; None (no
    cache: generate every time) when BATCHLAB_CACHE_DIR is `off`."""
    root = os.environ.get(CACHE_ENV) or str(Path.home() / ".cache" / "batchlab")
    return None if root == "off" else Path(root) / "data"


def generator_args() -> dict[str, Any]:
    """The paper's default arguments of the generator (`mnist1d.data.get_dataset_args`), without its download URL
    (never used: batchlab generates)."""
    from mnist1d.data import get_dataset_args

    return {k: v for k, v in get_dataset_args(as_dict=True).items() if k != "url"}


def cache_path(args: dict[str, Any]) -> Path | None:
    """The cache file of the dataset generated with `args`: named by a digest of the arguments and the package
    version, so other arguments or a new generator never read a stale file."""
    from importlib.metadata import version

    key = json.dumps({"args": args, "mnist1d": version("mnist1d")}, sort_keys=True)
    folder = cache_dir()
    if folder is None:
        return None
    return folder / f"mnist1d-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def generate(args: dict[str, Any]) -> dict[str, np.ndarray]:
    """x, y, x_test, y_test from the package's generator. It seeds NumPy's and Python's global generators
    (`set_seed`), so their states are saved and restored around it: loading data changes no one's randomness."""
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(ObjectView(dict(args)))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}


def mnist1d_arrays() -> dict[str, np.ndarray]:
    """The paper's MNIST-1D arrays, generated on first use and read from the cache after."""
    args = generator_args()
    path = cache_path(args)
    if path is None:
        return generate(args)
    if path.is_file():
        try:
            with np.load(path) as cached:
                return {k: cached[k] for k in ("x", "y", "x_test", "y_test")}
        except (OSError, ValueError, KeyError):  # a damaged cache file is rebuilt, not trusted
            pass
    arrays = generate(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, x=arrays["x"], y=arrays["y"], x_test=arrays["x_test"], y_test=arrays["y_test"])
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file, none, or the whole new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return arrays


def load_mnist1d(spec: StudySpec) -> Dataset:
    """MNIST-1D with the package's train/test split (4,000 / 1,000), shape (40,), classes "0".."9"; features
    standardized per position with training statistics when `spec.standardize` (as for every dataset)."""
    a = mnist1d_arrays()
    x_train, x_test = a["x"].astype(np.float64), a["x_test"].astype(np.float64)
    if spec.standardize:
        x_train, x_test = standardize(x_train, x_test)
    length = x_train.shape[1]
    return Dataset("mnist1d", x_train.astype(np.float32), a["y"].astype(np.int32), x_test.astype(np.float32),
                   a["y_test"].astype(np.int32), tuple(str(c) for c in range(10)),
                   tuple(f"t{i:02d}" for i in range(length)), image_shape=(length,))
