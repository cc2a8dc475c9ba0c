"""The engine against independent computations: hand-derived gradients and a NumPy re-implementation."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from batchlab.data.dataset import Dataset
from batchlab.models.jax import make_model
from batchlab.spec import updates_per_epoch
from batchlab.train.backends import group_run
from batchlab.train.contract import Group
from batchlab.train.device import chunk_replicas, replica_bytes
from batchlab.train.order import epoch_permutation

CPU = jax.devices("cpu")[0]


def tiny_dataset(n: int = 5, n_features: int = 3, n_classes: int = 3, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + 4, n_features)).astype(np.float32)
    y = (np.arange(n + 4) % n_classes).astype(np.int32)
    return Dataset("tiny", x[:n], y[:n], x[n:], y[n:], tuple(map(str, range(n_classes))),
                   tuple(f"f{i}" for i in range(n_features)))


def train(model, data, *, batch_size, lrs, epochs, optimizer="sgd", seeds=None):
    seeds = seeds or tuple(range(len(lrs)))
    run = group_run(model, data, Group(batch_size, tuple(lrs), seeds, seeds), epochs, optimizer=optimizer, momentum=0.9, device="cpu")
    records = []
    run.train(records.append)
    return run, records


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def logreg_grad(w, b, x, y, n_classes):
    """Hand-derived gradient of the mean cross-entropy of softmax(x w + b): x^T (p - onehot) / n."""
    p = softmax(x @ w + b)
    delta = (p - np.eye(n_classes)[y]) / len(y)
    return x.T @ delta, delta.sum(axis=0)


def logreg_loss(w, b, x, y):
    p = softmax(x.astype(np.float64) @ w + b)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def test_one_sgd_step_equals_hand_computed_gradient_step():
    data = tiny_dataset()
    model = make_model("logreg", n_features=3, n_classes=3)
    run, _ = train(model, data, batch_size=data.n_train, lrs=(0.5,), epochs=1)
    p0 = jax.tree_util.tree_map(lambda a: np.asarray(a[0], np.float64), model.init_replicas((0,)))
    w0, b0 = p0["layer00"]["w"], p0["layer00"]["b"]
    gw, gb = logreg_grad(w0, b0, data.x_train.astype(np.float64), data.y_train, 3)
    final = run.final_params["layer00"]
    np.testing.assert_allclose(np.asarray(final["w"][0]), w0 - 0.5 * gw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(final["b"][0]), b0 - 0.5 * gb, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5])
def test_minibatch_sgd_matches_numpy_including_the_partial_last_batch(batch_size):
    """N = 5: B = 2 and 3 leave a partial last batch whose loss must be the mean over its real examples."""
    data = tiny_dataset()
    model = make_model("logreg", n_features=3, n_classes=3)
    epochs, lr = 3, 0.3
    run, records = train(model, data, batch_size=batch_size, lrs=(lr,), epochs=epochs)
    p0 = model.init_replicas((0,))
    w, b = (np.asarray(p0["layer00"][k][0], np.float64) for k in ("w", "b"))
    x = data.x_train.astype(np.float64)
    for epoch in range(1, epochs + 1):
        perm = np.asarray(epoch_permutation(0, epoch, data.n_train))
        losses = []
        for start in range(0, data.n_train, batch_size):
            idx = perm[start:start + batch_size]
            losses.append(logreg_loss(w, b, x[idx], data.y_train[idx]))
            gw, gb = logreg_grad(w, b, x[idx], data.y_train[idx], 3)
            w, b = w - lr * gw, b - lr * gb
        np.testing.assert_allclose(records[epoch].step_losses[0], losses, rtol=1e-5)
        np.testing.assert_allclose(records[epoch].train_loss[0], logreg_loss(w, b, x, data.y_train), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(run.final_params["layer00"]["w"][0]), w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("n,batch_size", [(120, 7), (120, 8), (120, 1), (120, 120), (121, 120)])
def test_update_and_example_counts_are_exact(n, batch_size):
    data = tiny_dataset(n=n)
    model = make_model("logreg", n_features=3, n_classes=3)
    _, records = train(model, data, batch_size=batch_size, lrs=(0.01,), epochs=3)
    steps = math.ceil(n / batch_size)
    assert updates_per_epoch(n, batch_size) == steps
    assert [r.updates for r in records] == [0, steps, 2 * steps, 3 * steps]
    assert [r.examples_seen for r in records] == [0, n, 2 * n, 3 * n]
    assert [r.step_losses.shape for r in records] == [(1, 0)] + [(1, steps)] * 3


def test_the_shuffling_depends_on_seed_and_epoch_but_not_on_the_batch_size():
    a = np.asarray(epoch_permutation(3, 1, 50))
    assert sorted(a) == list(range(50))
    assert np.array_equal(a, np.asarray(epoch_permutation(3, 1, 50)))
    assert not np.array_equal(a, np.asarray(epoch_permutation(3, 2, 50)))
    assert not np.array_equal(a, np.asarray(epoch_permutation(4, 1, 50)))


def test_replicas_are_independent_and_a_diverging_one_does_not_touch_its_neighbour():
    data = tiny_dataset(n=40)
    model = make_model("mlp", n_features=3, n_classes=3, hidden=(8,))
    # Same program shape (two replicas), once beside a healthy neighbour and once beside a diverging one.
    _, alone = train(model, data, batch_size=4, lrs=(0.05, 0.01), epochs=4, seeds=(0, 1))
    _, both = train(model, data, batch_size=4, lrs=(0.05, 1e6), epochs=4, seeds=(0, 0))
    _, single = train(model, data, batch_size=4, lrs=(0.05,), epochs=4, seeds=(0,))
    diverged_at = [r.epoch for r in both if r.diverged[1]]
    assert diverged_at == [1]
    assert not any(r.diverged[0] for r in both)
    assert len(both) == 5  # the healthy replica trains every epoch
    for a, b in zip(alone[1:], both[1:]):
        np.testing.assert_array_equal(a.step_losses[0], b.step_losses[0])
        np.testing.assert_array_equal(a.test_loss[0], b.test_loss[0])
    # A one-replica program may fuse differently: equal to float32 rounding, not necessarily bitwise.
    np.testing.assert_allclose(single[-1].step_losses[0], both[-1].step_losses[0], rtol=1e-6)


def test_all_replicas_diverged_stops_the_group_early():
    data = tiny_dataset(n=40)
    model = make_model("mlp", n_features=3, n_classes=3, hidden=(8,))
    _, records = train(model, data, batch_size=1, lrs=(1e6,), epochs=50)
    assert records[-1].diverged[0] and len(records) < 51


def test_stop_request_ends_at_an_epoch_boundary():
    data = tiny_dataset(n=40)
    model = make_model("logreg", n_features=3, n_classes=3)
    records = []
    run = group_run(model, data, Group(4, (0.1,), (0,), (0,)), 10, optimizer="sgd", momentum=0.9, device="cpu")
    finished = run.train(records.append, should_stop=lambda: len(records) == 4)
    # Asked while epoch 4 was in flight: epoch 4 finishes and is recorded, nothing after it.
    assert not finished and [r.epoch for r in records] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_other_optimizers_match_optax_applied_step_by_step(optimizer):
    import jax.numpy as jnp
    import optax

    data = tiny_dataset(n=6)
    model = make_model("logreg", n_features=3, n_classes=3)
    run, _ = train(model, data, batch_size=6, lrs=(0.1,), epochs=3, optimizer=optimizer)
    params = jax.tree_util.tree_map(lambda a: a[0], model.init_replicas((0,)))
    opt = optax.sgd(0.1, momentum=0.9) if optimizer == "momentum" else optax.adam(0.1)
    state = opt.init(params)

    def loss(p):
        logits = model.apply(p, jnp.asarray(data.x_train))
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(6), data.y_train])

    for _ in range(3):
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(np.asarray(run.final_params["layer00"]["w"][0]), np.asarray(params["layer00"]["w"]),
                               rtol=1e-5, atol=1e-6)


def test_replica_bytes_counts_parameters_steps_and_activations():
    # logreg 3 -> 2: 8 parameters; B = 2 on N = 5: 3 steps; activations 3 * 2 * (3 + 2); evaluation 2 * 5 * 3.
    assert replica_bytes((3, 2), n_train=5, n_test=4, batch_size=2) == 4 * (4 * 8 + 30 + 3 + 30)


@pytest.mark.parametrize("n,per,budget,sizes", [
    (10, 100, 10_000, [10]),
    (10, 100, 300, [3, 3, 3, 1]),
    (10, 100, 500, [5, 5]),
    (7, 100, 50, [1] * 7),  # never fewer than one replica per chunk
])
def test_chunk_replicas_splits_into_as_few_chunks_as_fit(n, per, budget, sizes):
    chunks = chunk_replicas(n, per, budget)
    assert [len(c) for c in chunks] == sizes
    assert [i for c in chunks for i in c] == list(range(n))


def test_resuming_from_a_checkpoint_continues_bit_identically():
    data = tiny_dataset(n=30)
    model = make_model("mlp", n_features=3, n_classes=3, hidden=(8,))
    group = Group(4, (0.05, 0.2), (0, 1), (0, 1))
    full = []
    group_run(model, data, group, 6, optimizer="momentum", momentum=0.9, device="cpu").train(full.append, checkpoints=True)
    resumed = []
    run = group_run(model, data, group, 6, optimizer="momentum", momentum=0.9, device="cpu")
    assert run.train(resumed.append, resume=full[3].checkpoint)
    assert [r.epoch for r in resumed] == [4, 5, 6]
    for a, b in zip(full[4:], resumed):
        np.testing.assert_array_equal(a.step_losses, b.step_losses)
        np.testing.assert_array_equal(a.test_loss, b.test_loss)
        assert b.wall_time_s > full[3].wall_time_s


def test_warmup_ramps_the_learning_rate_linearly_per_step():
    """SGD on logreg, full batch (one step per epoch), warmup over 2 epochs from 0.1 to 0.5: steps use
    lr 0.1, 0.3, then 0.5 (t / warmup_steps = 0, 1/2, 1)."""
    data = tiny_dataset(n=6)
    model = make_model("logreg", n_features=3, n_classes=3)
    run = group_run(model, data, Group(6, (0.5,), (0,), (0,), warmup_from=(0.1,), warmup_epochs=2), 4, optimizer="sgd", momentum=0.9, device="cpu")
    run.train(lambda r: None)
    p0 = model.init_replicas((0,))
    w, b = (np.asarray(p0["layer00"][k][0], np.float64) for k in ("w", "b"))
    for lr in (0.1, 0.3, 0.5, 0.5):
        gw, gb = logreg_grad(w, b, data.x_train.astype(np.float64), data.y_train, 3)
        w, b = w - lr * gw, b - lr * gb
    np.testing.assert_allclose(np.asarray(run.final_params["layer00"]["w"][0]), w, rtol=1e-5, atol=1e-6)


def test_chunked_evaluation_equals_the_direct_mean(monkeypatch):
    from batchlab.train import jax_engine as engine

    data = tiny_dataset(n=50)
    model = make_model("mlp", n_features=3, n_classes=3, hidden=(8,))
    params = jax.tree_util.tree_map(lambda a: a[0], model.init_replicas((0,)))
    x, y = jax.numpy.asarray(data.x_train), jax.numpy.asarray(data.y_train)
    direct = engine.evaluate(model, params, x, y)
    monkeypatch.setattr(engine, "EVAL_CHUNK", 16)  # 50 rows: 4 chunks, the last one padded
    chunked = engine.evaluate(model, params, x, y)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(direct), rtol=1e-6)


def test_probes_run_at_epoch_0_every_k_epochs_and_the_last_at_the_epochs_parameters():
    data = tiny_dataset(n=20)
    model = make_model("logreg", n_features=3, n_classes=3)
    seen = []

    def probe(params, active):
        seen.append(np.asarray(params["layer00"]["w"]).copy())
        return float(np.asarray(params["layer00"]["b"]).sum())

    run = group_run(model, data, Group(5, (0.1,), (0,), (0,)), 7, optimizer="sgd", momentum=0.9, device="cpu", probe=probe, probe_every=3)
    records = []
    run.train(records.append)
    assert [r.epoch for r in records if r.probe is not None] == [0, 3, 6, 7]
    np.testing.assert_array_equal(seen[-1], np.asarray(run.final_params["layer00"]["w"]))
    plain = []
    group_run(model, data, Group(5, (0.1,), (0,), (0,)), 7, optimizer="sgd", momentum=0.9, device="cpu").train(plain.append)
    for a, b in zip(records, plain):  # probing does not change training
        np.testing.assert_array_equal(a.step_losses, b.step_losses)


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("batch_size,every", [(2, 3), (1, 4), (5, 2)])
def test_evaluations_between_epoch_ends_equal_a_numpy_reference(backend, batch_size, every):
    """Issue 11: `eval_every_steps` evaluates the full train and test sets after every `every` updates (counted over
    the run), inside the compiled epoch; checked against NumPy SGD in the engine's data order. The epoch's last
    update is left to the epoch's own evaluation; training itself is unchanged by the evaluations."""
    data = tiny_dataset(n=9)
    model = make_model("logreg", n_features=3, n_classes=3)
    if backend == "torch":
        pytest.importorskip("torch")
        from batchlab.models.registry import load_user_model
        from batchlab.models.torch import mlp_params_to_torch
        from tests.paths import REPO

        torch_model = load_user_model(f"{REPO}/tests/fixtures/torch_mlp.py:linear", n_features=3, n_classes=3)
    epochs, lr = 3, 0.3
    group = Group(batch_size, (lr,), (0,), (0,))
    runner = torch_model if backend == "torch" else model
    run = group_run(runner, data, group, epochs, optimizer="sgd", device="cpu", eval_every_steps=every)
    plain = group_run(runner, data, group, epochs, optimizer="sgd", device="cpu")
    records, plain_records = [], []
    p0 = model.init_replicas((0,))
    initial = None
    if backend == "torch":
        from batchlab.models.params import flatten_params

        initial = {k.replace("0.", ""): v for k, v in mlp_params_to_torch(flatten_params(p0)).items()}
    run.train(records.append, initial_params=initial)
    plain.train(plain_records.append, initial_params=initial)
    w, b = (np.asarray(p0["layer00"][k][0], np.float64) for k in ("w", "b"))
    x, xt = data.x_train.astype(np.float64), data.x_test.astype(np.float64)
    steps, t, expected = math.ceil(9 / batch_size), 0, {}
    for epoch in range(1, epochs + 1):
        perm = np.asarray(epoch_permutation(0, epoch, data.n_train))
        for start in range(0, data.n_train, batch_size):
            idx = perm[start:start + batch_size]
            gw, gb = logreg_grad(w, b, x[idx], data.y_train[idx], 3)
            w, b = w - lr * gw, b - lr * gb
            t += 1
            if t % every == 0 and t % steps != 0:
                expected[t] = (logreg_loss(w, b, x, data.y_train), logreg_loss(w, b, xt, data.y_test))
    got_steps = np.concatenate([r.eval_steps for r in records])
    assert got_steps.tolist() == sorted(expected)
    got = np.concatenate([r.eval_metrics[0] for r in records])
    np.testing.assert_allclose(got[:, 0], [expected[s][0] for s in sorted(expected)], rtol=2e-5)
    np.testing.assert_allclose(got[:, 2], [expected[s][1] for s in sorted(expected)], rtol=2e-5)
    for a, c in zip(records, plain_records):  # evaluating in between does not change training
        np.testing.assert_allclose(a.step_losses, c.step_losses, rtol=1e-6)
        np.testing.assert_allclose(a.train_loss, c.train_loss, rtol=1e-6)
        assert c.eval_steps.size == 0
