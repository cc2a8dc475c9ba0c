"""The one door through which a study gets its model, and the one place that decides which backend trains it.

- A built-in name (`mlp`, `logreg`, `cnn`) is a JAX model of :mod:`batchlab.models.jax`; `transformer` (text
  only) is the causal transformer of :mod:`batchlab.models.transformer`.
- A reference `module:NAME` or `path/to/file.py:NAME` names a user's factory (:mod:`batchlab.models.factory`):
  it is imported and called once, and what it returns decides: a `torch.nn.Module` is trained by the PyTorch
  backend (:mod:`batchlab.models.torch`), anything else must be a JAX model (:mod:`batchlab.models.jax_user`).
  The `torch:` prefix is still accepted and insists on PyTorch.

Every model has a `backend` (`jax` or `torch`) that the rest of batchlab reads instead of parsing the reference.
A reference is imported, called and checked here, so a missing file, module or function, or a wrong return
value, raises BatchlabError before a study writes anything.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TypeAlias

from batchlab.models.jax import DIGITS_IMAGE_SHAPE, Model, make_model
from batchlab.spec import BUILTIN_MODELS, StudySpec, split_model_reference

if TYPE_CHECKING:
    from batchlab.data.dataset import Dataset
    from batchlab.models.torch import TorchModel

AnyModel: TypeAlias = "Model | TorchModel"
"""A model of either backend; `model.backend` says which."""


def load_model(spec: StudySpec, data: Dataset) -> AnyModel:
    """The model `spec` names, sized for `data`: its features, its outputs (classes, or 1 for regression) and, for
    the CNN, its image shape unless `spec.image_shape` is given."""
    if spec.model == "transformer":
        from batchlab.models.transformer import make_transformer

        return make_transformer(vocab=data.n_classes, context=data.n_features, layers=spec.layers, width=spec.width,
                                heads=spec.heads)
    if spec.model in BUILTIN_MODELS:
        image_shape = spec.image_shape or data.image_shape or (DIGITS_IMAGE_SHAPE if spec.dataset == "digits" else None)
        return make_model(spec.model, n_features=data.n_features, n_classes=data.n_outputs, hidden=spec.hidden,
                          activation=spec.activation, image_shape=image_shape)
    model = load_user_model(spec.model, n_features=data.n_features, n_classes=data.n_outputs,
                            input_shape=tuple(data.image_shape or (data.n_features,)), device=spec.device)
    if data.task == "next_token" and model.backend != "jax":
        from batchlab.errors import invalid

        raise invalid("model", spec.model, "transformer or a JAX model for text (the PyTorch backend trains "
                      "one target per example)")
    return model


def load_user_model(reference: str, *, n_features: int, n_classes: int, input_shape: tuple[int, ...] | None = None,
                    device: str = "auto") -> AnyModel:
    """A user's model from its reference (see the module docstring), checked."""
    import jax

    from batchlab.models.factory import accepted_arguments, call_factory, resolve_factory

    explicit_torch, _, _ = split_model_reference(reference)
    factory = resolve_factory(reference)
    arguments: dict[str, Any] = {"n_features": n_features, "n_classes": n_classes,
                                 "input_shape": input_shape or (n_features,)}
    key = {"key": jax.random.PRNGKey(0)} if "key" in accepted_arguments(reference, factory) else {}
    first = call_factory(reference, factory, {**arguments, **key})
    if explicit_torch or _is_torch_module(first):
        from batchlab.models.torch import torch_model

        return torch_model(reference, factory, first, arguments=arguments, device=device)
    from batchlab.models.jax_user import jax_model

    return jax_model(reference, factory, first, arguments=arguments)


def _is_torch_module(value: Any) -> bool:
    """Whether `value` is a torch.nn.Module (torch not imported means the factory cannot have made one)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.nn.Module)
