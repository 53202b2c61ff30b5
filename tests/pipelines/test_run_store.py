"""Steps in separate processes with separate homes hand the run over by URI, not by a shared path."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import PROJECT, make_settings, settings_env

pytestmark = pytest.mark.slow  # runs steps in separate pods' homes, TFX included


def relay(args, settings):
    env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(PROJECT)}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_data_and_validate_pods_share_a_run_only_through_its_uri(tmp_path):
    uri = f"file://{tmp_path / 'bucket' / 'runs' / 'digits' / 'r1'}"
    first, second = make_settings(tmp_path / "pod-a"), make_settings(tmp_path / "pod-b")
    data = relay(["step", "data", "--task", "digits", "--run-uri", uri], first)
    assert data.returncode == 0, data.stderr[-2000:]
    stored = tmp_path / "bucket" / "runs" / "digits" / "r1"
    assert (stored / "spec.json").is_file() and (stored / "data" / "manifest.csv").is_file()
    assert not list((tmp_path / "pod-a" / "run-cache").iterdir())  # the local copy is gone after upload

    validate = relay(["step", "validate", "--run-uri", uri], second)
    assert validate.returncode == 0, validate.stderr[-2000:]
    assert json.loads((stored / "validate" / "validation.json").read_text())["success"] is True
    assert (stored / "tfx" / "tfx_report.json").is_file() and (stored / "data" / "manifest.csv").is_file()


def test_a_fresh_pod_fetches_the_runs_dataset_version_from_the_dvc_remote(tmp_path):
    """A checkout without the images (a new pod) gets them from the DVC remote before a step reads them."""
    import shutil

    from pipelines.run_store import local_run
    from pipelines.steps import run_step, start_run

    project = tmp_path / "checkout"
    (project / "data").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=project, check=True)
    shutil.copy(PROJECT / "data" / "digits.dvc", project / "data" / "digits.dvc")
    remote = tmp_path / "dvc-remote"
    remote.mkdir()
    uri = f"file://{tmp_path / 'bucket' / 'r1'}"

    pod_a = make_settings(tmp_path / "pod-a", project_dir=project, dvc_remote=str(remote))
    with local_run(uri, pod_a) as run:
        start_run("digits", run_dir=run, settings=pod_a)
        run_step("data", run, pod_a)  # empty remote: regenerated, hash-checked, pushed
    shutil.rmtree(project / "data" / "digits")

    pod_b = make_settings(tmp_path / "pod-b", project_dir=project, dvc_remote=str(remote))
    with local_run(uri, pod_b) as run:
        summary = run_step("validate", run, pod_b)
    assert summary["success"] and len(list((project / "data" / "digits").rglob("*.png"))) == 1797
