"""Reruns reuse what has not changed: a step's output is reused exactly when its data version, code and
parameters are those of an earlier run, and the run records which steps were reused and why."""

from __future__ import annotations

import json

import pytest
import yaml

from components.run_files import RunDir
from pipelines.step_cache import step_key
from pipelines.steps import run_step, start_run
from tests.conftest import PROJECT, spec_for


@pytest.fixture
def spec_file(tmp_path, digits_spec, small_dataset):
    spec = spec_for(digits_spec, small_dataset, **{"training.epochs": 2, "gate.min_accuracy": 0.0})
    path = tmp_path / "digits-small.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    return path


def _run(spec_file, settings, overrides=None, steps=("data", "validate", "train", "optimize", "gate")):
    run = RunDir(start_run(str(spec_file), overrides, settings=settings))
    return run, {step: run_step(step, run, settings) for step in steps}


@pytest.mark.slow  # trains through run_step
def test_a_rerun_with_nothing_changed_reuses_validate_train_optimize_and_gate(settings, spec_file):
    first, computed = _run(spec_file, settings)
    assert not any(computed[step]["cache"]["reused"] for step in ("validate", "train", "optimize", "gate"))
    second, again = _run(spec_file, settings)
    for step in ("validate", "train", "optimize", "gate"):
        assert again[step]["cache"] == {"reused": True, "key": computed[step]["cache"]["key"],
                                        "from_run": first.path.name}, step
    assert second.optimized_model.read_bytes() == first.optimized_model.read_bytes()
    assert again["optimize"]["model"] == str(second.optimized_model)  # names this run's copy
    assert again["gate"]["passed"] == computed["gate"]["passed"]
    record = json.loads(second.steps_record.read_text())
    assert record["train"]["reused"] and f"reused the output of run {first.path.name}" in record["train"]["why"]
    assert not record["data"]["reused"] and "not cached" in record["data"]["why"]
    assert record["train"]["seconds"] < json.loads(first.steps_record.read_text())["train"]["seconds"]


@pytest.mark.slow  # trains through run_step
def test_a_changed_parameter_recomputes_only_the_steps_that_read_it(settings, spec_file):
    _run(spec_file, settings)
    _, gate_changed = _run(spec_file, settings, {"min_agreement": 0.5})
    assert gate_changed["train"]["cache"]["reused"] and gate_changed["optimize"]["cache"]["reused"]
    assert not gate_changed["gate"]["cache"]["reused"]
    _, epochs_changed = _run(spec_file, settings, {"epochs": 1}, steps=("data", "validate", "train", "optimize"))
    assert epochs_changed["validate"]["cache"]["reused"]
    assert not epochs_changed["train"]["cache"]["reused"] and not epochs_changed["optimize"]["cache"]["reused"]


def test_the_key_follows_the_data_version_and_the_code(settings, spec_file, monkeypatch):
    from pipelines import step_cache

    run, _ = _run(spec_file, settings, steps=("data",))
    spec = json.loads(run.spec_file.read_text())
    from components.spec import parse_spec

    spec = parse_spec(spec)
    key = step_key("train", spec, run)
    manifest = run.manifest
    rows = manifest.read_text().splitlines()
    manifest.write_text("\n".join(rows[:-1]) + "\n")  # one image fewer: another data version
    assert step_key("train", spec, run).key != key.key
    manifest.write_text("\n".join(rows) + "\n")
    assert step_key("train", spec, run).key == key.key
    monkeypatch.setattr(step_cache, "code_version", lambda step: "other-code")
    assert step_key("train", spec, run).key != key.key
    assert step_key("optimize", spec, run).inputs["upstream"] == step_key("train", spec, run).key


@pytest.mark.slow  # trains through run_step
def test_the_cache_can_be_turned_off(settings, spec_file, monkeypatch):
    settings = settings.model_copy(update={"step_cache": False})
    _run(spec_file, settings, steps=("data", "validate"))
    second, again = _run(spec_file, settings, steps=("data", "validate"))
    assert again["validate"]["cache"] == {"reused": False, "key": None}
    assert "not cached" in json.loads(second.steps_record.read_text())["validate"]["why"]


def test_a_step_is_keyed_by_its_own_stage_code_not_by_all_of_relay():
    """The train step's code is the training loops and what they import; deploy and the CLI are not in it."""
    from pipelines.step_cache import STEP_CODE
    from pipelines.import_graph import import_closure

    train = {str(path.relative_to(PROJECT)) for path in import_closure(STEP_CODE["train"])}
    assert {"components/train/torch_train.py", "components/train/keras_train.py", "components/errors.py",
            "components/atomic.py", "components/settings.py", "components/imaging.py"} <= train
    assert "components/deploy/torchserve.py" not in train and "pipelines/cli.py" not in train
    validate = {str(path.relative_to(PROJECT)) for path in import_closure(STEP_CODE["validate"])}
    assert "components/validate/expectations.py" in validate and "components/train/torch_train.py" not in validate
