"""The PyTorch backend: a user's `nn.Module` trained under the same controlled comparison as the JAX engine.

What matches the JAX engine (:mod:`batchlab.train.jax_engine`), so the two backends can be compared run for run:

- the data order: epoch e of order seed s is :func:`batchlab.train.order.epoch_permutation`, batches are
  consecutive chunks of it, the last partial batch is kept and its loss is the mean over its real examples;
- the optimizers, written out as optax defines them (not torch.optim): `sgd` p <- p - lr g; `momentum`
  (optax.sgd(lr, momentum=m), the same as torch.optim.SGD with dampening 0) v <- g + m v, p <- p - lr v with
  v starting at 0; `adam` (optax.adam, b1 0.9, b2 0.999, eps 1e-8 outside the square root, as torch.optim.Adam)
  m <- b1 m + (1 - b1) g, v <- b2 v + (1 - b2) g^2, p <- p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps);
  warmup ramps the rate per step as the engine does;
- the records: the shared epoch loop (:class:`batchlab.train.contract.GroupRun`) drives both backends.

How: all replicas of a group train together, `torch.func.vmap` over `torch.func.grad_and_value` of a
`torch.func.functional_call` of one module with each replica's parameters (no Python loop over replicas). The
module is in training mode for updates and evaluation mode for the full-set losses; vmap draws different
random numbers per replica (dropout). PyTorch runs eagerly (dispatch computes the epoch before it returns):
`compile_time_s` is the one-off cost of the first calls (torch.func's lazy set-up, ~1-2 s), kept out of the
training time as the JAX engine's compile time is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from batchlab.data.dataset import Dataset
from batchlab.models.tasks import torch_task_loss
from batchlab.models.torch import TorchModel, import_torch, torch_device
from batchlab.spec import ADAM_BETA1, ADAM_BETA2, ADAM_EPS, updates_per_epoch
from batchlab.train.contract import EVAL_CHUNK, Checkpoint, Group, Metrics, eval_points
from batchlab.train.order import epoch_permutation

GATHER_STEPS = 1024
"""The in-place loop gathers this many steps' minibatches at a time (one indexing op, not two per step)."""


@dataclass(frozen=True)
class Optimizer:
    """optax's sgd, momentum (trace) and adam as pure updates of stacked tensors (replica axis first), with a
    learning rate per replica. The state is a list of tensors in a fixed order (for checkpoints)."""

    name: str
    momentum: float
    adam: tuple[float, float, float] = (ADAM_BETA1, ADAM_BETA2, ADAM_EPS)
    """Adam's (beta1, beta2, eps)."""

    def init(self, params: dict[str, Any]) -> list[Any]:
        torch = import_torch()
        zeros = [torch.zeros_like(p) for p in params.values()]
        count = torch.zeros(next(iter(params.values())).shape[0], dtype=torch.int32, device=zeros[0].device)
        return {"sgd": [], "momentum": zeros, "adam": [count, *zeros, *[z.clone() for z in zeros]]}[self.name]

    def step(self, params: dict[str, Any], grads: dict[str, Any], lr: Any,
             state: list[Any]) -> tuple[dict[str, Any], list[Any]]:
        """(new parameters, new state) after one update with per-replica learning rates `lr` (replicas,)."""
        torch = import_torch()
        names = list(params)

        def per_replica(v: Any, like: Any) -> Any:
            return v.reshape(-1, *([1] * (like.dim() - 1)))

        if self.name == "sgd":
            directions = [grads[n] for n in names]
        elif self.name == "momentum":
            state = [grads[n] + self.momentum * t for n, t in zip(names, state)]
            directions = state
        else:
            k = len(names)
            count, mu, nu = state[0] + 1, state[1:1 + k], state[1 + k:]
            beta1, beta2, eps = self.adam
            mu = [(1 - beta1) * grads[n] + beta1 * m for n, m in zip(names, mu)]
            nu = [(1 - beta2) * grads[n] ** 2 + beta2 * v for n, v in zip(names, nu)]
            # Bias corrections 1 - b^t in float32, as optax computes them (torch.optim: in float64).
            b1 = 1 - torch.tensor(beta1, dtype=torch.float32, device=count.device) ** count.float()
            b2 = 1 - torch.tensor(beta2, dtype=torch.float32, device=count.device) ** count.float()
            directions = [(m / per_replica(b1, m)) / (torch.sqrt(v / per_replica(b2, v)) + eps)
                          for m, v in zip(mu, nu)]
            state = [count, *mu, *nu]
        return {n: params[n] + (-per_replica(lr, d)) * d for n, d in zip(names, directions)}, state


