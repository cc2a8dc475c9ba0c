"""The study pins its inputs (issue 12): the SHA-256 of the data file and of a user's model file, checked on
resume against the files found then."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from batchlab.errors import BatchlabError
from batchlab.runner.inputs import check_inputs, file_sha256, input_files, pin_inputs
from batchlab.sweep import build_sweep
from tests.paths import FIXTURES


def test_the_data_file_and_each_model_file_are_pinned_and_a_change_is_named(tmp_path):
    data, model = tmp_path / "d.csv", tmp_path / "net.py"
    data.write_text("a,y\n1,0\n2,1\n")
    shutil.copy(FIXTURES / "jax_mlp.py", model)
    sweep = build_sweep({"dataset": str(data), "target": "y", "model": ["mlp", f"{model}:make"]})
    assert input_files(sweep) == {"dataset": data, f"model {model}:make": model}
    pinned = pin_inputs(sweep)
    assert pinned["dataset"]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest() == file_sha256(data)
    check_inputs(pinned, sweep, tmp_path)  # unchanged: passes
    model.write_text(model.read_text() + "\n# edited\n")
    with pytest.raises(BatchlabError, match=rf"^model: {model} changed since the study in {tmp_path} was created "
                                            r"\(SHA-256 [0-9a-f]{12}\.\.\. then, [0-9a-f]{12}\.\.\. now\)"):
        check_inputs(pinned, sweep, tmp_path)
    data.unlink()
    with pytest.raises(BatchlabError, match=rf"^dataset: {data} is not found from here"):
        check_inputs(pinned, sweep, tmp_path)


def test_a_module_model_is_pinned_by_its_source_file_and_built_ins_by_nothing():
    sweep = build_sweep({"model": ["mlp", "tests.fixtures.jax_mlp:make"]})
    assert input_files(sweep) == {"model tests.fixtures.jax_mlp:make": FIXTURES / "jax_mlp.py"}
    assert pin_inputs(build_sweep({"dataset": "iris"})) == {}
