"""The spec: constraints declared once, one error template, exact learning-rate rules."""

from __future__ import annotations

import math

import pytest

from batchlab.errors import BatchlabError
from batchlab.spec import FULL, StudySpec, build_spec, read_toml, run_id, scaled_lr


def test_defaults_are_lenas_experiment():
    """Issue 10: the default is the puzzle on data with irreducible noise (moons, noise 0.3, 2,000 examples); the
    rate stays the one at which `--dataset digits` trains stably."""
    spec = build_spec({})
    assert (spec.dataset, spec.n_samples, spec.noise, spec.model, spec.batch_sizes, spec.epochs, spec.optimizer,
            spec.lr, spec.seeds) == ("moons", 2000, 0.3, "mlp", (1, FULL), 100, "sgd", 0.03, 1)


def test_cli_strings_and_toml_values_parse_to_the_same_spec():
    from_cli = build_spec({"batch_sizes": "1, 32,full", "hidden": "256,128", "lr": "0.1", "epochs": "5",
                           "standardize": "false"})
    from_toml = build_spec({"batch_sizes": [1, 32, "full"], "hidden": [256, 128], "lr": 0.1, "epochs": 5,
                            "standardize": False})
    assert from_cli == from_toml
    assert from_cli.batch_sizes == (1, 32, FULL) and from_cli.hidden == (256, 128)
    assert build_spec({"hidden": 64}).hidden == (64,)


@pytest.mark.parametrize("field,value,fragment", [
    ("batch_sizes", "0", "integers >= 1 and 'full'"),
    ("batch_sizes", "1,x", "integers >= 1 and 'full'"),
    ("lr", "-1", "a number > 0 that float32 holds"),
    ("lr", "nan", "a number > 0 that float32 holds"),
    ("epochs", 0, "an integer in [1, 1000000]"),
    ("epochs", 2.5, "an integer in [1, 1000000]"),
    ("epochs", True, "an integer in [1, 1000000]"),
    ("optimizer", "rmsprop", "one of sgd, momentum, adam"),
    ("momentum", 1.0, "a number in [0.0, 1.0)"),
    ("test_fraction", 0, "a number in (0.0, 1.0)"),
    ("dataset", "mnist", "one of digits, iris"),
    ("device", "tpu", "one of auto, cpu, gpu"),
])
def test_bad_values_name_the_field_the_value_and_what_is_allowed(field, value, fragment):
    with pytest.raises(BatchlabError) as e:
        build_spec({field: value})
    message = str(e.value)
    assert message.startswith(f"{field}: got {value!r}; allowed: ") and fragment in message
    assert "\n" not in message


def test_unknown_fields_are_errors():
    with pytest.raises(BatchlabError, match=r"^batch_size: unknown field; allowed fields: dataset, "):
        build_spec({"batch_size": 4})


def test_csv_needs_a_target_and_builtins_refuse_one(tmp_path):
    (tmp_path / "my.csv").write_text("a,y\n1,0\n2,1\n")
    with pytest.raises(BatchlabError, match="^target: got None"):
        build_spec({"dataset": str(tmp_path / "my.csv")})
    with pytest.raises(BatchlabError, match="^target: got 'y'; allowed: only with a CSV"):
        build_spec({"target": "y"})


def test_batch_sizes_resolve_against_the_training_set_size():
    spec = StudySpec(batch_sizes=(32, FULL, 1, 32))
    assert spec.resolved_batch_sizes(100) == [1, 32, 100]
    with pytest.raises(BatchlabError, match=r"^batch_sizes: got 101; allowed: integers 1 <= b <= 100"):
        StudySpec(batch_sizes=(101,)).resolved_batch_sizes(100)


def test_learning_rate_scaling_rules():
    assert scaled_lr(0.1, 256, 32, "none") == 0.1
    assert scaled_lr(0.1, 256, 32, "linear") == pytest.approx(0.8)
    assert scaled_lr(0.1, 8, 32, "linear") == pytest.approx(0.025)
    assert scaled_lr(0.1, 128, 32, "sqrt") == pytest.approx(0.2)
    assert StudySpec(lr=0.01, lr_scaling="sqrt", base_batch_size=1).lr_for(100) == pytest.approx(0.1)
    assert math.isclose(scaled_lr(0.3, 32, 32, "sqrt"), 0.3)


def test_run_ids_are_content_hashes_independent_of_the_other_batch_sizes():
    a = StudySpec(batch_sizes=(1, FULL))
    b = StudySpec(batch_sizes=(1, 8, FULL), seeds=3)
    assert run_id(a, batch_size=1, seed_index=0) == run_id(b, batch_size=1, seed_index=0)
    assert run_id(a, batch_size=1, seed_index=0).startswith("bs1-seed0-")
    assert run_id(a, batch_size=1, seed_index=0) != run_id(StudySpec(lr=0.1), batch_size=1, seed_index=0)
    assert run_id(a, batch_size=1, seed_index=0) != run_id(a, batch_size=1, seed_index=1)


def test_read_toml_reports_missing_and_malformed_files(tmp_path):
    with pytest.raises(BatchlabError, match="^config: got"):
        read_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = = 3")
    with pytest.raises(BatchlabError, match="is not valid TOML"):
        read_toml(bad)
    good = tmp_path / "good.toml"
    good.write_text('dataset = "iris"\nbatch_sizes = [1, "full"]\n')
    assert build_spec(read_toml(good)).dataset == "iris"
