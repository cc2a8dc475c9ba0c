"""Probes of a PyTorch model at fixed parameters of one replica, with `torch.func`: the gradient interface
:mod:`batchlab.train.measure` uses (:class:`TorchProbes`), with the quantities, estimators and seeds of the JAX
probes (:mod:`batchlab.train.probes.jax`).

- per-example gradients by `vmap(grad)`, streamed CHUNK examples at a time, keeping their sum and the sum of
  their squared norms, so the exact noise scale equals the JAX measurement of the same network to float32
  rounding; microbatch gradients of the same microbatches;
- Hessian-vector products as the gradient of g . v (reverse over reverse; torch.func's forward mode, as JAX's
  jvp would be, imports TorchScript, which warns that it is deprecated), parameters flattened in the module's own
  order, so Hutchinson's random vectors meet the parameters in another order than for a JAX twin: an equally
  valid estimate, not the same one. Epsilon-sharpness is not measured for PyTorch models.

The module is in evaluation mode (no dropout) while it is measured.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from batchlab.models.tasks import torch_task_loss
from batchlab.models.torch import TorchModel, import_torch, torch_device


class TorchProbes:
    """The gradient interface of :mod:`batchlab.train.measure` for a PyTorch model (see the module docstring);
    stacked parameters are {name: array (replicas, ...)} as :class:`batchlab.train.torch_engine.TorchBackend`
    gives them."""

    epsilon_sharpness = None
    """Not measured for PyTorch models."""

    def __init__(self, model: TorchModel, *, regression: bool, device: str = "auto"):
        torch = import_torch()
        from torch.func import functional_call

        self.torch, self.dev, self.regression = torch, torch_device(device), regression
        self.module = model.build(0).to(self.dev).eval()
        self.names = [name for name, _ in self.module.named_parameters()]
        self.shapes = [tuple(p.shape) for _, p in self.module.named_parameters()]

        def loss(theta: Any, x: Any, y: Any) -> Any:
            """Mean loss at the flat parameter vector theta."""
            params, start = {}, 0
            for name, shape in zip(self.names, self.shapes):
                size = math.prod(shape)
                params[name] = theta[start:start + size].reshape(shape)
                start += size
            return torch_task_loss(functional_call(self.module, params, (x,)), y, regression=regression).mean()

        self.loss = loss

    def _tensor(self, a: Any, dtype: Any) -> Any:
        return self.torch.from_numpy(np.array(a, dtype=dtype, copy=True)).to(self.dev)

    def replica(self, stacked: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
        return {k: v[i] for k, v in stacked.items()}

    def flat_params(self, params: dict[str, np.ndarray]) -> Any:
        return self._tensor(np.concatenate([np.ravel(params[name]) for name in self.names]), np.float32)

    def data(self, x: np.ndarray, y: np.ndarray) -> tuple[Any, Any]:
        return self._tensor(x, np.float32), self._tensor(y, np.float32 if self.regression else np.int64)

    def per_example_sums(self, theta: Any, x: np.ndarray, y: np.ndarray, *, chunk: int) -> tuple[float, np.ndarray]:
        """(sum_i |g_i|^2, sum_i g_i) over the rows of (x, y), `chunk` examples at a time."""
        from torch.func import grad, vmap

        per_example = vmap(grad(lambda t, xi, yi: self.loss(t, xi[None], yi[None])), in_dims=(None, 0, 0))
        xt, yt = self.data(x, y)
        total_sq, total = 0.0, np.zeros(theta.numel(), np.float64)
        with self.torch.no_grad():
            for start in range(0, len(x), chunk):
                g = per_example(theta, xt[start:start + chunk], yt[start:start + chunk])
                total_sq += float((g ** 2).sum())
                total += g.sum(0).cpu().numpy().astype(np.float64)
        return total_sq, total

    def microbatch_gradients(self, theta: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(k, P) mean-loss gradients of the k microbatches x (k, b, F), y (k, b)."""
        from torch.func import grad, vmap

        xt, yt = self.data(x, y)
        return vmap(grad(self.loss), in_dims=(None, 0, 0))(theta, xt, yt).detach().cpu().numpy()

    def _hvp(self, theta: Any, v: Any, x: Any, y: Any) -> Any:
        from torch.func import grad

        return grad(lambda t: self.torch.dot(grad(self.loss)(t, x, y), v))(theta)

    def hvp(self, theta: Any, v: np.ndarray, x: Any, y: Any) -> np.ndarray:
        """H v at theta on (x, y) (from :meth:`data`)."""
        return self._hvp(theta, self._tensor(v, np.float32), x, y).detach().cpu().numpy()

    def quadratic_forms(self, theta: Any, vs: np.ndarray, x: Any, y: Any) -> np.ndarray:
        """v^T H v for each row v of vs."""
        vt = self._tensor(vs, np.float32)
        return np.array([float(v @ self._hvp(theta, v, x, y)) for v in vt])
