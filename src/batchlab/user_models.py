"""Users' models, named by a reference `module:function` or `path/to/file.py:function` (`torch:` before either
for PyTorch, see :mod:`batchlab.torch_backend`).

The function is the model's factory. batchlab calls it with keyword arguments only::

    function(n_features=F, n_classes=K)            # and key=... too when the function has a `key` parameter

and it returns one of:

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
as the factory first built it, so modules should be deterministic. A PyTorch factory takes no key: see
:mod:`batchlab.torch_backend`.

Everything is checked before a study writes anything: the file or module exists and imports, the function
exists, what it returns is one of the above, and its logits have the shape (examples, K).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp

from batchlab.errors import BatchlabError
from batchlab.models import Model, path_name
from batchlab.spec import split_model_reference

ALLOWED_RETURNS = "an (init, apply) pair of functions, an Equinox module or a Flax NNX module"


def resolve_factory(reference: str) -> Callable[..., Any]:
    """The function a reference names: imports `path/to/file.py` (relative to the working directory) or the
    module (the working directory is searched too), then looks the function up. Raises BatchlabError with one
    line for a missing file, a module that does not import, or a missing function."""
    _, target, function = split_model_reference(reference)
    module = _import_file(reference, target) if target.endswith(".py") or "/" in target else \
        _import_module(reference, target)
    factory = getattr(module, function, None)
    if not callable(factory):
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                        and getattr(v, "__module__", None) == module.__name__)
        raise BatchlabError(f"model: {reference}: {target} has no function {function!r}; allowed: one of its "
                            f"functions ({', '.join(public) or 'it defines none'})")
    return factory


def _import_file(reference: str, target: str) -> ModuleType:
    path = Path(target).expanduser().resolve()
    if not path.is_file():
        raise BatchlabError(f"model: {reference}: file {target} not found (from {os.getcwd()}); allowed: the path "
                            "of an existing Python file, then :function")
    # One module per file, named by its path, registered in sys.modules (dataclass-based modules such as
    # Equinox's need that) and reused, as an import would be.
    name = "batchlab_user_model_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise BatchlabError(f"model: {reference}: {target} cannot be imported; allowed: a Python (.py) file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 (the user's code: reported in one line, not swallowed)
        del sys.modules[name]
        raise BatchlabError(f"model: {reference}: importing {target} failed: {_one_line(e)}") from None
    return module


def _import_module(reference: str, target: str) -> ModuleType:
    try:
        with _working_directory_on_path():
            return importlib.import_module(target)
    except ModuleNotFoundError as e:
        if e.name is not None and target.startswith(e.name):
            raise BatchlabError(f"model: {reference}: no module named {target!r} (searched the working directory "
                                "and installed packages); allowed: an importable module or a path/to/file.py") \
                from None
        raise BatchlabError(f"model: {reference}: importing {target} failed: {_one_line(e)}") from None
    except Exception as e:  # noqa: BLE001 (the user's code: reported in one line, not swallowed)
        raise BatchlabError(f"model: {reference}: importing {target} failed: {_one_line(e)}") from None


@contextlib.contextmanager
def _working_directory_on_path() -> Iterator[None]:
    """`module:function` finds modules in the working directory, as `python -c` would, only while importing."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added:
            sys.path.remove(cwd)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def takes_key(factory: Callable[..., Any]) -> bool:
    """Whether the factory has a `key` parameter (or **kwargs)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "key" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def call_factory(reference: str, factory: Callable[..., Any], **kwargs: Any) -> Any:
    """Call the user's factory; an exception it raises becomes one line naming the call."""
    shown = ", ".join(f"{k}=..." if k == "key" else f"{k}={v}" for k, v in kwargs.items())
    try:
        return factory(**kwargs)
    except Exception as e:  # noqa: BLE001 (the user's code: reported in one line, not swallowed)
        raise BatchlabError(f"model: {reference}: calling function({shown}) raised {_one_line(e)}; see "
                            "batchlab.user_models for the signature") from None


def load_jax_model(reference: str, *, n_features: int, n_classes: int) -> Model:
    """The user's JAX model as a batchlab :class:`Model`, checked (see the module docstring)."""
    factory = resolve_factory(reference)
    keyed = takes_key(factory)
    sizes = {"n_features": n_features, "n_classes": n_classes}

    def build(key: jax.Array) -> Any:
        return call_factory(reference, factory, **sizes, key=key) if keyed else \
            call_factory(reference, factory, **sizes)

    first = build(jax.random.PRNGKey(0))
    kind = _module_kind(first)
    if kind is None and isinstance(first, tuple | list) and len(first) == 2 and all(map(callable, first)):
        model = Model(reference, (), "none", first[0], first[1], "user JAX (init, apply) pair")
    elif kind is None:
        raise BatchlabError(f"model: {reference} returned {_describe(first)}; allowed: {ALLOWED_RETURNS}")
    elif not keyed:
        raise BatchlabError(f"model: {reference} returns a{'n Equinox' if kind == 'equinox' else ' Flax NNX'} module "
                            "but takes no `key`; allowed: function(*, key, n_features, n_classes), building the "
                            "module's initial weights from key (each replica passes its own)")
    else:
        model = (_wrap_equinox if kind == "equinox" else _wrap_nnx)(reference, first, build)
    check_model(reference, model, n_features=n_features, n_classes=n_classes)
    return model


def _module_kind(value: Any) -> str | None:
    """`equinox` or `nnx` when `value` is such a module (a library not imported cannot have made it)."""
    if "equinox" in sys.modules and isinstance(value, sys.modules["equinox"].Module):
        return "equinox"
    if "flax.nnx" in sys.modules and isinstance(value, sys.modules["flax.nnx"].Module):
        return "nnx"
    return None


def _describe(value: Any) -> str:
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

    graphdef, params, rest = nnx.split(first, nnx.Param, ...)

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
        raise BatchlabError(f"model: {reference}: init(key) failed: {_one_line(e)}") from None
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves or not all(getattr(leaf, "dtype", None) is not None and jnp.issubdtype(leaf.dtype, jnp.inexact)
                             for leaf in leaves):
        raise BatchlabError(f"model: {reference}: init(key) returned {len(leaves)} leaves, not all float arrays; "
                            "allowed: a pytree (e.g. a dict) of at least one float array")
    try:
        out = jax.eval_shape(model.apply, params, jax.ShapeDtypeStruct((2, n_features), jnp.float32))
    except Exception as e:  # noqa: BLE001 (the user's code: reported in one line, not swallowed)
        raise BatchlabError(f"model: {reference}: apply(params, x) on x of shape (2, {n_features}) failed: "
                            f"{_one_line(e)}") from None
    if getattr(out, "shape", None) != (2, n_classes):
        raise BatchlabError(f"model: {reference}: apply(params, x) returned shape {getattr(out, 'shape', type(out))} "
                            f"for x of shape (2, {n_features}); allowed: logits of shape (2, {n_classes}) "
                            "(examples, classes)")
