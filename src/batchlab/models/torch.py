"""Users' PyTorch models: a factory (:mod:`batchlab.models.factory`) that returns a `torch.nn.Module`.

The module maps a batch (examples, F) to logits (examples, K). Replica i's initial weights are whatever the
factory builds after `torch.manual_seed(init_seed)` (inside `torch.random.fork_rng`, so torch's global generator
is left as it was): they depend on the seed only, as in the JAX engine, and are recorded in
`init/<run_id>.npz` under the module's parameter names. Modules with buffers (BatchNorm's running statistics)
are refused: a buffer updated in place cannot be vmapped over replicas. Training is
:mod:`batchlab.train.torch_engine`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from batchlab.errors import BatchlabError, invalid
from batchlab.models.factory import call_factory


def import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise BatchlabError("model: a torch: model needs PyTorch, which is not installed; allowed: "
                            "pip install 'batchlab[torch]'") from None
    return torch


def torch_device(name: str) -> Any:
    """`auto` (CUDA when torch sees it), `cpu`, or `gpu` (an error if torch sees no CUDA device)."""
    torch = import_torch()
    if name == "gpu" and not torch.cuda.is_available():
        raise invalid("device", name, "auto or cpu: this PyTorch sees no CUDA device")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class TorchModel:
    """A user's PyTorch model: the factory and the sizes it is called with."""

    name: str
    """The reference (`mynet.py:make`, or with the `torch:` prefix)."""
    factory: Callable[..., Any]
    arguments: dict[str, Any]
    """What the factory is called with (those it declares of n_features, n_classes, input_shape)."""
    summary: str = ""
    layer_sizes: tuple[int, ...] = ()
    backend: ClassVar[str] = "torch"
    """Which training engine runs it (see :mod:`batchlab.models.registry`)."""

    @property
    def n_features(self) -> int:
        return int(self.arguments["n_features"])

    @property
    def n_classes(self) -> int:
        return int(self.arguments["n_classes"])

    def __repr__(self) -> str:
        return f"TorchModel({self.name!r}, {self.summary})"

    def build(self, init_seed: int) -> Any:
        """The module as the factory builds it after torch.manual_seed(init_seed); torch's RNG is restored after."""
        torch = import_torch()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            return call_factory(self.name, self.factory, self.arguments)

    def init_replicas(self, init_seeds: tuple[int, ...]) -> dict[str, np.ndarray]:
        """Initial parameters of each replica, {name: float32 array with the replica axis first}."""
        modules = [dict(self.build(s).named_parameters()) for s in init_seeds]
        return {name: np.stack([m[name].detach().cpu().numpy().astype(np.float32) for m in modules])
                for name in modules[0]}

    def footprint(self, n_features: int) -> tuple[int, int]:
        """(parameters, floats output per example by all submodules in one forward pass)."""
        torch = import_torch()
        module = self.build(0)
        floats = [0]

        def count(_module, _inputs, output):
            floats[0] += output.numel() if isinstance(output, torch.Tensor) else 0

        hooks = [m.register_forward_hook(count) for m in module.modules()]
        with torch.no_grad():
            module(torch.zeros(1, n_features))
        for h in hooks:
            h.remove()
        return sum(p.numel() for p in module.parameters()), floats[0]


def torch_model(reference: str, factory: Callable[..., Any], first: Any, *, arguments: dict[str, Any],
                device: str = "auto") -> TorchModel:
    """The user's PyTorch model, checked: `first` (what the factory returned when the registry called it) is an
    nn.Module without buffers, with float parameters, whose output on a (2, n_features) batch is
    (2, n_classes). Raises BatchlabError otherwise."""
    torch = import_torch()
    torch_device(device)
    n_features, n_classes = arguments["n_features"], arguments["n_classes"]
    module = first
    if not isinstance(module, torch.nn.Module):
        raise BatchlabError(f"model: {reference} returned a {type(module).__module__}.{type(module).__name__}; "
                            "allowed: a torch.nn.Module")
    buffers = [name for name, _ in module.named_buffers()]
    if buffers:
        raise BatchlabError(f"model: {reference} has buffers ({', '.join(buffers[:3])}); allowed: a module without "
                            "buffers (BatchNorm's running statistics cannot be trained per replica; use LayerNorm)")
    params = list(module.parameters())
    if not params or not all(p.is_floating_point() for p in params):
        raise BatchlabError(f"model: {reference} has no float parameters; allowed: a module with trainable weights")
    try:
        with torch.no_grad():
            out = module(torch.zeros(2, n_features))
    except Exception as e:  # noqa: BLE001 (the user's code: any error is theirs to fix, in one line)
        raise BatchlabError(f"model: {reference}: its forward on a batch of shape (2, {n_features}) failed: "
                            f"{type(e).__name__}: {' '.join(str(e).split())}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, n_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BatchlabError(f"model: {reference}: its forward returned {shape} for a batch of shape "
                            f"(2, {n_features}); allowed: logits of shape (2, {n_classes}) (examples, classes)")
    n_params = sum(p.numel() for p in params)
    return TorchModel(reference, factory, dict(arguments), f"PyTorch {type(module).__name__}, {n_params:,} parameters")


def mlp_params_to_torch(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """batchlab's built-in MLP parameters ({"layer00/w": (fan_in, fan_out), ...}, optionally with a leading
    replica axis) as the parameters of `nn.Sequential(Linear, activation, Linear, ...)` ({"0.weight": (out, in),
    "0.bias", "2.weight", ...}): the way to start a PyTorch twin from batchlab's initial weights."""
    layers = sorted({k.split("/")[0] for k in flat})
    out = {}
    for i, layer in enumerate(layers):
        out[f"{2 * i}.weight"] = np.swapaxes(flat[f"{layer}/w"], -1, -2)
        out[f"{2 * i}.bias"] = flat[f"{layer}/b"]
    return out
