"""Parameters as named arrays: any pytree flattened to ``{"layer00/w": array, ...}`` (the form saved to `.npz`
and checkpoints) and back."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def path_name(path: tuple[Any, ...]) -> str:
    """A pytree path as a name: its keys, attribute names and indices joined by "/" (`layer00/w`,
    `layers/0/weight`); "params" for a lone array."""
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts) or "params"


def flatten_params(params: Any) -> dict[str, np.ndarray]:
    """`{"layer00/b": array, "layer00/w": array, ...}`: the form saved to `.npz`. Any pytree: keys are the leaves'
    paths (:func:`path_name`) in JAX's flattening order, which for the built-ins' layer dicts is layer order."""
    return {path_name(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def unflatten_params(flat: dict[str, np.ndarray], like: Any = None) -> Any:
    """Inverse of :func:`flatten_params`: into the structure of `like` (any pytree of the same paths), or without
    it into nested dicts split at "/" (the built-ins' form)."""
    if like is not None:
        names = [path_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(like)[0]]
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like), [flat[n] for n in names])
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, last = key.split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out
