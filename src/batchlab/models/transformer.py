"""A character-level causal transformer as a pure JAX (init, apply) pair, like the built-in MLP.

GPT-2's layout (Radford et al. 2019) at toy size: token embedding plus a learned position embedding, `layers`
pre-LayerNorm blocks (x + attention(LN(x)), then x + MLP(LN(x)), the MLP 4 D wide with GELU), a final LayerNorm
and an untied linear head to the vocabulary. Attention is causal (position t sees positions <= t) with `heads`
heads of D / heads each. Initialisation as GPT-2 / nanoGPT: weights N(0, 0.02^2), the two residual projections
of each block N(0, (0.02 / sqrt(2 layers))^2), biases 0, LayerNorm gain 1 and bias 0. Parameters are a dict of
dicts whose names sort in layer order (`block00`, `block01`, ..., `embed`, `head`): vmappable over replicas,
flattened and saved like every built-in.

`apply(params, x)` takes token indices as float32 (the dataset's features, (..., T)) and returns logits
(..., T, vocab): one next-token prediction per position.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from batchlab.errors import invalid
from batchlab.models.jax import Model, Params

INIT_STD = 0.02
"""GPT-2's standard deviation of the initial weights."""
LN_EPS = 1e-5
"""LayerNorm's epsilon (PyTorch's default)."""


def layer_norm(x: jax.Array, p: Params) -> jax.Array:
    """(x - mean) / sqrt(var + eps) * g + b over the last axis."""
    mean = jnp.mean(x, -1, keepdims=True)
    var = jnp.mean((x - mean) ** 2, -1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + LN_EPS) * p["g"] + p["b"]


def causal_attention(x: jax.Array, p: Params, heads: int) -> jax.Array:
    """Multi-head causal self-attention of x (B, T, D): softmax(q k^T / sqrt(d) + mask) v per head, then the
    output projection."""
    b, t, d = x.shape
    qkv = x @ p["qkv_w"] + p["qkv_b"]  # (B, T, 3D)
    q, k, v = (a.reshape(b, t, heads, d // heads).transpose(0, 2, 1, 3) for a in jnp.split(qkv, 3, -1))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d // heads)  # (B, H, T, T)
    mask = jnp.tril(jnp.ones((t, t), bool))
    weights = jax.nn.softmax(jnp.where(mask, scores, -jnp.inf), -1)
    out = (weights @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
    return out @ p["proj_w"] + p["proj_b"]


def make_transformer(*, vocab: int, context: int, layers: int = 2, width: int = 64, heads: int = 4) -> Model:
    """The causal transformer of the module docstring for `vocab` tokens and sequences of `context` tokens."""
    if width % heads:
        raise invalid("heads", heads, f"a divisor of width {width}")
    d, hidden = width, 4 * width

    def init(key: jax.Array) -> Params:
        keys = iter(jax.random.split(key, 3 + 4 * layers))
        resid_std = INIT_STD / math.sqrt(2 * layers)

        def normal(shape: tuple[int, ...], std: float = INIT_STD) -> jax.Array:
            return std * jax.random.normal(next(keys), shape, jnp.float32)

        def norm() -> Params:
            return {"g": jnp.ones(d, jnp.float32), "b": jnp.zeros(d, jnp.float32)}

        params: Params = {"embed": {"tokens": normal((vocab, d)), "positions": normal((context, d))}}
        for i in range(layers):
            params[f"block{i:02d}"] = {
                "ln1": norm(), "ln2": norm(),
                "attn": {"qkv_w": normal((d, 3 * d)), "qkv_b": jnp.zeros(3 * d, jnp.float32),
                         "proj_w": normal((d, d), resid_std), "proj_b": jnp.zeros(d, jnp.float32)},
                "mlp": {"fc_w": normal((d, hidden)), "fc_b": jnp.zeros(hidden, jnp.float32),
                        "proj_w": normal((hidden, d), resid_std), "proj_b": jnp.zeros(d, jnp.float32)}}
        params["head"] = {"ln": norm(), "w": normal((d, vocab)), "b": jnp.zeros(vocab, jnp.float32)}
        return params

    def apply(params: Params, x: jax.Array) -> jax.Array:
        lead, t = x.shape[:-1], x.shape[-1]
        tokens = x.reshape(-1, t).astype(jnp.int32)
        h = params["embed"]["tokens"][tokens] + params["embed"]["positions"][:t]
        for i in range(layers):
            block = params[f"block{i:02d}"]
            h = h + causal_attention(layer_norm(h, block["ln1"]), block["attn"], heads)
            m = block["mlp"]
            h = h + jax.nn.gelu(layer_norm(h, block["ln2"]) @ m["fc_w"] + m["fc_b"]) @ m["proj_w"] + m["proj_b"]
        logits = layer_norm(h, params["head"]["ln"]) @ params["head"]["w"] + params["head"]["b"]
        return logits.reshape(*lead, t, vocab)

    summary = f"causal transformer: {layers} layers, width {width}, {heads} heads, context {context}, vocab {vocab}"
    return Model("transformer", (), "gelu", init, apply, summary)