@dataclass
class TorchBackend:
    """:class:`batchlab.train.contract.Backend` for a PyTorch model: the state is ({name: tensor (replicas,
    ...)}, optimizer state); :meth:`params` gives {name: array (replicas, ...)}. `initial_params` in that form
    (e.g. converted from a JAX model's) replaces the factory's initial weights."""

    model: TorchModel
    data: Dataset
    group: Group
    optimizer: str
    momentum: float
    device: str = "auto"
    eval_every_steps: int | None = None
    """Also evaluate every this many updates (as the JAX engine)."""
    asynchronous: bool = False
    compile_time_s: float = 0.0
    _ops: Any = field(default=None, repr=False)

    def initial_state(self, initial_params: Any, resume: Checkpoint | None) -> Any:
        self._ops = _TorchOps(self.model, self.data, self.group, torch_device(self.device))
        ops, g = self._ops, self.group
        start = self.model.init_replicas(g.init_seeds) if initial_params is None else initial_params
        params = {k: ops.tensor(v, np.float32) for k, v in start.items()}
        opt = Optimizer(self.optimizer, self.momentum, self.group.adam)
        opt_state = opt.init(params)
        if resume is not None:
            k = len(params)
            params = {name: ops.tensor(a) for name, a in zip(params, resume.leaves[:k])}
            opt_state = [ops.tensor(a) for a in resume.leaves[k:]]
        return params, opt_state

    def prepare(self, state: Any, first_epoch: int) -> None:
        # Eager PyTorch compiles nothing, but its first torch.func call (lazy imports, ~1-2 s) and the first data
        # permutation (a JAX program) are one-off costs: measured here, on results thrown away, as compile time.
        ops, g = self._ops, self.group
        t0 = time.perf_counter()
        np.asarray(epoch_permutation(g.order_seeds[0], max(first_epoch, 1), self.data.n_train))
        if self._in_place():  # one step of the in-place loop on copies of the state
            copies = {k: v.clone() for k, v in state[0].items()}
            loss = ops.module_loss(ops.x_train[:g.batch_size], ops.y_train[:g.batch_size], ops.mask[0])
            import_torch().autograd.grad(loss, ops.bind(copies))
            ops.bind(state[0])
        else:
            ops.step_fn(state[0], ops.x_train[:g.batch_size].expand(g.n_replicas, -1, -1),
                        ops.y_train[:g.batch_size].expand(g.n_replicas, -1), ops.mask[0])
        self.compile_time_s = time.perf_counter() - t0

    def evaluate(self, state: Any) -> Metrics:
        return self._ops.metrics(state[0])

    def _in_place(self) -> bool:
        """A one-replica group under SGD or momentum, without evaluations between epoch ends, trains the module
        itself, in place (:meth:`_epoch_in_place`)."""
        return self.group.n_replicas == 1 and self.optimizer in ("sgd", "momentum") and not self.eval_every_steps

    def dispatch(self, state: Any, epoch: int) -> tuple[Any, Any]:
        """Synchronous: trains the whole epoch, then evaluates."""
        ops, g, n = self._ops, self.group, self.data.n_train
        torch = import_torch()
        steps = updates_per_epoch(n, g.batch_size)
        if self._in_place():
            return self._epoch_in_place(state, epoch)
        params, opt_state = state
        opt = Optimizer(self.optimizer, self.momentum, self.group.adam)
        perms = np.stack([np.asarray(epoch_permutation(s, epoch, n)) for s in g.order_seeds])
        index = np.concatenate([perms, np.zeros((g.n_replicas, steps * g.batch_size - n), perms.dtype)], axis=1)
        index = ops.tensor(index.reshape(g.n_replicas, steps, g.batch_size), np.int64)
        losses = torch.empty(g.n_replicas, steps, device=ops.dev)
        warmup_steps = g.warmup_epochs * steps
        due = set(eval_points(epoch, steps, self.eval_every_steps).tolist())
        between = []
        for s in range(steps):
            t = (epoch - 1) * steps + s
            lr = ops.lr_from + (ops.lr_to - ops.lr_from) * min(1.0, t / warmup_steps) if warmup_steps else ops.lr_to
            grads, losses[:, s] = ops.step_fn(params, ops.x_train[index[:, s]], ops.y_train[index[:, s]], ops.mask[s])
            params, opt_state = opt.step(params, grads, lr, opt_state)
            if t + 1 in due:
                between.append(np.stack(ops.metrics(params), axis=-1))
        step_losses = losses.detach().cpu().numpy()  # the one device-to-host transfer of the epoch's steps
        evals = np.stack(between, axis=1) if between else np.zeros((g.n_replicas, 0, 4), np.float32)
        return (params, opt_state), (step_losses, ops.metrics(params), np.array(sorted(due), np.int64), evals)

    def _epoch_in_place(self, state: Any, epoch: int) -> tuple[Any, Any]:
        """One epoch of a one-replica group as an idiomatic PyTorch loop would run it: the module's own
        parameters share storage with the state (replica axis of 1), each step is a forward pass of the module,
        `torch.autograd.grad` and `torch._foreach_*` updates in place (p <- p - lr d, d the gradient or optax's
        trace g + momentum t). The same data order, masking and rates as the vmapped path; no per-step
        `functional_call` or new parameter dicts (batch size 1 on digits: 5,700 -> 9,890 steps/s)."""
        ops, g, n = self._ops, self.group, self.data.n_train
        torch = import_torch()
        steps = updates_per_epoch(n, g.batch_size)
        params, opt_state = state
        weights = ops.bind(params)
        buffers = [t[0] for t in opt_state]  # momentum's trace (views); SGD has none
        perm = np.asarray(epoch_permutation(g.order_seeds[0], epoch, n))
        index = ops.tensor(np.concatenate([perm, np.zeros(steps * g.batch_size - n, perm.dtype)])
                           .reshape(steps, g.batch_size), np.int64)
        lr_to, lr_from = float(ops.lr_to[0]), float(ops.lr_from[0])
        warmup_steps = g.warmup_epochs * steps
        momentum = self.momentum
        losses = torch.empty(steps, device=ops.dev)
        full = steps if n % g.batch_size == 0 else steps - 1  # steps whose minibatch has no padding
        for s in range(steps):
            t = (epoch - 1) * steps + s
            lr = lr_from + (lr_to - lr_from) * min(1.0, t / warmup_steps) if warmup_steps else lr_to
            if s % GATHER_STEPS == 0:  # the minibatches of the next GATHER_STEPS steps, gathered at once
                xs, ys = ops.x_train[index[s:s + GATHER_STEPS]], ops.y_train[index[s:s + GATHER_STEPS]]
            x, y = xs[s % GATHER_STEPS], ys[s % GATHER_STEPS]
            # sum(loss * mask) / sum(mask) with a mask of ones is sum(loss) / B, bit for bit
            loss = ops.module_loss(x, y, None if s < full else ops.mask[s])
            grads = torch.autograd.grad(loss, weights)
            with torch.no_grad():
                # p + (-lr * d): two roundings, as optax's apply_updates (an add with alpha may fuse them and
                # drift from the JAX engine's numbers 25x faster: 7.7e-4 against 3e-5 after 1,437 momentum steps)
                if buffers:
                    torch._foreach_mul_(buffers, momentum)
                    torch._foreach_add_(buffers, grads)
                    torch._foreach_add_(weights, torch._foreach_mul(buffers, -lr))
                else:  # the gradients are this step's own: scaled in place
                    torch._foreach_mul_(grads, -lr)
                    torch._foreach_add_(weights, grads)
                losses[s] = loss
        step_losses = losses.cpu().numpy()[None]
        return (params, opt_state), (step_losses, ops.metrics(params), np.zeros(0, np.int64),
                                     np.zeros((1, 0, 4), np.float32))

    def fetch(self, outputs: Any) -> tuple[np.ndarray, Metrics, np.ndarray, np.ndarray]:
        return outputs

    def block(self, state: Any) -> None:
        """Nothing to wait for: eager."""

    def params(self, state: Any) -> Any:
        """Copies: a one-replica group goes on updating its tensors in place."""
        return {k: v.detach().cpu().numpy().copy() for k, v in state[0].items()}

    def leaves(self, state: Any) -> list[np.ndarray]:
        return [t.detach().cpu().numpy().copy() for t in [*state[0].values(), *state[1]]]


