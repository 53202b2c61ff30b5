"""Steps in separate processes with separate homes hand the run over by URI, not by a shared path."""

import json
import os
import subprocess
import sys

from tests.conftest import PROJECT, make_settings, settings_env


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
