"""A user's model factory: found from a reference, called with what it asks for.

A reference is `module:NAME` or `path/to/file.py:NAME` (optionally `torch:` first), NAME being a function or a
class. batchlab inspects its signature and passes, by keyword, only the arguments it declares among::

    n_features    the number of input features F (columns of a batch (examples, F))
    n_classes     the number of outputs K (classes; 1 for regression)
    input_shape   the shape of one example: the dataset's image shape (H, W[, C]) when it has one, else (F,)
    key           a JAX PRNG key, different per replica (for JAX modules built from a key)

so `def make(): return Net()`, `def make(n_features, n_classes)`, `class Net(nn.Module): def __init__(self)`
and `def make(*, key, n_features, n_classes)` all work. A factory with `**kwargs` receives all four. A required
parameter outside this list is an error naming it. What the factory returns decides the backend
(:mod:`batchlab.models.registry`).
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

from batchlab.errors import BatchlabError
from batchlab.spec import split_model_reference

FACTORY_ARGUMENTS = ("n_features", "n_classes", "input_shape", "key")
"""The keyword arguments batchlab can pass to a factory, each only if the factory declares it."""


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
        raise BatchlabError(f"model: {reference}: {target} has no function or class {function!r}; allowed: one of "
                            f"its functions or classes ({', '.join(public) or 'it defines none'})")
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
    except (Exception, SystemExit) as e:  # noqa: BLE001 (the user's code, exit() too: one line)
        del sys.modules[name]
        raise BatchlabError(f"model: {reference}: importing {target} failed: {one_line(e)}") from None
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
        raise BatchlabError(f"model: {reference}: importing {target} failed: {one_line(e)}") from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 (the user's code, exit() too: one line)
        raise BatchlabError(f"model: {reference}: importing {target} failed: {one_line(e)}") from None


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


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def accepted_arguments(reference: str, factory: Callable[..., Any]) -> tuple[str, ...]:
    """The names in FACTORY_ARGUMENTS that `factory` declares (all of them for `**kwargs`), in that order.

    Raises BatchlabError when it requires a parameter batchlab cannot pass (neither in FACTORY_ARGUMENTS nor
    given a default), so the mistake is named before anything runs."""
    try:
        parameters = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: call it without arguments
        return ()
    kinds = inspect.Parameter
    for p in parameters:
        passable = p.name in FACTORY_ARGUMENTS and p.kind is not kinds.POSITIONAL_ONLY
        if not passable and p.default is kinds.empty and p.kind not in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD):
            raise BatchlabError(f"model: {reference}: its parameter {p.name!r} has no default and batchlab cannot "
                                f"pass it; allowed: parameters among {', '.join(FACTORY_ARGUMENTS)} (passed by "
                                "keyword), or others with defaults")
    if any(p.kind is kinds.VAR_KEYWORD for p in parameters):
        return FACTORY_ARGUMENTS
    declared = {p.name for p in parameters}
    return tuple(name for name in FACTORY_ARGUMENTS if name in declared)


def call_factory(reference: str, factory: Callable[..., Any], arguments: dict[str, Any]) -> Any:
    """Call the user's factory with the `arguments` it declares (see :func:`accepted_arguments`); an exception it
    raises becomes one line naming the call."""
    kwargs = {name: arguments[name] for name in accepted_arguments(reference, factory)}
    shown = ", ".join(f"{k}=..." if k == "key" else f"{k}={v}" for k, v in kwargs.items())
    try:
        return factory(**kwargs)
    except (Exception, SystemExit) as e:  # noqa: BLE001 (the user's code, exit() too: one line)
        raise BatchlabError(f"model: {reference}: calling {getattr(factory, '__name__', 'it')}({shown}) raised "
                            f"{one_line(e)}; see batchlab.models.factory for what a factory receives") from None
