"""The causal transformer (issue 13) against an independent NumPy implementation, causality, vmap over replicas,
GPT-2's initial scales, and a finite-difference gradient check."""

from __future__ import annotations

import math

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from batchlab.models.params import flatten_params
from batchlab.models.tasks import NEXT_TOKEN
from batchlab.models.transformer import make_transformer


def numpy_transformer(p: dict, tokens: np.ndarray, *, layers: int, heads: int) -> np.ndarray:
    """The same network written with explicit loops over heads and positions, float64."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}

    def ln(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * p[f"{name}/g"] + p[f"{name}/b"]

    def gelu(x):  # tanh approximation, jax.nn.gelu's default
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))

    t = len(tokens)
    h = p["embed/tokens"][tokens] + p["embed/positions"][:t]
    for i in range(layers):
        b = f"block{i:02d}"
        z = ln(h, f"{b}/ln1")
        qkv = z @ p[f"{b}/attn/qkv_w"] + p[f"{b}/attn/qkv_b"]
        d = h.shape[1]
        q, k, v = qkv[:, :d], qkv[:, d:2 * d], qkv[:, 2 * d:]
        hd = d // heads
        out = np.zeros((t, d))
        for head in range(heads):
            s = slice(head * hd, (head + 1) * hd)
            for pos in range(t):
                scores = k[:pos + 1, s] @ q[pos, s] / math.sqrt(hd)
                w = np.exp(scores - scores.max())
                out[pos, s] = (w / w.sum()) @ v[:pos + 1, s]
        h = h + out @ p[f"{b}/attn/proj_w"] + p[f"{b}/attn/proj_b"]
        z = ln(h, f"{b}/ln2")
        h = h + gelu(z @ p[f"{b}/mlp/fc_w"] + p[f"{b}/mlp/fc_b"]) @ p[f"{b}/mlp/proj_w"] + p[f"{b}/mlp/proj_b"]
    return ln(h, "head/ln") @ p["head/w"] + p["head/b"]


def test_logits_equal_a_numpy_transformer():
    model = make_transformer(vocab=11, context=7, layers=2, width=8, heads=2)
    params = model.init(jax.random.PRNGKey(0))
    flat = flatten_params(params)
    x = np.random.default_rng(1).integers(0, 11, size=(3, 7)).astype(np.float32)
    logits = np.asarray(jax.jit(model.apply)(params, x))
    assert logits.shape == (3, 7, 11)
    for row, out in zip(x, logits, strict=True):
        np.testing.assert_allclose(out, numpy_transformer(flat, row.astype(int), layers=2, heads=2),
                                   rtol=2e-4, atol=2e-5)


def test_attention_is_causal_and_shorter_sequences_work():
    model = make_transformer(vocab=5, context=6, layers=1, width=8, heads=4)
    params = model.init(jax.random.PRNGKey(2))
    x = np.array([[0, 1, 2, 3, 4, 0]], np.float32)
    y = x.copy()
    y[0, 4:] = [1, 1]  # change the future: the first four positions' logits must not move
    a, b = np.asarray(model.apply(params, x)), np.asarray(model.apply(params, y))
    np.testing.assert_array_equal(a[0, :4], b[0, :4])
    assert not np.allclose(a[0, 4], b[0, 4])
    np.testing.assert_allclose(np.asarray(model.apply(params, x[:, :3])), a[:, :3], rtol=1e-5, atol=1e-6)


def test_init_follows_gpt2_and_vmaps_over_replicas():
    model = make_transformer(vocab=50, context=16, layers=3, width=32, heads=4)
    stacked = model.init_replicas((0, 1))
    flat = flatten_params(model.init(jax.random.PRNGKey(0)))
    assert np.isclose(flat["block00/attn/qkv_w"].std(), 0.02, rtol=0.1)
    assert np.isclose(flat["block02/mlp/proj_w"].std(), 0.02 / math.sqrt(6), rtol=0.1)
    assert np.all(flat["block01/ln2/g"] == 1) and np.all(flat["head/b"] == 0)
    n_params = sum(v.size for v in flat.values())
    assert n_params == 50 * 32 + 16 * 32 + 3 * (4 * 32 + 32 * 96 + 96 + 32 * 32 + 32 + 32 * 128 + 128 + 128 * 32 + 32) \
        + 2 * 32 + 32 * 50 + 50
    x = jnp.zeros((2, 4, 16))
    out = jax.vmap(model.apply)(stacked, x)
    assert out.shape == (2, 4, 16, 50) and not np.allclose(out[0], out[1])
    # initial loss close to log(vocab): predictions start near uniform
    loss = NEXT_TOKEN.loss(out[0], jnp.zeros((4, 16), jnp.int32))
    assert np.allclose(loss, math.log(50), atol=0.3)


def test_gradient_matches_finite_differences():
    """Central differences in float64 (jax's x64 mode, only inside this test) against jax.grad."""
    model = make_transformer(vocab=7, context=5, layers=1, width=4, heads=2)
    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), model.init(jax.random.PRNGKey(4)))
        x = jnp.asarray(np.random.default_rng(0).integers(0, 7, size=(2, 5)), jnp.float64)
        y = jnp.asarray(np.random.default_rng(1).integers(0, 7, size=(2, 5)), jnp.int32)
        theta, unravel = jax.flatten_util.ravel_pytree(params)

        @jax.jit
        def loss(t):
            return jnp.mean(NEXT_TOKEN.loss(model.apply(unravel(t), x), y))

        grad = np.asarray(jax.grad(loss)(theta))
        for i in np.random.default_rng(2).choice(theta.size, 12, replace=False):
            e = np.zeros(theta.size)
            e[i] = 1e-6
            numeric = (float(loss(theta + e)) - float(loss(theta - e))) / 2e-6
            assert numeric == pytest.approx(grad[i], rel=1e-5, abs=1e-8)


def test_memory_estimate_counts_the_evaluation_in_tokens():
    from batchlab.train.device import model_replica_bytes

    model = make_transformer(vocab=100, context=64, layers=2, width=64, heads=4)
    n_params, per_sequence = model.footprint(64)
    assert n_params == 117_092  # 100 x 64 + 64 x 64 embeddings, 2 blocks of 49,984, final LN 128, head 6,500
    sizes = {"n_features": 64, "n_train": 6539, "n_test": 726, "batch_size": 32}
    by_tokens = model_replica_bytes(model, **sizes, tokens_per_example=64)
    # 16,384 tokens = 256 sequences per evaluation chunk, not 6,539 sequences at once
    assert by_tokens == 4 * (4 * n_params + 3 * 32 * per_sequence + 205 + 256 * per_sequence)
    assert model_replica_bytes(model, **sizes) > by_tokens
