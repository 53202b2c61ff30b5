"""The CLI's contract: one-line errors with exit code 2, a failed gate exits 1 and registers nothing."""

import json
import socket

import pytest
from typer.testing import CliRunner

from components.registry.model_registry import ModelRegistry
from pipelines.cli import app
from tests.conftest import copy_run, settings_env


@pytest.fixture
def cli(settings):
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, list(args), env=settings_env(settings))

    return invoke


def _one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    text = " ".join(result.stderr.split())
    assert text.startswith("error:") and all(fragment in text for fragment in fragments), text


def test_bad_run_parameter(cli):
    """Option values are checked by the option's own type (from the spec field); JSON params by the spec model."""
    result = cli("run", "digits", "--framework", "jax")
    assert result.exit_code == 2 and "--framework" in result.stderr and "'jax'" in result.stderr
    assert "'pytorch'" in result.stderr
    result = cli("run", "digits", "--min-agreement", "1.5")
    assert result.exit_code == 2 and "--min-agreement" in result.stderr and "less than or equal to 1" in result.stderr
    _one_line_error(cli("step", "data", "--task", "digits", "--params", '{"min_agreement": 2}'),
                    "gate.min_agreement", "less than or equal to 1")
    _one_line_error(cli("step", "data", "--task", "digits", "--params", '{"seed": 2}'),
                    "unknown run parameter(s) ['seed']")
    _one_line_error(cli("step", "data", "--task", "digits", "--params", "[1]"), "must be a JSON object")


def test_every_run_parameter_is_an_option_of_run_and_step():
    import typer

    from components.spec import OVERRIDABLE

    commands = typer.main.get_command(app).commands
    for command in ("run", "step"):
        options = {param.name: param for param in commands[command].params}
        for name in OVERRIDABLE:
            assert f"--{name.replace('_', '-')}" in options[name].opts and options[name].help, (command, name)


def test_unknown_task(cli):
    _one_line_error(cli("step", "validate", "--task", "cifar"), "no task spec", "known tasks: digits")


def test_step_without_a_run(cli):
    _one_line_error(cli("step", "train", "--task", "digits"), "task digits has no run yet")


def test_missing_dvc_remote(cli, settings, tmp_path, monkeypatch):
    runner = CliRunner()
    env = {**settings_env(settings), "RELAY_DVC_REMOTE": str(tmp_path / "no-such-remote")}
    result = runner.invoke(app, ["step", "data", "--task", "digits"], env=env)
    _one_line_error(result, f"DVC remote directory {tmp_path / 'no-such-remote'} does not exist", "RELAY_DVC_REMOTE")


@pytest.mark.parametrize("variable", ["RELAY_V2_HTTP_PORT", "RELAY_V2_GRPC_PORT"])
def test_port_in_use(cli, settings, variable):
    """With nothing served yet, `relay serve start` starts the default server, the V2 server."""
    port = getattr(settings, variable.removeprefix("RELAY_").lower())
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        _one_line_error(cli("serve", "start"), f"port {port} ({variable})")


def test_predict_without_server(cli, tmp_path):
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    _one_line_error(cli("predict", str(image), "--task", "digits"), "relay serve start")
    _one_line_error(cli("predict", str(image)), "serves no task yet", "relay run TASK", "or pass --task")


def test_models_with_empty_registry(cli):
    result = cli("models", "digits")
    assert result.exit_code == 0 and "no registered versions of digits" in result.stdout


def test_failed_gate_exits_1_and_register_refuses(cli, settings, trained_run, tmp_path):
    spec, source = trained_run
    strict = spec.model_copy(update={"gate": spec.gate.model_copy(update={"min_accuracy": 1.0, "latency_runs": 20})})
    run = copy_run(source, tmp_path / "run", strict)

    gate = cli("step", "gate", "--run-dir", str(run))
    assert gate.exit_code == 1 and "gate failed" in gate.stderr
    assert json.loads(run.gate_json.read_text())["passed"] is False
    assert "accuracy_floor | optimized accuracy ≥ floor" in run.gate_report.read_text()

    _one_line_error(cli("step", "register", "--run-dir", str(run)), "has not passed the gate", "refusing to register")
    assert ModelRegistry(settings).versions("digits") == []


@pytest.mark.parametrize("unset, named", [("RELAY_RUNS_URI", "RELAY_RUNS_URI"), ("RELAY_DVC_REMOTE", "RELAY_DVC_REMOTE"),
                                          ("RELAY_REGISTRY_REMOTE", "RELAY_REGISTRY_REMOTE")])
def test_celery_workers_refuse_to_start_without_a_store_they_can_share(settings, tmp_path, unset, named):
    """Workers that share no disk need runs and data in S3 and models in git: `relay airflow --executor celery`
    names what is missing and starts nothing."""
    import os
    import subprocess
    import sys

    from tests.conftest import PROJECT, free_ports

    env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(PROJECT), "AIRFLOW_HOME": str(tmp_path / "af"),
           "RELAY_AIRFLOW_PORT": str(free_ports(1)[0]), "RELAY_RUNS_URI": "s3://relay/runs",
           "RELAY_DVC_REMOTE": "s3://relay/dvc", "RELAY_REGISTRY_REMOTE": str(tmp_path / "registry.git")}
    env[unset] = str(tmp_path / "a-local-path") if unset != "RELAY_REGISTRY_REMOTE" else ""
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "airflow", "--executor", "celery"], cwd=PROJECT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and named in proc.stderr, proc.stderr
    assert not (tmp_path / "af" / "airflow-servers.pids").exists()  # nothing was started
