"""Users' JAX models: what a factory (:mod:`batchlab.models.factory`) returns, made a batchlab :class:`Model`.

A JAX factory returns one of:

- an `(init, apply)` pair of pure JAX functions: `init(key) -> params` (any pytree of float arrays) and
  `apply(params, x) -> logits`, x a batch (examples, F) and the logits (examples, K). Each replica's key is
  passed to `init`; the factory needs no `key`.
- an Equinox module (`equinox.Module`), built from `key` (so the factory must take `key`). Equinox modules act
  on one example, as Equinox's own layers do: batchlab `jax.vmap`s it over the batch.
- a Flax NNX module (`flax.nnx.Module`), built from `key` (e.g. `nnx.Rngs(params=key)`), called on a batch as
  Flax's layers are.

For a module, every replica calls the factory with its own key (derived from its init seed, the same for every
batch size), so the module's initial weights are that replica's initial parameters. The parameters batchlab
trains are the module's float arrays (Equinox: `eqx.is_inexact_array` leaves; NNX: `nnx.Param` state), named
by their paths (`layers/0/weight`, `linear1/kernel`); everything else (NNX batch statistics, RNG streams) stays
as the factory first built it, so modules should be deterministic.

Everything is checked before a study writes anything: what the factory returns is one of the above, and its
logits have the shape (examples, K).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from batchlab.errors import BatchlabError
from batchlab.models.factory import accepted_arguments, call_factory, one_line
from batchlab.models.jax import Model
from batchlab.models.params import path_name

ALLOWED_RETURNS = "an (init, apply) pair of functions, an Equinox module or a Flax NNX module"


def jax_model(reference: str, factory: Callable[..., Any], first: Any, *, arguments: dict[str, Any]) -> Model:
    """The user's JAX model as a batchlab :class:`Model`, checked (see the module docstring). `first` is what the
    factory returned when :mod:`batchlab.models.registry` called it with `arguments` and key PRNGKey(0)."""
    keyed = "key" in accepted_arguments(reference, factory)

    def build(key: jax.Array) -> Any:
        return call_factory(reference, factory, {**arguments, "key": key})

    kind = module_kind(first)
    if kind is None and isinstance(first, tuple | list) and len(first) == 2 and all(map(callable, first)):
        model = Model(reference, (), "none", first[0], first[1], "user JAX (init, apply) pair")
    elif kind is None:
        raise BatchlabError(f"model: {reference} returned {describe(first)}; allowed: {ALLOWED_RETURNS}")
    elif not keyed:
        raise BatchlabError(f"model: {reference} returns a{'n Equinox' if kind == 'equinox' else ' Flax NNX'} module "
                            "but takes no `key`; allowed: function(*, key, n_features, n_classes), building the "
                            "module's initial weights from key (each replica passes its own)")
    else:
        model = (_wrap_equinox if kind == "equinox" else _wrap_nnx)(reference, first, build)
    check_model(reference, model, n_features=arguments["n_features"], n_classes=arguments["n_classes"])
    return model


def module_kind(value: Any) -> str | None:
    """`equinox` or `nnx` when `value` is such a module (a library not imported cannot have made it)."""
    if "equinox" in sys.modules and isinstance(value, sys.modules["equinox"].Module):
        return "equinox"
    if "flax.nnx" in sys.modules and isinstance(value, sys.modules["flax.nnx"].Module):
        return "nnx"
    return None


def describe(value: Any) -> str:
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {len(value)} ({', '.join(type(v).__name__ for v in value)})"
    return f"a {type(value).__module__}.{type(value).__name__}"


def _named_float_leaves(tree: Any, suffix: str = "") -> list[tuple[int, str]]:
    """(position among all leaves, name without `suffix`) of the tree's float-array leaves: the parameters."""
    return [(i, path_name(path).removesuffix(suffix))
            for i, (path, leaf) in enumerate(jax.tree_util.tree_flatten_with_path(tree)[0])
            if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jnp.inexact)]


def _split_tree(first: Any, build_tree: Callable[[jax.Array], Any], apply_tree: Callable[[Any, jax.Array], Any],
                reference: str, summary: str, suffix: str = "") -> Model:
    """A model whose params are a flat dict {path name: array} of the float leaves of a pytree (a module, or an
    NNX state); everything else in the pytree is kept from `first`. `apply_tree(tree, x)` runs the rebuilt tree."""
    leaves, treedef = jax.tree_util.tree_flatten(first)
    named = _named_float_leaves(first, suffix)
    if not named:
        raise BatchlabError(f"model: {reference} returned a module without float arrays; allowed: a module with "
                            "trainable weights")

    def init(key: jax.Array) -> dict[str, jax.Array]:
        built = jax.tree_util.tree_leaves(build_tree(key))
        return {name: built[i] for i, name in named}

    def apply(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
        full = list(leaves)
        for i, name in named:
            full[i] = params[name]
        return apply_tree(jax.tree_util.tree_unflatten(treedef, full), x)

    return Model(reference, (), "none", init, apply, summary)


def _wrap_equinox(reference: str, first: Any, build: Callable[[jax.Array], Any]) -> Model:
    return _split_tree(first, build, lambda module, x: jax.vmap(module)(x), reference,
                       f"user Equinox module {type(first).__name__}")


def _wrap_nnx(reference: str, first: Any, build: Callable[[jax.Array], Any]) -> Model:
    from flax import nnx

    graphdef, params, rest = nnx.split(first, nnx.Param, ...)  # type: ignore[misc]  # flax's overloads

    def build_params(key: jax.Array) -> Any:
        return nnx.split(build(key), nnx.Param, ...)[1]

    return _split_tree(params, build_params, lambda state, x: nnx.merge(graphdef, state, rest)(x), reference,
                       f"user Flax NNX module {type(first).__name__}", suffix="/value")  # Param's `value` field


def check_model(reference: str, model: Model, *, n_features: int, n_classes: int) -> None:
    """Trace init and apply on two examples (nothing is computed): params must be float arrays and the logits
    (2, n_classes). Raises BatchlabError with one line otherwise."""
    try:
        params = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    except Exception as e:  # noqa: BLE001 (the user's code: reported in one line, not swallowed)
        raise BatchlabError(f"model: {reference}: init(key) failed: {one_line(e)}") from None
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves or not all(getattr(leaf, "dtype", None) is not None and jnp.issubdtype(leaf.dtype, jnp.inexact)
                             for leaf in leaves):
        raise BatchlabError(f"model: {reference}: init(key) returned {len(leaves)} leaves, not all float arrays; "
                            "allowed: a pytree (e.g. a dict) of at least one float array")
    try:
        out = jax.eval_shape(model.apply, params, jax.ShapeDtypeStruct((2, n_features), jnp.float32))
    except Exception as e:  # noqa: BLE001 (the user's code: reported in one line, not swallowed)
        raise BatchlabError(f"model: {reference}: apply(params, x) on x of shape (2, {n_features}) failed: "
                            f"{one_line(e)}") from None
    if getattr(out, "shape", None) != (2, n_classes):
        raise BatchlabError(f"model: {reference}: apply(params, x) returned shape {getattr(out, 'shape', type(out))} "
                            f"for x of shape (2, {n_features}); allowed: logits of shape (2, {n_classes}) "
                            "(examples, classes)")