class _TorchOps:
    """The group's data as tensors on the device and the vmapped step and evaluation over one module."""

    def __init__(self, model: TorchModel, data: Dataset, group: Group, dev: Any):
        torch = import_torch()
        from torch.func import functional_call, grad_and_value, vmap

        self.dev, self.group = dev, group
        self.module = model.build(group.init_seeds[0]).to(dev)
        self.module.train()
        n, steps = data.n_train, updates_per_epoch(data.n_train, group.batch_size)
        self.regression = data.task == "regression"
        self.x_train, self.x_test = (self.tensor(a, np.float32) for a in (data.x_train, data.x_test))
        target = np.float32 if self.regression else np.int64
        self.y_train, self.y_test = (self.tensor(a, target) for a in (data.y_train, data.y_test))
        self.lr_to = torch.tensor(group.lrs, dtype=torch.float32, device=dev)
        self.lr_from = torch.tensor(group.warmup_from or group.lrs, dtype=torch.float32, device=dev)
        self.mask = self.tensor((np.arange(steps * group.batch_size) < n).reshape(steps, group.batch_size),
                                np.float32)
        module = self.module

        def minibatch_loss(p: Any, x: Any, y: Any, mask: Any) -> Any:
            return torch.sum(self.loss(functional_call(module, p, (x,)), y) * mask) / torch.sum(mask)

        if group.n_replicas == 1:
            self.step_fn = self._single_step(minibatch_loss)
        else:
            self.step_fn = vmap(grad_and_value(minibatch_loss), in_dims=(0, 0, 0, None), randomness="different")
        self.forward = lambda p, x: vmap(lambda q: functional_call(module, q, (x,)))(p)

    def bind(self, params: dict[str, Any]) -> list[Any]:
        """Point the module's parameters at replica 0 of `params` (shared storage) and return them in order."""
        weights = []
        for name, value in params.items():
            weight = self.module.get_parameter(name)
            weight.data = value[0]
            weights.append(weight)
        return weights

    def module_loss(self, x: Any, y: Any, mask: Any) -> Any:
        """The module's own (bound) parameters' masked mean loss on one minibatch (`mask` None: no padding)."""
        torch = import_torch()
        losses = self.loss(self.module(x), y)
        if mask is None:
            return torch.sum(losses) / len(y)
        return torch.sum(losses * mask) / torch.sum(mask)

    @staticmethod
    def _single_step(minibatch_loss: Any) -> Any:
        """The step of a one-replica group by plain reverse-mode autograd (`torch.autograd.grad`), with the
        replica axis of the parameters, data and results kept: the same (grads, losses) as the vmapped
        `grad_and_value`, up to float32 rounding, without torch.func's per-call cost (batch size 1 on digits:
        ~2x the steps per second)."""
        torch = import_torch()

        def step(p: dict[str, Any], x: Any, y: Any, mask: Any) -> tuple[dict[str, Any], Any]:
            leaves = {k: v[0].detach().requires_grad_(True) for k, v in p.items()}
            loss = minibatch_loss(leaves, x[0], y[0], mask)
            grads = torch.autograd.grad(loss, list(leaves.values()))
            return {k: g.unsqueeze(0) for k, g in zip(leaves, grads)}, loss.detach().unsqueeze(0)

        return step

    def tensor(self, a: Any, dtype: Any = None) -> Any:
        """A writable copy on the device: JAX's and memory-mapped arrays are not writable."""
        torch = import_torch()
        return torch.from_numpy(np.array(a, dtype=dtype, copy=True)).to(self.dev)

    def loss(self, outputs: Any, y: Any) -> Any:
        return torch_task_loss(outputs, y, regression=self.regression)

    def evaluate(self, p: Any, x: Any, y: Any) -> list[np.ndarray]:
        """(mean loss, metric) per replica on (x, y), EVAL_CHUNK rows at a time; the metric is accuracy, or
        R^2 = 1 - MSE / Var(y) for regression."""
        torch = import_torch()
        r = self.group.n_replicas
        self.module.eval()
        loss_sum = torch.zeros(r, dtype=torch.float64, device=self.dev)
        correct = torch.zeros(r, dtype=torch.float64, device=self.dev)
        with torch.no_grad():
            for s in range(0, len(y), EVAL_CHUNK):
                xc, yc = x[s:s + EVAL_CHUNK], y[s:s + EVAL_CHUNK]
                outputs = self.forward(p, xc)
                loss_sum += self.loss(outputs, yc.expand(r, -1)).sum(1).double()
                if not self.regression:
                    correct += (outputs.argmax(-1) == yc).sum(1).double()
        self.module.train()
        mean_loss = loss_sum / len(y)
        metric = 1 - mean_loss / torch.var(y.double(), correction=0) if self.regression else correct / len(y)
        return [mean_loss.float().cpu().numpy(), metric.float().cpu().numpy()]

    def metrics(self, p: Any) -> Metrics:
        return [*self.evaluate(p, self.x_train, self.y_train), *self.evaluate(p, self.x_test, self.y_test)]
