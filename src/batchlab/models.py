"""Built-in models as pure JAX (init, apply) pairs over a plain dict of arrays.

Parameters are ``{"layer00": {"w": (fan_in, fan_out), "b": (fan_out,)}, "layer01": ...}`` so that their
flattened keys sort in layer order, which is also how they are saved (`init/<run_id>.npz`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Params = dict[str, dict[str, jax.Array]]


@dataclass(frozen=True)
class Model:
    """A model: `init(key) -> params` and `apply(params, x) -> logits`, both pure."""

    name: str
    layer_sizes: tuple[int, ...]
    activation: str
    init: Callable[[jax.Array], Params]
    apply: Callable[[Params, jax.Array], jax.Array]

    def __repr__(self) -> str:
        widths = "-".join(str(s) for s in self.layer_sizes)
        return f"Model({self.name!r}, {widths}, activation={self.activation!r})"


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {"relu": jax.nn.relu, "tanh": jnp.tanh}


def make_model(name: str, *, n_features: int, n_classes: int, hidden: tuple[int, ...] = (128,),
               activation: str = "relu") -> Model:
    """An `mlp` with the given hidden widths, or `logreg` (no hidden layer)."""
    sizes = (n_features, *hidden, n_classes) if name == "mlp" else (n_features, n_classes)
    act = ACTIVATIONS[activation]

    def init(key: jax.Array) -> Params:
        # PyTorch's nn.Linear default: weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), so results
        # are comparable with the PyTorch loops users know (and the initial loss is close to log(classes)).
        params = {}
        keys = jax.random.split(key, 2 * (len(sizes) - 1))
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            bound = 1.0 / np.sqrt(fan_in)
            w = jax.random.uniform(keys[2 * i], (fan_in, fan_out), jnp.float32, -bound, bound)
            b = jax.random.uniform(keys[2 * i + 1], (fan_out,), jnp.float32, -bound, bound)
            params[f"layer{i:02d}"] = {"w": w, "b": b}
        return params

    def apply(params: Params, x: jax.Array) -> jax.Array:
        names = sorted(params)
        for name_ in names[:-1]:
            x = act(x @ params[name_]["w"] + params[name_]["b"])
        return x @ params[names[-1]]["w"] + params[names[-1]]["b"]

    return Model(name, sizes, activation if name == "mlp" else "none", init, apply)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example cross-entropy -log softmax(logits)[label]."""
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], axis=-1)[..., 0]


def flatten_params(params: Any) -> dict[str, np.ndarray]:
    """`{"layer00/w": array, ...}`: the form saved to `.npz`, keys in layer order."""
    return {f"{layer}/{k}": np.asarray(v) for layer in sorted(params) for k, v in sorted(params[layer].items())}


def unflatten_params(flat: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Inverse of :func:`flatten_params`."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, value in flat.items():
        layer, k = key.split("/")
        out.setdefault(layer, {})[k] = value
    return out
