import json
import shutil

import pytest

from components.errors import RelayError
from components.registry.model_registry import ModelRegistry
from components.run_files import RunDir
from components.spec import load_spec
from pipelines.steps import latest_run, run_spec, run_step, start_run
from tests.conftest import copy_run


def test_runs_get_their_own_directories_and_latest_follows(settings):
    first = start_run("digits", {"epochs": 2}, settings=settings)
    second = start_run("digits", settings=settings)
    assert first != second and first.parent == second.parent == settings.runs_dir / "digits"
    assert run_spec(first).training.epochs == 2
    assert run_spec(second).training.epochs == load_spec("digits").training.epochs != 2
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
    run = copy_run(source, tmp_path / "run", spec)

    registry = ModelRegistry(settings)

    def build(version, dest):
        shutil.copy(run.optimized_model, dest / "model.onnx")
        shutil.copy(run.preprocessing, dest / "preprocessing.json")
        (dest / "model.mar").write_bytes(b"unused here")
        (dest / "gate.json").write_text(json.dumps({"passed": True, "metrics": {"accuracy_optimized": 0.9}}))
        (dest / "gate.md").write_text("passed")

    registry.register("digits", build, {})
    registry.assign("digits", "v0.1.0", "production")

    summary = run_step("gate", run, settings)
    gate = json.loads(run.gate_json.read_text())
    champion_check = next(c for c in gate["checks"] if c["name"] == "champion")
    assert gate["champion"]["version"] == "v0.1.0"
    # The champion is the same model, so it measures the same accuracy on the same held-out set.
    assert gate["champion"]["accuracy"] == pytest.approx(gate["metrics"]["accuracy_optimized"])
    assert champion_check["passed"] and summary["accuracy"] == gate["metrics"]["accuracy_optimized"]




def test_a_model_worse_than_the_served_default_fails_the_gate(settings, trained_run, tmp_path):
    """No production stage exists: for a task served locally, the served default is the champion."""
    from components.deploy.local import deploy_local
    from components.deploy.servers import model_server
    from components.frameworks import optimize_model, train_model
    from tests.conftest import register_onnx

    spec, source = trained_run
    server = model_server(spec.deploy.server, settings)
    try:
        lenient = spec.model_copy(update={"gate": spec.gate.model_copy(update={"min_accuracy": 0.0})})
        deploy_local(lenient, register_onnx(settings, spec, source.optimized_model), source.data,
                     settings)
        worse = spec.model_copy(update={"training": spec.training.model_copy(update={"epochs": 1}),
                                        "gate": lenient.gate})
        run = copy_run(source, tmp_path / "worse", worse, steps=("data",))
        train_model(worse, run.data, run.train)
        optimize_model(worse, run.train, run.data, run.optimize)
        summary = run_step("gate", run, settings)
        gate = json.loads(run.gate_json.read_text())
        assert summary["passed"] is False and summary["failed_checks"] == ["champion"]
        assert gate["champion"]["version"] == "v0.1.0" and gate["champion"]["role"] == "served default"
        assert gate["champion"]["accuracy"] > gate["metrics"]["accuracy_optimized"] + 0.005
        assert "served default v0.1.0" in run.gate_report.read_text()
        assert server.default_version("digits") == "0.1.0"
    finally:
        server.stop()


def test_a_step_after_a_failed_one_says_which_step_to_run(settings, trained_run, tmp_path):
    spec, _ = trained_run
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.spec_file.write_text(json.dumps(spec.model_dump(mode="json")))
    with pytest.raises(RelayError, match=r"step validate needs data/data.json from step data, which has not "
                                         r"completed .* run `relay step data --run-dir"):
        run_step("validate", run, settings)
    with pytest.raises(RelayError, match="step deploy needs register/registration.json from step register"):
        run_step("deploy", run, settings)


