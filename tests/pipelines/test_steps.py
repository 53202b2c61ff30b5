import json
import shutil

import pytest

from components.errors import RelayError
from components.registry import ModelRegistry
from pipelines.steps import RUN_SPEC, latest_run, run_spec, run_step, start_run


def test_runs_get_their_own_directories_and_latest_follows(settings):
    first = start_run("digits", {"epochs": 2}, settings=settings)
    second = start_run("digits", settings=settings)
    assert first != second and first.parent == second.parent == settings.runs_dir / "digits"
    assert run_spec(first).training.epochs == 2 and run_spec(second).training.epochs == 12
    assert latest_run("digits", settings) == second
    # An orchestrator retrying the first task resumes its run instead of failing on the existing directory.
    assert start_run("digits", run_id="airflow-x", settings=settings) == start_run("digits", run_id="airflow-x",
                                                                                   settings=settings)


def test_unknown_step_and_non_run_directory(settings, tmp_path):
    with pytest.raises(RelayError, match="unknown step 'deploi'"):
        run_step("deploi", tmp_path, settings)
    with pytest.raises(RelayError, match="not a Relay run directory"):
        run_step("train", tmp_path, settings)


def test_gate_measures_the_production_champion_on_the_current_heldout_set(settings, trained_run, tmp_path):
    spec, source = trained_run
    run = tmp_path / "run"
    for step in ("data", "train", "optimize"):
        shutil.copytree(source / step, run / step)
    (run / RUN_SPEC).write_text(json.dumps(spec.model_dump(mode="json")))

    registry = ModelRegistry(settings)

    def build(version, dest):
        shutil.copy(run / "optimize" / "model.onnx", dest / "model.onnx")
        (dest / "model.mar").write_bytes(b"unused here")
        (dest / "gate.json").write_text(json.dumps({"passed": True, "metrics": {"accuracy_optimized": 0.9}}))
        (dest / "gate.md").write_text("passed")

    registry.register("digits", build, {})
    registry.assign("digits", "v0.1.0", "production")

    summary = run_step("gate", run, settings)
    gate = json.loads((run / "gate" / "gate.json").read_text())
    champion_check = next(c for c in gate["checks"] if c["name"] == "champion")
    assert gate["champion"]["version"] == "v0.1.0"
    # The champion is the same model, so it measures the same accuracy on the same held-out set.
    assert gate["champion"]["accuracy"] == pytest.approx(gate["metrics"]["accuracy_optimized"])
    assert champion_check["passed"] and summary["accuracy"] == gate["metrics"]["accuracy_optimized"]
