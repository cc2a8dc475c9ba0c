"""The learning-rate and Adam-coefficient rules across batch sizes (batchlab.spec), against hand-worked values."""

from __future__ import annotations

import math
from typing import Any

import pytest

from batchlab.errors import BatchlabError
from batchlab.spec import (
    ADAM_BETA1,
    ADAM_BETA2,
    ADAM_EPS,
    AdamHyperparams,
    StudySpec,
    build_spec,
    check_adam_rule,
    halflife_beta2,
    halflife_examples,
    run_id,
    scaled_lr,
    sde_adam_hyperparams,
    sde_beta,
)


def test_marek_halflife_example_from_the_issue():
    # beta2 = 0.95 at B = 512 maps to 0.95^(1/32) at B = 16 (k = 16 / 512)
    assert halflife_beta2(0.95, 16 / 512) == pytest.approx(0.95 ** (1 / 32), rel=1e-15)
    assert halflife_beta2(0.95, 16 / 512) == pytest.approx(0.998398368533228, rel=1e-12)


def test_halflife_is_fixed_in_examples_and_round_trips():
    beta2 = 0.95
    for b_new in (1, 16, 100, 4096):
        k = b_new / 512
        assert halflife_examples(halflife_beta2(beta2, k), b_new) == pytest.approx(halflife_examples(beta2, 512))
        assert halflife_beta2(halflife_beta2(beta2, k), 1 / k) == pytest.approx(beta2, rel=1e-12)
    # a half-life of 512 ln(1/2)/ln(0.95) ~ 6919 examples
    assert halflife_examples(0.95, 512) == pytest.approx(512 * 13.5134, rel=1e-4)


def test_malladi_sde_rule_hand_values_and_round_trip():
    assert sde_beta(0.9, 4) == pytest.approx(0.6)
    assert sde_beta(0.999, 4) == pytest.approx(0.996)
    base = AdamHyperparams(0.9, 0.999, 1e-8)
    up = sde_adam_hyperparams(base, 4)
    assert up.eps == pytest.approx(5e-9)
    back = sde_adam_hyperparams(up, 1 / 4)
    assert (back.beta1, back.beta2, back.eps) == pytest.approx((0.9, 0.999, 1e-8), rel=1e-12)
    assert scaled_lr(0.01, 64, 16, "adam-sde") == pytest.approx(0.02)
    assert scaled_lr(0.01, 64, 16, "beta2-halflife") == 0.01


def test_spec_applies_the_rules_per_batch_size():
    sde = build_spec({"optimizer": "adam", "lr_scaling": "adam-sde", "base_batch_size": 16, "lr": 0.001,
                      "beta1": "0.8", "beta2": 0.99})
    h = sde.adam_for(64)
    assert (h.beta1, h.beta2, h.eps) == pytest.approx((1 - 4 * 0.2, 1 - 4 * 0.01, ADAM_EPS / 2))
    assert sde.lr_for(64) == pytest.approx(0.002)
    marek = build_spec({"optimizer": "adam", "lr_scaling": "beta2-halflife", "base_batch_size": 512, "beta2": 0.95})
    assert marek.adam_for(16).beta2 == pytest.approx(0.95 ** (1 / 32))
    assert marek.adam_for(16).beta1 == ADAM_BETA1
    for rule in ("none", "linear", "sqrt"):
        plain = build_spec({"optimizer": "adam", "lr_scaling": rule, "beta2": 0.95, "base_batch_size": 4})
        assert plain.adam_for(64) == AdamHyperparams(ADAM_BETA1, 0.95, ADAM_EPS)


@pytest.mark.parametrize("field,value", [("beta1", 0), ("beta1", 1), ("beta2", 1.0), ("beta2", -0.1), ("beta2", "x")])
def test_betas_are_validated_in_the_open_unit_interval(field, value):
    with pytest.raises(BatchlabError, match=rf"^{field}: .*\(0\.0, 1\.0\)"):
        build_spec({field: value})


def test_a_rule_that_pushes_a_beta_out_of_range_is_refused_at_the_door():
    spec = build_spec({"optimizer": "adam", "lr_scaling": "adam-sde", "base_batch_size": 1, "beta1": 0.9})
    check_adam_rule(spec, [1, 5])  # 1 - 5 * 0.1 = 0.5: fine
    with pytest.raises(BatchlabError, match=r"^beta1: .*batch size 20 .*stays in \(0, 1\)"):
        check_adam_rule(spec, [1, 20])  # 1 - 20 * 0.1 = -1


def test_default_betas_keep_existing_run_ids():
    # the id of the default run before beta1/beta2/sharpness_every existed (tests/test_golden.py pins its numbers)
    old: dict[str, Any] = {"dataset": "digits", "n_samples": 1000, "noise": 0.2}  # the defaults then (now moons)
    assert run_id(StudySpec(**old), batch_size=1, seed_index=0) == "bs1-seed0-78e2d380"
    assert run_id(StudySpec(**old, beta2=0.95), batch_size=1, seed_index=0) != "bs1-seed0-78e2d380"
    assert run_id(StudySpec(**old, sharpness_every=5), batch_size=1, seed_index=0) == "bs1-seed0-78e2d380"
    assert (ADAM_BETA1, ADAM_BETA2, ADAM_EPS) == (0.9, 0.999, 1e-8)


def test_warmup_needs_a_rule_that_changes_the_rate():
    build_spec({"lr_scaling": "adam-sde", "warmup_epochs": 2})
    with pytest.raises(BatchlabError, match="^warmup_epochs:"):
        build_spec({"lr_scaling": "beta2-halflife", "warmup_epochs": 2})
    assert math.isclose(scaled_lr(1.0, 9, 1, "sqrt"), 3.0)


def test_runs_table_records_the_betas_in_force():
    from batchlab.store.tables import RUN_FIELDS, runs_table

    def row(batch_size, **config):
        return {**{f: 0 for f in RUN_FIELDS}, "run_id": f"r{batch_size}", "batch_size": batch_size, "config": config}

    runs = [row(16, optimizer="adam", lr_scaling="beta2-halflife", beta2=0.95, base_batch_size=512),
            row(64, optimizer="adam", lr_scaling="adam-sde", base_batch_size=16),  # an old config: default betas
            row(64, optimizer="sgd")]
    t = runs_table(runs)
    assert t["beta2"][0] == pytest.approx(0.95 ** (1 / 32)) and t["beta1"][0] == 0.9
    assert (t["beta1"][1], t["beta2"][1], t["adam_eps"][1]) == pytest.approx((0.6, 0.996, 5e-9))
    assert math.isnan(t["beta1"][2])