def test_training_killed_mid_epoch_reruns_to_completion(settings, trained_run, tmp_path):
    """SIGKILL a real `relay step train` after its first epoch; the rerun (with another epoch count, so it
    starts over) completes, nothing half-published. Resuming is tested in tests/components/train/test_train.py."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import PROJECT, settings_env

    spec, source = trained_run
    long = spec.model_copy(update={"training": spec.training.model_copy(update={"epochs": 400})})
    run = copy_run(source, tmp_path / "run", long, steps=("data",))
    env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(PROJECT)}
    command = [sys.executable, "-m", "pipelines.cli", "step", "train", "--run-dir", str(run)]
    trainer = subprocess.Popen(command, cwd=PROJECT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        state = run.checkpoints / "state.json"
        while not state.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert state.is_file(), "training never finished an epoch"
    finally:
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
    assert not run.train.exists() and not list(run.path.glob(".train.tmp-*"))

    short = long.model_copy(update={"training": spec.training.model_copy(update={"epochs": 2})})
    run.spec_file.write_text(json.dumps(short.model_dump(mode="json")))  # keep the rerun short
    rerun = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert json.loads(run.metrics.read_text())["epochs"] == 2
    assert not list(run.path.glob(".train.tmp-*")) and not run.checkpoints.exists()


def _snapshot(run) -> dict[str, str]:
    """Every published file of a run (path → sha256), temps excluded."""
    import hashlib
    import re

    from components.atomic import is_temp_name

    def name(path) -> str:  # GX names each Data Docs page after its validation time
        return re.sub(r"\d{8}T\d{6}\.\d+Z", "<time>", str(path.relative_to(run)))

    return {name(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.rglob("*"))
            if p.is_file() and not any(is_temp_name(part) for part in p.relative_to(run).parts)}


def test_retrying_any_step_on_the_same_run_matches_one_clean_pass(settings, trained_run, small_dataset, tmp_path):
    """As an Airflow retry does: each step runs twice on the same run directory. The files are the same,
    models and data byte-identical, and register/deploy do not make or serve a second version."""
    import yaml

    from components.deploy.servers import model_server
    from components.spec import PROJECT_DIR

    spec, _ = trained_run
    data = spec.model_dump(mode="json")
    data["gate"]["min_accuracy"] = 0.7
    spec_file = tmp_path / "digits.yaml"
    spec_file.write_text(yaml.safe_dump(data))
    run = start_run(str(spec_file), settings=settings)
    # Only what a retry must reproduce exactly; timings (gate latency, train seconds) and reports that
    # embed them legitimately differ between two passes.
    exact = {"data": ["data/manifest.csv", "data/data.json"], "train": ["train/model.pt"],
             "optimize": ["optimize/model.onnx"], "register": ["register/registration.json"],
             "deploy": ["deploy/deployment.json"]}
    server = model_server(spec.deploy.server, settings)
    try:
        for step in ("data", "validate", "train", "optimize", "gate", "register", "deploy"):
            first_summary = run_step(step, run, settings)
            first = _snapshot(run)
            second_summary = run_step(step, run, settings)
            second = _snapshot(run)
            assert first.keys() == second.keys(), step
            for path in exact.get(step, []):
                assert first[path] == second[path], path
            if step == "gate":
                assert first_summary["passed"] == second_summary["passed"] is True
            if step == "register":
                assert second_summary["version"] == first_summary["version"] == "v0.1.0" and second_summary["reused"]
        assert [row["version"] for row in ModelRegistry(settings).versions("digits")] == ["v0.1.0"]
        assert server.default_version("digits") == "0.1.0"
        assert server.versions("digits") == ["0.1.0"]
    finally:
        server.stop()
    assert PROJECT_DIR  # the spec pointed outside the project: the checkout was not touched


def test_a_full_disk_during_a_step_publishes_nothing_and_says_so(settings, trained_run, tmp_path):
    """`relay step optimize` under RLIMIT_FSIZE (writes past 64 KiB fail, as on a full disk)."""
    import os
    import resource
    import signal
    import subprocess
    import sys

    from tests.conftest import PROJECT, settings_env

    spec, source = trained_run
    run = copy_run(source, tmp_path / "run", spec, steps=("data", "train"))
    assert source.optimized_model.stat().st_size > 64 * 1024

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    step = subprocess.run([sys.executable, "-m", "pipelines.cli", "step", "optimize", "--run-dir", str(run)],
                          cwd=PROJECT, env={**os.environ, **settings_env(settings), "PYTHONPATH": str(PROJECT),
                                            "PYTHONDONTWRITEBYTECODE": "1"},
                          preexec_fn=limit_file_size, capture_output=True, text=True, timeout=300)
    message = " ".join(step.stderr.split())
    assert step.returncode == 2, step.stdout[-2000:] + step.stderr[-2000:]
    assert f"writing {run.optimize} failed: the file size limit was reached" in message
    assert "nothing was published" in message and "Traceback" not in step.stderr
    assert sorted(p.name for p in run.path.iterdir()) == ["data", "spec.json", "train"]
