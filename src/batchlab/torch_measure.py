"""Measurements of a PyTorch group at fixed parameters: the quantities, estimators and seeds of
:mod:`batchlab.measure` and :mod:`batchlab.probes`, computed with `torch.func`.

- Gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018): `exact` streams per-example
  gradients (`vmap(grad)`, CHUNK examples at a time, keeping their sum and the sum of their squared norms), so it
  equals the JAX measurement of the same network to float32 rounding; `estimate` uses the same microbatches
  (`numpy.random.default_rng(seed)`) and :func:`batchlab.analysis.gns.b_simple_two_batch`.
- Curvature at the end, on the same subsample: the top Hessian eigenvalue by power iteration on Hessian-vector
  products (the gradient of g . v), and Hutchinson's trace estimate, with start and probe vectors drawn by JAX from the
  same seeds as :mod:`batchlab.probes` (parameters flattened in the module's own order, so the trace's random
  vectors meet the parameters in another order than for a JAX twin: an equally valid estimate, not the same one).
  Epsilon-sharpness is not measured for PyTorch models.

The module is in evaluation mode (no dropout) while it is measured.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from batchlab.data import Dataset
from batchlab.measure import CHUNK, CURVATURE_EXAMPLES, MICROBATCH_SIZE, MICROBATCHES, GroupMeasurements
from batchlab.torch_backend import TorchModel, import_torch, task_loss, torch_device


class TorchMeasurements(GroupMeasurements):
    """:class:`batchlab.measure.GroupMeasurements` for a PyTorch model: `gns` and `end_of_training` take the
    stacked parameters {name: (replicas, ...)} of a :class:`batchlab.torch_backend.TorchGroupRun`."""

    def __init__(self, model: TorchModel, data: Dataset, *, gns: str, seed: int = 0, device: str = "auto"):
        super().__init__(model, data, gns=gns, seed=seed)  # type: ignore[arg-type]
        torch = import_torch()
        from torch.func import functional_call

        self.torch, self.dev = torch, torch_device(device)
        self.module = model.build(0).to(self.dev).eval()
        self.names = [name for name, _ in self.module.named_parameters()]
        self.shapes = [tuple(p.shape) for _, p in self.module.named_parameters()]
        self.regression = getattr(data, "task", "classification") == "regression"

        def loss(theta: Any, x: Any, y: Any) -> Any:
            """Mean loss at the flat parameter vector theta."""
            params, start = {}, 0
            for name, shape in zip(self.names, self.shapes):
                size = math.prod(shape)
                params[name] = theta[start:start + size].reshape(shape)
                start += size
            return task_loss(functional_call(self.module, params, (x,)), y, regression=self.regression).mean()

        self.loss = loss

    def _tensor(self, a: Any, dtype: Any) -> Any:
        return self.torch.from_numpy(np.array(a, dtype=dtype, copy=True)).to(self.dev)

    def _data(self, x: np.ndarray, y: np.ndarray) -> tuple[Any, Any]:
        return self._tensor(x, np.float32), self._tensor(y, np.float32 if self.regression else np.int64)

    def _theta(self, params: dict[str, np.ndarray]) -> Any:
        return self._tensor(np.concatenate([np.ravel(params[name]) for name in self.names]), np.float32)

    def _per_example_sums(self, params: Any) -> tuple[float, np.ndarray]:
        """(sum_i |g_i|^2, sum_i g_i) over the training set, CHUNK examples at a time."""
        from torch.func import grad, vmap

        theta = self._theta(params)
        per_example = vmap(grad(lambda t, xi, yi: self.loss(t, xi[None], yi[None])), in_dims=(None, 0, 0))
        x, y = self._data(self.data.x_train, self.data.y_train)
        total_sq, total = 0.0, np.zeros(theta.numel(), np.float64)
        with self.torch.no_grad():
            for start in range(0, self.data.n_train, CHUNK):
                g = per_example(theta, x[start:start + CHUNK], y[start:start + CHUNK])
                total_sq += float((g ** 2).sum())
                total += g.sum(0).cpu().numpy().astype(np.float64)
        return total_sq, total

    def _estimate(self, params: Any) -> tuple[float, ...]:
        from torch.func import grad, vmap

        from batchlab.analysis.gns import b_simple_two_batch

        n = self.data.n_train
        b = MICROBATCH_SIZE if n >= 2 * MICROBATCH_SIZE else 1
        k = min(MICROBATCHES, n // b)
        index = np.random.default_rng(self.seed).permutation(n)[:k * b].reshape(k, b)  # as probes.microbatch_gradients
        x, y = self._data(self.data.x_train[index], self.data.y_train[index])
        grads = vmap(grad(self.loss), in_dims=(None, 0, 0))(self._theta(params), x, y).detach().cpu().numpy()
        est = b_simple_two_batch(grads, b, n_train=n)
        return est.b_simple, est.b_simple_low, est.b_simple_high, est.grad_sq_norm, est.trace_sigma

    def end_of_training(self, stacked_params: Any, active: np.ndarray, *, eps_sharpness: bool) -> list[dict]:
        """Per replica: top Hessian eigenvalue and Hessian trace (with its standard error) on the subsample
        :meth:`batchlab.measure.GroupMeasurements.end_of_training` uses; {} for diverged replicas."""
        n = self.data.n_train
        rows = np.random.default_rng(self.seed).permutation(n)[:CURVATURE_EXAMPLES] if n > CURVATURE_EXAMPLES \
            else np.arange(n)
        x, y = self._data(self.data.x_train[rows], self.data.y_train[rows])
        out = []
        for i, alive in enumerate(active):
            if not alive:
                out.append({})
                continue
            theta = self._theta({k: v[i] for k, v in stacked_params.items()})
            top = self.top_hessian_eigenvalue(theta, x, y, iters=50)
            trace, stderr = self.hessian_trace(theta, x, y, samples=30)
            out.append({"top_eigenvalue": top, "hessian_trace": trace, "hessian_trace_stderr": stderr,
                        "curvature_examples": float(len(rows))})
        return out

    def _hvp(self, theta: Any, v: Any, x: Any, y: Any) -> Any:
        """H v as the gradient of g(theta) . v (reverse over reverse; torch.func's forward mode, as JAX's jvp
        would be, imports TorchScript, which warns that it is deprecated)."""
        from torch.func import grad

        return grad(lambda t: self.torch.dot(grad(self.loss)(t, x, y), v))(theta)

    def top_hessian_eigenvalue(self, theta: Any, x: Any, y: Any, *, iters: int, tol: float = 1e-4) -> float:
        """Power iteration as :func:`batchlab.probes.top_hessian_eigenvalue`: v <- H v / |H v| from the same
        standard normal start (JAX, `seed`), Rayleigh quotient, stop when it changes by <= tol |lambda|."""
        v = self._tensor(jax.random.normal(jax.random.PRNGKey(self.seed), (theta.numel(),)), np.float32)
        v = v / v.norm()
        eigenvalue = float("nan")
        for _ in range(iters):
            hv = self._hvp(theta, v, x, y)
            new, norm = float(v @ hv), float(hv.norm())
            if norm == 0.0:
                return 0.0
            v = hv / norm
            if abs(new - eigenvalue) <= tol * abs(new):
                return new
            eigenvalue = new
        return eigenvalue

    def hessian_trace(self, theta: Any, x: Any, y: Any, *, samples: int) -> tuple[float, float]:
        """Hutchinson's tr(H) = E[v^T H v] over Rademacher v (JAX, `seed`), as :func:`batchlab.probes.hessian_trace`:
        (mean, sample std / sqrt(samples))."""
        vs = self._tensor(jax.random.rademacher(jax.random.PRNGKey(self.seed), (samples, theta.numel())), np.float32)
        q = np.array([float(v @ self._hvp(theta, v, x, y)) for v in vs])
        return float(q.mean()), float(q.std(ddof=1) / np.sqrt(samples))
