"""The non-JAX contenders: two PyTorch loops and scikit-learn's MLPClassifier, all at batch size 1."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import numpy as np

from batchlab.data.dataset import Dataset
from bench.jax_runs import LR as DEFAULT_LR
from bench.results import Result

WARM_UP_STEPS = 100


def torch_threads() -> int | None:
    """PyTorch's intra-op thread count (left at its default), or None when torch cannot be imported."""
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()


def _torch_setup(data: Dataset):
    """Tensors, the model nn.Sequential(Linear, ReLU, Linear), plain SGD and the loss, seeded."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train).long()
    model = nn.Sequential(nn.Linear(data.n_features, 128), nn.ReLU(), nn.Linear(128, data.n_classes))
    return x, y, model, torch.optim.SGD(model.parameters(), lr=DEFAULT_LR), nn.CrossEntropyLoss()


def _step(model, opt, loss_fn, xb, yb) -> float:
    """One idiomatic update: zero_grad, forward, backward, step; returns the loss as a Python float."""
    opt.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    opt.step()
    return loss.item()


def _torch_loop(data: Dataset, epochs: int, batches: Callable) -> tuple[float, float]:
    """Warm up, then time `epochs` passes over `batches(x, y)`; returns (seconds, mean loss of the last pass)."""
    x, y, model, opt, loss_fn = _torch_setup(data)
    for i in range(WARM_UP_STEPS):
        _step(model, opt, loss_fn, x[i:i + 1], y[i:i + 1])
    t0 = time.perf_counter()
    for _ in range(epochs):
        losses = [_step(model, opt, loss_fn, xb, yb) for xb, yb in batches(x, y)]
    return time.perf_counter() - t0, float(np.mean(losses))


def torch_dataloader(data: Dataset, *, epochs: int) -> Result:
    """The idiomatic loop: TensorDataset + DataLoader(batch_size=1, shuffle=True)."""
    from torch.utils.data import DataLoader, TensorDataset

    seconds, loss = _torch_loop(data, epochs, lambda x, y: DataLoader(TensorDataset(x, y), batch_size=1,
                                                                       shuffle=True))
    steps = epochs * data.n_train
    return Result("PyTorch DataLoader loop", 1, steps, steps, seconds, final_loss=loss)


def torch_manual(data: Dataset, *, epochs: int) -> Result:
    """PyTorch with the data already in tensors: a shuffled index loop slicing x[i:i+1], no DataLoader."""
    import torch

    seconds, loss = _torch_loop(data, epochs, lambda x, y: ((x[i:i + 1], y[i:i + 1])
                                                            for i in torch.randperm(len(x)).tolist()))
    steps = epochs * data.n_train
    return Result("PyTorch pre-loaded tensors, index loop", 1, steps, steps, seconds, final_loss=loss)


def sklearn_mlp(data: Dataset, *, iters: int) -> Result:
    """MLPClassifier with plain SGD at batch size 1 (no momentum, no L2 penalty) for exactly `iters` epochs."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(128,), solver="sgd", batch_size=1, learning_rate_init=DEFAULT_LR,
                        momentum=0.0, alpha=0.0, max_iter=iters, tol=0.0, n_iter_no_change=10**9, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        clf.fit(data.x_train, data.y_train)
        seconds = time.perf_counter() - t0
    steps = clf.n_iter_ * data.n_train
    return Result("scikit-learn MLPClassifier (sgd)", 1, steps, steps, seconds, final_loss=float(clf.loss_))


def torch_backend(data: Dataset, *, epochs: int) -> Result:
    """batchlab's PyTorch backend (a user's nn.Module, here the same MLP as an nn.Sequential) at batch size 1,
    through the shared epoch loop, with per-epoch train and test evaluation: steps over its training time."""
    from batchlab.models.registry import load_model
    from batchlab.spec import StudySpec
    from batchlab.train.backends import group_run
    from batchlab.train.contract import EpochRecord, Group

    model = load_model(StudySpec(dataset="digits", model="torch:tests/fixtures/torch_mlp.py:mlp"), data)
    last: dict[str, EpochRecord] = {}
    run = group_run(model, data, Group(1, (DEFAULT_LR,), (0,), (0,)), epochs, optimizer="sgd", momentum=0.0,
                    device="cpu")
    run.train(lambda r: last.update(rec=r))
    rec = last["rec"]
    return Result("batchlab PyTorch backend", 1, rec.updates, rec.examples_seen, rec.wall_time_s,
                  final_loss=float(rec.step_losses.mean()), compile_s=run.compile_time_s)
