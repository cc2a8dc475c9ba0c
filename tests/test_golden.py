"""Golden values of a small study, recorded by batchlab before the restructuring of issue 9 (commit 387885e) on
the project's 2-core x86_64 machine: the restructured package must reproduce them. They were bit-identical there
at the time; the tolerance (1e-6 relative) only leaves room for another CPU's float32 kernels."""

from __future__ import annotations

import numpy as np
import pytest

from batchlab.runner.driver import run_study
from batchlab.spec import StudySpec
from batchlab.store.db import Store

# run_id: (train loss per epoch 0..3, test loss per epoch 0..3, B_simple at epoch 0, at epoch 3, sum of step losses)
GOLDEN = {
    "bs1-seed0-46ff27c2": ([1.144673228263855, 0.15383578836917877, 0.07161480188369751, 0.0476822666823864],
                           [1.153468370437622, 0.13678346574306488, 0.053758084774017334, 0.03205961361527443],
                           7.792087810337044, 128.52029681956967, 93.34876251220703),
    "bs1-seed1-e54c339e": ([1.0613770484924316, 0.17412099242210388, 0.08157186955213547, 0.048652708530426025],
                           [1.0428766012191772, 0.15842652320861816, 0.06922759115695953, 0.038412854075431824],
                           9.936689926946752, 143.04145875482175, 101.9775161743164),
    "bs16-seed0-d9bf715d": ([1.144673228263855, 0.9617228507995605, 0.8186647295951843, 0.6997012495994568],
                            [1.153468370437622, 0.9636152982711792, 0.8166879415512085, 0.6945870518684387],
                            7.792087810337044, 9.169152948265037, 24.542516708374023),
    "bs16-seed1-35499c39": ([1.0613770484924316, 0.9319227933883667, 0.8235788345336914, 0.7289160490036011],
                            [1.0428766012191772, 0.9131006598472595, 0.8041980862617493, 0.7094855904579163],
                            9.936689926946752, 11.110536744486232, 24.078886032104492),
    "bs142-seed0-e6806e1b": ([1.144673228263855, 1.1214896440505981, 1.0991578102111816, 1.077616810798645],
                             [1.153468370437622, 1.129414677619934, 1.1062411069869995, 1.0839219093322754],
                             7.792087810337044, 8.043211226765541, 3.3653206825256348),
    "bs142-seed1-d498afea": ([1.0613770484924316, 1.0455907583236694, 1.0302881002426147, 1.0153615474700928],
                             [1.0428766012191772, 1.0270105600357056, 1.0116162300109863, 0.9966157078742981],
                             9.936689926946752, 10.190020192974215, 3.137256145477295),
}


def test_a_small_study_reproduces_the_values_recorded_before_the_restructuring(tmp_path):
    # n_samples and noise at their values when these were recorded: they enter the content-derived run ids even
    # for a dataset they do not affect, and issue 10 changed their defaults (moons' 2,000 examples, noise 0.3).
    spec = StudySpec(dataset="wine", batch_sizes=(1, 16, "full"), epochs=3, seeds=2, hidden=(32,), gns_every=3,
                     device="cpu", n_samples=1000, noise=0.2)
    run_study(spec, tmp_path / "study")
    store = Store.open(tmp_path / "study")
    try:
        assert sorted(r["run_id"] for r in store.runs()) == sorted(GOLDEN)  # the same content-derived ids
        for run_id, (train, test, b0, b3, step_sum) in GOLDEN.items():
            epochs = store.epochs(run_id)
            np.testing.assert_allclose(epochs["train_loss"], train, rtol=1e-6)
            np.testing.assert_allclose(epochs["test_loss"], test, rtol=1e-6)
            assert epochs["b_simple"][[0, 3]] == pytest.approx([b0, b3], rel=1e-6)
            assert float(store.step_losses(run_id)[1].sum()) == pytest.approx(step_sum, rel=1e-6)
    finally:
        store.close()
