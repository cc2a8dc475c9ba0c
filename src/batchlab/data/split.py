"""Splitting and scaling: the seeded train/test split and training-statistics standardization, in chunks of
ROW_CHUNK rows so that memory-mapped files are never copied whole."""

from __future__ import annotations

import numpy as np

from batchlab.data.files import ROW_CHUNK
from batchlab.errors import invalid


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
