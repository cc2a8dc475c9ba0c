"""The built-in models as pure JAX (init, apply) pairs: an MLP, logistic regression and a small CNN.

Built-in parameters are ``{"layer00": {"w": ..., "b": (fan_out,)}, "layer01": ...}`` so that their flattened
keys sort in layer order, which is also how they are saved (`init/<run_id>.npz`). A user's JAX model
(:mod:`batchlab.models.jax_user`) becomes the same :class:`Model`, holding any pytree of float arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from batchlab.errors import invalid

Params = Any
"""A pytree of float arrays; for the built-ins a dict of layers, each a dict {"w", "b"}."""


@dataclass(frozen=True)
class Model:
    """A model: `init(key) -> params` and `apply(params, x) -> logits`, both pure; `x` is a batch of flat rows
    (examples, features) and the logits are (examples, classes)."""

    name: str
    layer_sizes: tuple[int, ...]
    """Widths from input to output for the MLP and logistic regression; () for other models."""
    activation: str
    init: Callable[[jax.Array], Params]
    apply: Callable[[Params, jax.Array], jax.Array]
    summary: str = ""
    """What the repr says about a model without `layer_sizes` (its architecture or where it came from)."""
    backend: ClassVar[str] = "jax"
    """Which training engine runs it (see :mod:`batchlab.models.registry`)."""

    def init_replicas(self, init_seeds: tuple[int, ...]) -> Params:
        """Initial parameters of each replica, stacked on a leading axis. They depend on the seed only, so every
        batch size of a seed starts from identical parameters."""
        return jax.vmap(self.init)(replica_keys(init_seeds))

    def __repr__(self) -> str:
        if not self.layer_sizes:
            return f"Model({self.name!r}, {self.summary})"
        widths = "-".join(str(s) for s in self.layer_sizes)
        return f"Model({self.name!r}, {widths}, activation={self.activation!r})"

    def footprint(self, n_features: int) -> tuple[int, int]:
        """(parameters, floats of intermediate values per example in one forward pass), from the shapes JAX
        traces (nothing is computed): what a memory estimate needs when there are no `layer_sizes`."""
        params = jax.eval_shape(self.init, jax.random.PRNGKey(0))
        n_params = sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params))
        jaxpr = jax.make_jaxpr(self.apply)(params, jax.ShapeDtypeStruct((1, n_features), jnp.float32))
        floats = sum(math.prod(v.aval.shape) for eqn in jaxpr.eqns for v in eqn.outvars)
        return n_params, floats


INIT_TAG = 0
"""fold-in tag of the initialisation stream (the data order uses its own, see :mod:`batchlab.train.order`)."""


def replica_keys(init_seeds: tuple[int, ...]) -> jax.Array:
    """The initialisation key of each replica, stacked: a function of its init seed only."""
    return jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), INIT_TAG) for s in init_seeds])


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {"relu": jax.nn.relu, "tanh": jnp.tanh}


DIGITS_IMAGE_SHAPE = (8, 8, 1)
"""`digits` rows are 8x8 grey images, row-major: the CNN's default input shape on that dataset."""


CNN_CHANNELS = (8, 16)
"""The CNN's convolutions (3x3 kernels): 8 channels at stride 1, then 16 channels at stride 2."""


def uniform_fan_in(key: jax.Array, shape: tuple[int, ...], fan_in: int) -> jax.Array:
    """PyTorch's default for nn.Linear and nn.Conv2d weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), so
    results are comparable with the PyTorch loops users know (and the initial loss is close to log(classes))."""
    bound = 1.0 / np.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def make_model(name: str, *, n_features: int, n_classes: int, hidden: tuple[int, ...] = (128,),
               activation: str = "relu", image_shape: tuple[int, ...] | None = None) -> Model:
    """An `mlp` with the given hidden widths, `logreg` (no hidden layer), or `cnn` on images of `image_shape`
    (height, width[, channels]) whose pixels are the features, row-major."""
    if name == "cnn" and image_shape is not None and len(image_shape) == 1:
        return make_cnn1d(n_features=n_features, n_classes=n_classes, activation=activation)
    if name == "cnn":
        return make_cnn(n_features=n_features, n_classes=n_classes, image_shape=image_shape, activation=activation)
    sizes = (n_features, *hidden, n_classes) if name == "mlp" else (n_features, n_classes)
    act = ACTIVATIONS[activation]

    def init(key: jax.Array) -> Params:
        params = {}
        keys = jax.random.split(key, 2 * (len(sizes) - 1))
        for i, (fan_in, fan_out) in enumerate(pairwise(sizes)):
            params[f"layer{i:02d}"] = {"w": uniform_fan_in(keys[2 * i], (fan_in, fan_out), fan_in),
                                       "b": uniform_fan_in(keys[2 * i + 1], (fan_out,), fan_in)}
        return params

    def apply(params: Params, x: jax.Array) -> jax.Array:
        names = sorted(params)
        for name_ in names[:-1]:
            x = act(x @ params[name_]["w"] + params[name_]["b"])
        return x @ params[names[-1]]["w"] + params[names[-1]]["b"]

    return Model(name, sizes, activation if name == "mlp" else "none", init, apply)


