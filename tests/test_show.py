"""`batchlab show` with a user-chosen steps-to-target metric and value."""

from __future__ import annotations

import subprocess
import sys


def show(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "batchlab.cli", "show", *args], capture_output=True, text=True,
                          check=False)


def test_a_chosen_target_is_used_and_quoted(wine_study):
    p = show(str(wine_study), "--target-metric", "test_error", "--target", "0.25")
    assert p.returncode == 0, p.stderr
    assert "Steps to target (test error < 0.25" in p.stdout


def test_bad_target_options_are_one_line_errors(wine_study):
    for args, field in ((("--target-metric", "accuracy"), "target_metric"), (("--target", "low"), "target"),
                        (("--target", "nan"), "target"), (("--target", "inf"), "target")):  # nan, inf: issue 12
        p = show(str(wine_study), *args)
        assert p.returncode == 2 and "Traceback" not in p.stderr
        assert p.stderr.strip().count("\n") == 0 and f"error: {field}: got" in p.stderr


def test_show_json_is_one_object_with_the_interface_keys(wine_study):
    """Issue 10 / INTERFACES.md: `batchlab show DIR --json` prints one JSON object and nothing else, exit 0, no NaN;
    its runs agree with the runs export, key for key."""
    import json
    import math

    from batchlab.report.summary import JSON_RUN_KEYS
    from batchlab.store.tables import read_tables

    p = show(str(wine_study), "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)  # the whole of stdout is one object
    assert set(doc) == {"study", "runs", "steps_to_target", "fit", "findings", "critical_batch_size", "optimal_lr",
                        "edge_of_stability", "rule_check"}
    assert doc["study"] == {"dir": str(wine_study), "dataset": "wine", "n_train": 142, "n_test": 36,
                            "task": "classification", "model": doc["study"]["model"]}
    assert len(doc["runs"]) == 4 and all(set(JSON_RUN_KEYS) <= set(r) for r in doc["runs"])
    assert doc["steps_to_target"]["metric"] == "train_loss"
    assert {tuple(sorted(r)) for r in doc["steps_to_target"]["per_batch_size"]} >= {
        tuple(sorted(("batch_size", "steps", "examples", "lr", "seed", "time_s", "n_trials", "n_diverged",
                      "previous_evaluation")))}
    assert doc["critical_batch_size"] == [] and {"noisiest_run", "longest_run"} <= set(doc["findings"])
    assert "NaN" not in p.stdout and "Infinity" not in p.stdout
    runs = read_tables(wine_study, ("runs",))["runs"]
    for i, record in enumerate(doc["runs"]):
        j = runs["run_id"].index(record["run_id"])
        for key in JSON_RUN_KEYS:
            value = runs[key][j]
            if record[key] is None:
                assert value is None or (isinstance(value, float) and math.isnan(value)), key
            elif isinstance(record[key], str):
                assert value == record[key], key
            else:
                assert float(value) == record[key], key
