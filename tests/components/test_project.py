"""`relay init`: a team's project holds its specs, data pointers, DAGs and worker image, and no Relay code; its
DAG file builds the DAGs with Relay's factory, in local and in Kubernetes mode, from wherever it is loaded."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys

import pytest
import yaml

from components.errors import RelayError
from components.project import init_project
from components.spec import SPECS_DIR
from tests.conftest import PROJECT


@pytest.fixture
def project(tmp_path):
    made = init_project(tmp_path / "our-images", "0.1.0")
    spec = yaml.safe_load((SPECS_DIR / "digits.yaml").read_text())
    spec["name"] = "parts"
    (made.path / "specs" / "parts.yaml").write_text(yaml.safe_dump(spec))
    return made.path


def test_init_makes_the_project_and_refuses_a_directory_in_use(project, tmp_path):
    for name in ("relay.yaml", "specs", "data", "dags/relay_dags.py", "README.md", ".gitignore", "Dockerfile",
                 ".dockerignore", ".git", ".dvc"):
        assert (project / name).exists(), name
    assert yaml.safe_load((project / "relay.yaml").read_text()) == {"project": "our-images",
                                                                    "created_with_relay": "0.1.0"}
    assert not any((project / name).exists() for name in ("components", "pipelines", "Makefile"))
    with pytest.raises(RelayError, match="is not an empty directory"):
        init_project(project, "0.1.0")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(RelayError, match="is not an empty directory"):
        init_project(tmp_path / "a-file", "0.1.0")


@pytest.mark.parametrize("execution", ["local", "kubernetes"])
def test_the_dag_file_builds_the_projects_dags_from_anywhere(project, monkeypatch, execution):
    monkeypatch.delenv("RELAY_PROJECT_DIR", raising=False)
    monkeypatch.setenv("RELAY_EXECUTION", execution)
    monkeypatch.setenv("RELAY_WORKER_IMAGE", "registry.example/our-images-worker:7")
    monkeypatch.chdir(PROJECT)  # not the project: the file finds it from its own location
    try:
        dags = runpy.run_path(str(project / "dags" / "relay_dags.py"))
    finally:
        os.environ.pop("RELAY_PROJECT_DIR", None)  # the DAG file set it for this process
    assert sorted(k for k in dags if k.startswith("relay_")) == ["relay_parts", "relay_promote"]
    if execution == "kubernetes":
        data = dags["relay_parts"].get_task("data")
        assert data.image == "registry.example/our-images-worker:7" and data.arguments[4:6] == ["--task", "parts"]


@pytest.mark.slow  # git and DVC init, a built image's view
def test_the_worker_image_is_relays_with_the_project_where_its_pods_look(project, tmp_path):
    """No container engine runs here: the Dockerfile is read, and a copy of the project where the image puts
    it is what `relay step` (the pods' command) finds with the image's environment."""
    dockerfile = (project / "Dockerfile").read_text()
    assert re.search(r"(?m)^ARG RELAY_WORKER_IMAGE=relay-worker:0\.1\.0$", dockerfile)
    assert re.search(r"(?m)^FROM \$\{RELAY_WORKER_IMAGE\}$", dockerfile)
    assert re.search(r"(?m)^COPY --chown=relay \. /opt/project$", dockerfile)
    assert re.search(r"(?m)^ENV RELAY_PROJECT_DIR=/opt/project$", dockerfile)
    ignored = (project / ".dockerignore").read_text().split()
    assert "data/*/" in ignored and ".git" not in ignored  # pointers and git go in (DVC pulls in a git repo)
    image_copy = tmp_path / "opt" / "project"
    image_copy.parent.mkdir()
    subprocess.run(["cp", "-a", str(project), str(image_copy)], check=True)
    env = {**os.environ, "RELAY_PROJECT_DIR": str(image_copy), "RELAY_HOME": str(tmp_path / "pod-home")}
    stepped = subprocess.run([sys.executable, "-m", "pipelines.cli", "step", "validate", "--task", "parts"],
                             cwd=tmp_path, env={**env, "PYTHONPATH": str(PROJECT)}, capture_output=True, text=True,
                             timeout=300)
    message = " ".join(stepped.stderr.split())
    assert stepped.returncode == 2 and "task parts has no run yet" in message, message  # the spec was found
