"""A team's own image folder, end to end: `relay task new` on a folder the test generates (RGB PNG and JPEG
of mixed sizes, a hidden file, an unreadable file), then the task's DAG through Airflow's dag.test(), to a
prediction served by Relay's default model server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from PIL import Image

from components.data.builtin import write_shapes
from components.deploy.local import served_by
from components.deploy.servers import stop_servers
from components.run_files import RunDir
from tests.conftest import PROJECT, make_settings, settings_env

pytestmark = pytest.mark.e2e


def relay(args: list[str], env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_task_new_then_the_dag_serves_the_users_own_data(tmp_path):
    project = tmp_path / "project"
    (project / "pipelines" / "specs").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=project, check=True)
    photos = tmp_path / "photos"
    write_shapes(photos, per_class=30)
    (photos / "star" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (photos / "ring" / "broken.JPG").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    Image.open(next((photos / "star").glob("*.png"))).resize((300, 200)).save(photos / "star" / "WIDE.PNG")

    settings = make_settings(tmp_path / "relay-home")
    # A plain shell, as a user's: no OMP_NUM_THREADS (the test process sets it for itself), so torch here uses
    # every core while the model is served with deploy.threads; the gate must time both under the latter.
    shell = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    env = {**shell, **settings_env(settings), "PYTHONPATH": str(PROJECT),
           "AIRFLOW_HOME": str(tmp_path / "airflow"), "RELAY_PROJECT_DIR": str(project)}
    created = relay(["task", "new", "myshapes", "--from", str(photos)], env)
    assert created.returncode == 0, created.stdout[-3000:] + created.stderr[-3000:]
    out = " ".join(created.stdout.split())
    assert "301 images in 10 classes" in out and "1 unreadable" in out and "ring/broken.JPG" in out
    assert "ignored (hidden file): 1" in out and "next: relay run myshapes" in out
    assert (project / "data" / "myshapes.dvc").is_file() and not (project / "data" / "myshapes" / "star" /
                                                                     ".DS_Store").exists()
    spec = yaml.safe_load((project / "pipelines" / "specs" / "myshapes.yaml").read_text())
    assert spec["input"] == {"size": [64, 64], "channels": 3, "resize": "center_crop", "normalization": "auto"}
    assert spec["model"]["name"] == "resnet" and spec["dataset"]["on_bad_file"] == "skip"
    assert any((tmp_path / "relay-home" / "dvc-remote").rglob("*"))  # pushed

    try:
        result = relay(["dag-test", "myshapes", "--conf", json.dumps({"epochs": 2, "min_accuracy": 0.0})], env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        table = " ".join(result.stdout.split())
        for step in ("data", "validate", "train", "optimize", "gate", "register", "deploy"):
            assert f"│ {step} │ success │" in table
        run = RunDir((settings.runs_dir / "myshapes" / "latest").resolve())
        gate = json.loads(run.gate_json.read_text())
        assert gate["latency_method"]["threads"] == {"intra_op": 1, "inter_op": 1}  # the spec's deploy.threads
        assert set(gate["latency_method"]["effective_threads"].values()) == {1}
        info = json.loads(run.data_info.read_text())
        assert info["split_counts"]["skipped"] == 1 and info["preprocessing"]["channels"] == 3
        answer = served_by(settings, "myshapes").predict("myshapes", (photos / "star" / "WIDE.PNG").read_bytes())
        assert answer["class"] in spec["dataset"]["classes"] and len(answer["logits"]) == 10
    finally:
        stop_servers(settings)
