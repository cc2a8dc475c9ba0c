"""Users' JAX models: (init, apply) pairs, Equinox and Flax NNX modules, named by file or by module, trained
and recorded like the built-ins; every mistake in a reference is one line, raised before anything is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from batchlab.errors import BatchlabError
from batchlab.models.jax import INIT_TAG
from batchlab.models.registry import load_user_model
from batchlab.runner.driver import run_study
from batchlab.spec import build_spec
from batchlab.store.db import Store
from tests.paths import REPO

FIXTURES = "tests/fixtures"


def iris(model: str, **values) -> dict:
    return {"dataset": "iris", "model": model, "batch_sizes": "8,full", "epochs": 3, "device": "cpu", **values}


def by_batch_and_seed(out: Path) -> dict[tuple[int, int], dict]:
    store = Store.open(out)
    metrics = store.run_metrics()
    runs = {(r["batch_size"], r["seed"]): {"epochs": store.epochs(r["run_id"]), "steps": store.step_losses(r["run_id"])[1],
                                           "init": store.load_params(r["run_id"]), "status": r["status"],
                                           "final": store.load_params(r["run_id"], kind="final"),
                                           "metrics": metrics.get(r["run_id"], {})}
            for r in store.runs()}
    store.close()
    return runs


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    """References are relative to the working directory, as on the command line."""
    monkeypatch.chdir(REPO)


def test_a_builtin_model_handed_over_as_a_user_pair_trains_measures_and_records_identically(tmp_path):
    """The user path adds nothing: the built-in MLP, given as a user's (init, apply) pair, gives the built-in's
    initial parameters, losses, gradient noise scale and curvature."""
    run_study(build_spec(iris("mlp", gns_every=3)), tmp_path / "builtin")
    run_study(build_spec(iris(f"{FIXTURES}/jax_mlp.py:builtin_twin", gns_every=3)), tmp_path / "user")
    builtin, user = by_batch_and_seed(tmp_path / "builtin"), by_batch_and_seed(tmp_path / "user")
    assert sorted(builtin) == sorted(user) == [(8, 0), (120, 0)]
    for key, ours in user.items():
        theirs = builtin[key]
        assert ours["status"] == "completed"
        assert list(ours["init"]) == ["layer00/b", "layer00/w", "layer01/b", "layer01/w"]
        for name in ours["init"]:
            np.testing.assert_array_equal(ours["init"][name], theirs["init"][name])
        for field in ("train_loss", "test_loss", "test_acc", "b_simple", "trace_sigma"):
            np.testing.assert_allclose(ours["epochs"][field], theirs["epochs"][field], rtol=1e-6, err_msg=field)
        assert np.isfinite(ours["epochs"]["b_simple"][[0, -1]]).all()
        np.testing.assert_allclose(ours["steps"], theirs["steps"], rtol=1e-6)
        assert set(ours["metrics"]) >= {"top_eigenvalue", "hessian_trace"}
        for name, value in theirs["metrics"].items():
            np.testing.assert_allclose(ours["metrics"][name], value, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("library", ["equinox", "flax"])
def test_equinox_and_nnx_modules_start_from_their_seeds_key_train_and_record(library, tmp_path):
    pytest.importorskip(library, reason=f"{library} is an optional extra: pip install 'batchlab[{library}]'")
    reference = f"{FIXTURES}/{'eqx' if library == 'equinox' else 'nnx'}_mlp.py:make"
    run_study(build_spec(iris(reference, seeds=2, gns_every=3)), tmp_path / library)
    runs = by_batch_and_seed(tmp_path / library)
    assert sorted(runs) == [(8, 0), (8, 1), (120, 0), (120, 1)]
    names = {"equinox": ["layers/0/bias", "layers/0/weight", "layers/1/bias", "layers/1/weight"],
             "flax": ["hidden/bias", "hidden/kernel", "out/bias", "out/kernel"]}[library]
    model = load_user_model(reference, n_features=4, n_classes=3)
    for (batch_size, seed), run in runs.items():
        assert run["status"] == "completed"
        assert list(run["init"]) == names
        # The factory is called with the replica's init key: the module it builds holds the initial parameters.
        expected = model.init(jax.random.fold_in(jax.random.PRNGKey(seed), INIT_TAG))
        for name in names:
            np.testing.assert_array_equal(run["init"][name], np.asarray(expected[name]))
            np.testing.assert_array_equal(run["init"][name], runs[(120, seed)]["init"][name])
        assert not np.array_equal(run["final"][names[1]], run["init"][names[1]])
        assert run["epochs"]["train_loss"][-1] < run["epochs"]["train_loss"][0]
        assert np.isfinite(run["epochs"]["b_simple"][[0, -1]]).all()
        assert run["metrics"]["top_eigenvalue"] > 0
    assert not np.array_equal(runs[(8, 0)]["init"][names[1]], runs[(8, 1)]["init"][names[1]])


def test_a_module_in_the_working_directory_is_found_by_name(tmp_path, monkeypatch):
    (tmp_path / "batchlab_test_net.py").write_text((REPO / FIXTURES / "jax_mlp.py").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "batchlab_test_net", raising=False)
    model = load_user_model("batchlab_test_net:make", n_features=4, n_classes=3)
    assert repr(model) == "Model('batchlab_test_net:make', user JAX (init, apply) pair)"
    assert str(tmp_path) not in sys.path  # the working directory was on the path only while importing
    monkeypatch.delitem(sys.modules, "batchlab_test_net")


BAD_REFERENCES = [
    ("file-not-found", f"{FIXTURES}/nope.py:make", "file tests/fixtures/nope.py not found"),
    ("syntax-error", "{tmp}/broken.py:make", "importing {tmp}/broken.py failed: SyntaxError"),
    ("module-not-found", "no_such_module_for_batchlab:make", "no module named 'no_such_module_for_batchlab'"),
    ("function-missing", f"{FIXTURES}/jax_mlp.py:nope",
     ("has no function or class 'nope'; allowed: one of its functions or classes (builtin_twin, exits, make, "
      "raises, wrong_return, wrong_shape)")),
    ("wrong-return-type", f"{FIXTURES}/jax_mlp.py:wrong_return",
     "returned a builtins.dict; allowed: an (init, apply) pair of functions, an Equinox module"),
    ("wrong-logits-shape", f"{FIXTURES}/jax_mlp.py:wrong_shape",
     "returned shape (2, 4) for x of shape (2, 4); allowed: logits of shape (2, 3)"),
    ("signature", "json:dumps", ("its parameter 'obj' has no default and batchlab cannot pass it; allowed: "
                                 "parameters among n_features, n_classes, input_shape, key")),
    ("raises", f"{FIXTURES}/jax_mlp.py:raises", "calling raises(n_features=4, n_classes=3) raised ValueError: no"),
    ("exits", f"{FIXTURES}/jax_mlp.py:exits", "calling exits() raised SystemExit: 3"),
]


@pytest.mark.parametrize("reference,message", [pytest.param(r, m, id=i) for i, r, m in BAD_REFERENCES])
def test_a_bad_reference_is_one_line_naming_it_and_nothing_is_written(reference, message, tmp_path):
    (tmp_path / "broken.py").write_text("def make(n_features, n_classes)\n    return None\n")
    reference, message = reference.format(tmp=tmp_path), message.format(tmp=tmp_path)
    with pytest.raises(BatchlabError) as e:
        run_study(build_spec(iris(reference)), tmp_path / "study")
    text = str(e.value)
    assert text.startswith(f"model: {reference}") and "\n" not in text, text
    assert message in text, text
    assert not (tmp_path / "study").exists()


def test_an_equinox_factory_without_a_key_is_refused(tmp_path):
    pytest.importorskip("equinox", reason="equinox is an optional extra: pip install 'batchlab[equinox]'")
    with pytest.raises(BatchlabError, match=r"returns an Equinox module but takes no `key`; allowed: "
                                            r"function\(\*, key, n_features, n_classes\)"):
        run_study(build_spec(iris(f"{FIXTURES}/eqx_mlp.py:keyless")), tmp_path / "study")
    assert not (tmp_path / "study").exists()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "batchlab.cli", *args], check=False, cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_a_user_jax_model_file_runs_a_two_batch_size_study_from_the_command_line(tmp_path):
    p = cli("run", "--model", f"{FIXTURES}/jax_mlp.py:make", "--batch-sizes", "1,full", "--dataset", "iris",
            "--epochs", "3", "--no-figures", "--out", str(tmp_path / "study"))
    assert p.returncode == 0, p.stderr[-2000:]
    store = Store.open(tmp_path / "study")
    assert store.meta()["model"] == "Model('tests/fixtures/jax_mlp.py:make', user JAX (init, apply) pair)"
    runs = store.runs()
    assert [(r["batch_size"], r["status"]) for r in runs] == [(1, "completed"), (120, "completed")]
    for r in runs:
        assert r["config"]["model"] == "tests/fixtures/jax_mlp.py:make"
        assert list(store.load_params(r["run_id"])) == ["hidden/bias", "hidden/kernel", "out/bias", "out/kernel"]
        assert len(store.epochs(r["run_id"])["epoch"]) == 4
    assert len(store.step_losses(runs[0]["run_id"])[1]) == 3 * 120


def test_a_bad_user_model_on_the_command_line_exits_2_with_one_line(tmp_path):
    p = cli("run", "--model", f"{FIXTURES}/jax_mlp.py:wrong_return", "--dataset", "iris", "--epochs", "1",
            "--no-figures", "--out", str(tmp_path / "study"))
    assert p.returncode == 2
    assert p.stderr.startswith("batchlab run: error: model: tests/fixtures/jax_mlp.py:wrong_return returned ")
    assert len(p.stderr.splitlines()) == 1 and p.stdout == ""
    assert not (tmp_path / "study").exists()