def make_cnn(*, n_features: int, n_classes: int, image_shape: tuple[int, ...] | None,
             activation: str = "relu") -> Model:
    """A small CNN: conv 3x3 (8 channels) -> activation -> conv 3x3 stride 2 (16 channels) -> activation ->
    dense to the classes. Convolutions pad to keep the size ("SAME"), so an 8x8 image becomes 4x4x16 = 256
    features before the dense layer. Weights are (3, 3, in, out) (HWIO) and (fan_in, fan_out) for the dense layer.
    """
    if image_shape is None:
        raise invalid("image_shape", None, "height,width[,channels] of the images for model cnn, e.g. 28,28 "
                      "(this dataset has no image shape of its own)")
    h, w, c = (*image_shape, 1) if len(image_shape) == 2 else image_shape
    if h * w * c != n_features:
        raise invalid("image_shape", ",".join(map(str, image_shape)),
                      f"a shape with height x width x channels = {n_features} (the number of features)")
    act = ACTIVATIONS[activation]
    strides = (1, 2)
    channels = (c, *CNN_CHANNELS)
    out_h, out_w = h, w
    for s in strides:
        out_h, out_w = -(-out_h // s), -(-out_w // s)
    flat = out_h * out_w * channels[-1]

    def init(key: jax.Array) -> Params:
        keys = jax.random.split(key, 2 * len(channels))
        params = {}
        for i, (cin, cout) in enumerate(pairwise(channels)):
            params[f"layer{i:02d}"] = {"w": uniform_fan_in(keys[2 * i], (3, 3, cin, cout), 9 * cin),
                                       "b": uniform_fan_in(keys[2 * i + 1], (cout,), 9 * cin)}
        last = len(channels) - 1
        params[f"layer{last:02d}"] = {"w": uniform_fan_in(keys[-2], (flat, n_classes), flat),
                                      "b": uniform_fan_in(keys[-1], (n_classes,), flat)}
        return params

    def apply(params: Params, x: jax.Array) -> jax.Array:
        lead = x.shape[:-1]
        z = x.reshape(-1, h, w, c)
        for i, s in enumerate(strides):
            layer = params[f"layer{i:02d}"]
            z = jax.lax.conv_general_dilated(z, layer["w"], (s, s), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            z = act(z + layer["b"])
        dense = params[f"layer{len(strides):02d}"]
        return (z.reshape(z.shape[0], flat) @ dense["w"] + dense["b"]).reshape(*lead, n_classes)

    summary = f"{h}x{w}x{c} -> conv3x3x{channels[1]} -> conv3x3x{channels[2]}/2 -> {n_classes}, activation={activation!r}"
    return Model("cnn", (), activation, init, apply, summary)


CNN1D_LAYERS = ((5, 2, 1), (3, 2, 1), (3, 2, 1))
"""The MNIST-1D paper's CNN (Greydanus 2020, the `mnist1d` repository's ConvBase): three 1-D convolutions as
(kernel, stride, padding) with CNN1D_CHANNELS channels each, then a linear layer."""
CNN1D_CHANNELS = 25


def make_cnn1d(*, n_features: int, n_classes: int, activation: str = "relu") -> Model:
    """The MNIST-1D paper's 1-D CNN on sequences of `n_features` values (one channel): conv k5/s2/p1 -> act ->
    conv k3/s2/p1 -> act -> conv k3/s2/p1 -> act -> dense to the classes (40 values: 19, 10, 5 positions, so
    5 x 25 = 125 features into the dense layer, as the paper's `linear_in=125`). Weights (kernel, in, out)
    (WIO) and PyTorch's default initialisation, like the other built-ins."""
    act = ACTIVATIONS[activation]
    channels = (1, *(CNN1D_CHANNELS,) * len(CNN1D_LAYERS))
    length = n_features
    for kernel, stride, pad in CNN1D_LAYERS:
        length = (length + 2 * pad - kernel) // stride + 1
    if length < 1:
        raise invalid("model", "cnn", f"sequences of at least 5 values for the 1-D CNN (these have {n_features})")
    flat = length * channels[-1]

    def init(key: jax.Array) -> Params:
        keys = jax.random.split(key, 2 * len(channels))
        params = {}
        for i, ((kernel, _, _), (cin, cout)) in enumerate(zip(CNN1D_LAYERS, pairwise(channels), strict=True)):
            params[f"layer{i:02d}"] = {"w": uniform_fan_in(keys[2 * i], (kernel, cin, cout), kernel * cin),
                                       "b": uniform_fan_in(keys[2 * i + 1], (cout,), kernel * cin)}
        last = len(CNN1D_LAYERS)
        params[f"layer{last:02d}"] = {"w": uniform_fan_in(keys[-2], (flat, n_classes), flat),
                                      "b": uniform_fan_in(keys[-1], (n_classes,), flat)}
        return params

    def apply(params: Params, x: jax.Array) -> jax.Array:
        lead = x.shape[:-1]
        z = x.reshape(-1, n_features, 1)
        for i, (_, stride, pad) in enumerate(CNN1D_LAYERS):
            layer = params[f"layer{i:02d}"]
            z = jax.lax.conv_general_dilated(z, layer["w"], (stride,), [(pad, pad)],
                                             dimension_numbers=("NWC", "WIO", "NWC"))
            z = act(z + layer["b"])
        # flatten channel-major, as PyTorch's (N, C, W).view(N, -1) does, so weights map one to one
        z = jnp.swapaxes(z, 1, 2).reshape(z.shape[0], flat)
        dense = params[f"layer{len(CNN1D_LAYERS):02d}"]
        return (z @ dense["w"] + dense["b"]).reshape(*lead, n_classes)

    shape = " -> ".join(f"conv{k}/{s}x{CNN1D_CHANNELS}" for k, s, _ in CNN1D_LAYERS)
    summary = f"{n_features} -> {shape} -> {n_classes}, activation={activation!r}"
    return Model("cnn", (), activation, init, apply, summary)
