"""Adam's coefficients in force (Group.adam, from the scaling rules) reach both engines' updates: the JAX engine
equals optax.adam(b1, b2, eps) applied step by step; the PyTorch optimizer equals torch.optim.Adam(betas, eps)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from batchlab.models.jax import make_model
from batchlab.spec import build_spec
from batchlab.train.backends import group_run
from batchlab.train.contract import Group
from tests.train.test_jax_engine import tiny_dataset

B1, B2, EPS = 0.6, 0.95, 1e-4


def test_jax_engine_uses_the_groups_betas():
    data = tiny_dataset(n=6)
    model = make_model("logreg", n_features=3, n_classes=3)
    records: list = []
    run = group_run(model, data, Group(6, (0.1,), (0,), (0,), adam=(B1, B2, EPS)), 3, optimizer="adam",
                    device="cpu")
    run.train(records.append)
    params = jax.tree_util.tree_map(lambda a: a[0], model.init_replicas((0,)))

    def loss(p):
        logits = model.apply(p, jnp.asarray(data.x_train))
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(6), data.y_train])

    def final_w(opt):
        p, state = params, opt.init(params)
        for _ in range(3):
            updates, state = opt.update(jax.grad(loss)(p), state, p)
            p = optax.apply_updates(p, updates)
        return np.asarray(p["layer00"]["w"])

    ours = np.asarray(run.final_params["layer00"]["w"][0])
    np.testing.assert_allclose(ours, final_w(optax.adam(0.1, b1=B1, b2=B2, eps=EPS)), rtol=1e-5, atol=1e-6)
    assert not np.allclose(ours, final_w(optax.adam(0.1)), rtol=1e-3)  # the betas made a difference


def test_torch_optimizer_uses_the_betas():
    torch = pytest.importorskip("torch")
    from batchlab.train.torch_engine import Optimizer

    rng = np.random.default_rng(1)
    start = rng.normal(size=(2, 3)).astype(np.float32)
    ours = Optimizer("adam", 0.9, (B1, B2, EPS))
    params = {"w": torch.tensor(start)[None]}
    state = ours.init(params)
    reference = torch.nn.Parameter(torch.tensor(start))
    optim = torch.optim.Adam([reference], lr=0.05, betas=(B1, B2), eps=EPS)
    for _ in range(6):
        g = rng.normal(size=(2, 3)).astype(np.float32)
        params, state = ours.step(params, {"w": torch.tensor(g)[None]}, torch.tensor([0.05]), state)
        reference.grad = torch.tensor(g)
        optim.step()
    np.testing.assert_allclose(params["w"][0].numpy(), reference.detach().numpy(), rtol=2e-5, atol=1e-7)


def test_a_scaling_rule_axis_splits_groups_by_the_betas_in_force():
    from batchlab.runner.plan import plan
    from batchlab.sweep import build_sweep

    sweep = build_sweep({"optimizer": "adam", "lr_scaling": ["none", "adam-sde"], "batch_sizes": [4, 8],
                         "base_batch_size": 4, "epochs": 1})
    groups = plan(sweep, n_train=100, max_replicas=64)
    betas = sorted((g.batch_size, g.point.adam_for(g.batch_size).beta1) for g in groups)
    # B = 4: both rules give 0.9 (one group); B = 8: 0.9 (none) and 0.8 (adam-sde) in two groups
    assert [b for b, _ in betas] == [4, 8, 8]
    assert [round(x, 12) for _, x in betas[1:]] == [0.8, 0.9]
    assert all(len({r.point.adam_for(g.batch_size) for r in g.runs}) == 1 for g in groups)
    assert build_spec({"optimizer": "adam"}).adam_for(8).beta1 == 0.9
