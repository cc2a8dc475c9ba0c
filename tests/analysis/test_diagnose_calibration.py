"""Calibration of the call in `batchlab.analysis.diagnose` on curves that differ only by seed (issue 11: 2 of 56
pairs of real same-batch-size logs were called). Every call on such a pair is a false call: neither curve came
from a smaller batch. The curves come from real training, cheaply: numpy SGD with momentum on a logistic
regression, so that, unlike the synthetic curves of test_diagnose.py, the two curves of a pair follow different
trajectories (initialisation and example order differ) and their noise is that of minibatch losses (skewed in
log units, largest at B = 1)."""

from __future__ import annotations

import numpy as np
import pytest

from batchlab.analysis.diagnose import diagnose

CELLS = [(batch_size, steps) for batch_size in (1, 4, 16) for steps in (60, 250)]
PAIRS_PER_CELL = 100


def sgd_loss_curves(batch_size: int, seeds: range, steps: int, *, n: int = 512, d: int = 8, lr: float = 0.05,
                    momentum: float = 0.9, weight_decay: float = 0.01) -> np.ndarray:
    """Minibatch training losses, shape (len(seeds), steps): logistic regression on one fixed data set (n examples,
    d standard-normal features, labels from a random linear teacher plus N(0, 1) label noise, so the loss has a
    floor), trained by SGD with heavy-ball momentum and weight decay from weights N(0, 1). Each seed draws its own
    initial weights and its own example order (a fresh permutation every epoch, as batchlab's shuffling)."""
    data = np.random.default_rng(12345)
    x = data.normal(size=(n, d))
    y = (x @ data.normal(size=d) + data.normal(0.0, 1.0, n) > 0).astype(float)
    rngs = [np.random.default_rng(seed) for seed in seeds]
    w = np.stack([rng.normal(0.0, 1.0, d) for rng in rngs])
    velocity = np.zeros_like(w)
    epochs = -(-steps * batch_size // n)
    order = np.stack([np.concatenate([rng.permutation(n) for _ in range(epochs)]) for rng in rngs])
    losses = np.empty((len(rngs), steps))
    for t in range(steps):
        batch = order[:, t * batch_size:(t + 1) * batch_size]
        xb, yb = x[batch], y[batch]
        z = np.einsum("sbd,sd->sb", xb, w)
        losses[:, t] = np.logaddexp(0.0, (1 - 2 * yb) * z).mean(axis=1)  # cross-entropy, stable for large |z|
        gradient = np.einsum("sb,sbd->sd", 1 / (1 + np.exp(-z)) - yb, xb) / batch_size + weight_decay * w
        velocity = momentum * velocity + gradient
        w = w - lr * velocity
    return losses


def false_calls(batch_size: int, steps: int, pairs: int, *, first_seed: int) -> int:
    """Calls made on `pairs` pairs of same-batch-size curves (seeds first_seed + 2k and first_seed + 2k + 1)."""
    curves = sgd_loss_curves(batch_size, range(first_seed, first_seed + 2 * pairs), steps)
    return sum(diagnose([curves[2 * k], curves[2 * k + 1]], seed=first_seed + k).smallest_batch is not None
               for k in range(pairs))


def test_the_simulated_minibatch_noise_falls_with_the_batch_size():
    # the simulation is a fair stand-in only if it shows the effect diagnose looks for: 1/sqrt(B)-like noise
    noise = [np.median([n.residual_std_log for n in diagnose(list(sgd_loss_curves(b, range(8), 250))).noise])
             for b in (1, 4, 16)]
    assert noise[0] > 1.5 * noise[1] > 1.5 * 1.5 * noise[2]


@pytest.mark.slow
def test_false_call_rate_on_same_batch_size_pairs_stays_within_the_documented_bound():
    # batchlab.analysis.diagnose's module docstring quotes what this measures: 20 of the 600 pairs called (3.3%),
    # 11 of 100 in the worst cell (B = 1 over 60 steps), by cell {(1, 60): 11, (1, 250): 2, (4, 60): 3,
    # (4, 250): 0, (16, 60): 3, (16, 250): 1}; its "1,800 more pairs" are false_calls(*cell, 300,
    # first_seed=1_000_000 + 10_000 * i). The bounds leave a little room for other numpy versions.
    counts = {cell: false_calls(*cell, PAIRS_PER_CELL, first_seed=10_000 * i) for i, cell in enumerate(CELLS)}
    assert sum(counts.values()) <= 0.04 * len(CELLS) * PAIRS_PER_CELL, counts  # documented: about 3%
    assert max(counts.values()) <= 0.12 * PAIRS_PER_CELL, counts  # documented: up to 11% for short B = 1 curves
    # ... and the rule still calls real differences: batch size 1 against 4, 250 steps, right every time
    small, large = sgd_loss_curves(1, range(50), 250), sgd_loss_curves(4, range(50, 100), 250)
    assert [diagnose([small[k], large[k]], seed=k).smallest_batch for k in range(20)] == [0] * 20
