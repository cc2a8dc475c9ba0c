"""MNIST-1D (issue 13): the package's generator with the paper's arguments, its own split, the cache (built once,
atomically, keyed by the arguments), and global random state left alone."""

from __future__ import annotations

import random

import numpy as np

from batchlab.data import mnist1d
from batchlab.data.load import load_dataset
from batchlab.spec import build_spec


def test_paper_split_shape_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(mnist1d.CACHE_ENV, str(tmp_path))
    np.random.seed(123)
    random.seed(123)
    before = (np.random.random(), random.random())
    np.random.seed(123)
    random.seed(123)
    data = load_dataset(build_spec({"dataset": "mnist1d", "standardize": False}))
    assert (np.random.random(), random.random()) == before  # the generator's set_seed was undone
    assert data.n_train == 4000 and len(data.y_test) == 1000 and data.image_shape == (40,)
    assert data.n_classes == 10 and sorted(np.unique(data.y_train)) == list(range(10))
    cached = list((tmp_path / "data").glob("mnist1d-*.npz"))
    assert len(cached) == 1 and not list((tmp_path / "data").glob("*.tmp"))
    # the package's own arrays, in its order (its generator scales the whole set to mean 0, std 1)
    from mnist1d.data import get_dataset_args, make_dataset

    reference = make_dataset(get_dataset_args())
    np.testing.assert_array_equal(data.x_train, reference["x"].astype(np.float32))
    np.testing.assert_array_equal(data.y_test, reference["y_test"])
    # a second load reads the cache (same bytes, no regeneration)
    monkeypatch.setattr(mnist1d, "generate", lambda args: (_ for _ in ()).throw(AssertionError("regenerated")))
    again = load_dataset(build_spec({"dataset": "mnist1d", "standardize": False}))
    np.testing.assert_array_equal(again.x_test, data.x_test)


def test_cache_key_follows_the_arguments(tmp_path, monkeypatch):
    monkeypatch.setenv(mnist1d.CACHE_ENV, str(tmp_path))
    args = mnist1d.generator_args()
    assert args["num_samples"] == 5000 and args["final_seq_length"] == 40 and "url" not in args
    assert mnist1d.cache_path(args) != mnist1d.cache_path({**args, "seed": 43})
    monkeypatch.setenv(mnist1d.CACHE_ENV, "off")
    assert mnist1d.cache_path(args) is None


def test_damaged_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv(mnist1d.CACHE_ENV, str(tmp_path))
    path = mnist1d.cache_path(mnist1d.generator_args())
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an npz")
    data = load_dataset(build_spec({"dataset": "mnist1d"}))
    assert data.n_train == 4000
    with np.load(path) as cached:
        assert cached["x"].shape == (4000, 40)
