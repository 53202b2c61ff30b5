"""The model registry: real git repos (a bare one as the remote), real DVC pushes, real GTO tags."""

import json
import multiprocessing
import subprocess
from pathlib import Path

import pytest

from components.registry import ModelRegistry, git
from components.settings import Settings
from tests.conftest import make_settings, write_gate_report


def _bare_remote(path: Path) -> str:
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(path)], check=True)
    return str(path)


def _artifacts(model: Path, gate_dir: Path):
    def build(version: str, dest: Path) -> None:
        (dest / "model.onnx").write_bytes(model.read_bytes())
        (dest / "model.mar").write_bytes(b"mar for " + version.encode())
        for name in ("gate.json", "gate.md"):
            (dest / name).write_bytes((gate_dir / name).read_bytes())

    return build


@pytest.fixture
def gate_dir(tmp_path):
    return write_gate_report(tmp_path / "gate")


@pytest.fixture
def registry_settings(tmp_path) -> Settings:
    return make_settings(tmp_path / "home", registry_remote=_bare_remote(tmp_path / "registry.git"))


def test_register_tags_versions_and_pushes_commits_tags_and_artifacts(registry_settings, trained_run, gate_dir):
    _, run = trained_run
    registry = ModelRegistry(registry_settings)
    build = _artifacts(run / "optimize" / "model.onnx", gate_dir)
    first = registry.register("digits", build, {"run_id": "r1"})
    second = registry.register("digits", build, {"run_id": "r2"})
    assert (first.version, second.version) == ("v0.1.0", "v0.2.0")
    assert [row["version"] for row in registry.versions("digits")] == ["v0.2.0", "v0.1.0"]

    remote = registry_settings.registry_remote
    remote_tags = git(["tag", "--list"], Path(remote)).split()
    assert {"digits@v0.1.0", "digits@v0.2.0"} <= set(remote_tags)
    tree = git(["ls-tree", "-r", "--name-only", "digits@v0.1.0"], Path(remote)).split()
    assert {"models/digits/artifacts.dvc", "models/digits/gate.json", "artifacts.yaml"} <= set(tree)
    assert json.loads(registry.read_file("digits", "v0.1.0", "model.json"))["run_id"] == "r1"
    assert registry.gate("digits", "v0.2.0")["passed"] is True

    # The DVC remote holds the artifacts: a fresh registry clone reads the model from there.
    fresh = ModelRegistry(make_settings(registry_settings.home.parent / "elsewhere",
                                        registry_remote=remote, dvc_remote=registry_settings.dvc_remote))
    fresh.ensure()
    model = fresh.artifact_bytes("digits", "v0.1.0", "model.onnx")
    assert model == (run / "optimize" / "model.onnx").read_bytes()


def test_registry_is_separate_from_the_code_checkout(registry_settings, trained_run, gate_dir):
    from tests.conftest import PROJECT

    head_before = git(["rev-parse", "HEAD"], PROJECT)
    _, run = trained_run
    ModelRegistry(registry_settings).register("digits", _artifacts(run / "optimize" / "model.onnx", gate_dir), {})
    assert git(["rev-parse", "HEAD"], PROJECT) == head_before
    assert not git(["tag", "--list", "digits@*"], PROJECT)


def test_stage_assignment_finds_the_production_version(registry_settings, trained_run, gate_dir):
    _, run = trained_run
    registry = ModelRegistry(registry_settings)
    build = _artifacts(run / "optimize" / "model.onnx", gate_dir)
    registry.register("digits", build, {})
    registry.register("digits", build, {})
    assert registry.stage_version("digits", "production") is None
    registry.assign("digits", "v0.1.0", "production")
    assert registry.stage_version("digits", "production") == "v0.1.0"
    assert [(row["version"], row["stages"]) for row in registry.versions("digits")] == [
        ("v0.2.0", []), ("v0.1.0", ["production"])]
    remote_tags = git(["tag", "--list"], Path(registry_settings.registry_remote)).split()
    assert any(tag.startswith("digits#production#") for tag in remote_tags)


def _register_in_subprocess(settings_json: str, model: str, gate_dir: str) -> str:
    settings = Settings.model_validate_json(settings_json)
    return ModelRegistry(settings).register("digits", _artifacts(Path(model), Path(gate_dir)), {}).version


def test_concurrent_registrations_get_distinct_versions(registry_settings, trained_run, gate_dir):
    _, run = trained_run
    ModelRegistry(registry_settings).ensure()
    args = (registry_settings.model_dump_json(), str(run / "optimize" / "model.onnx"), str(gate_dir))
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        versions = pool.starmap(_register_in_subprocess, [args, args])
    assert sorted(versions) == ["v0.1.0", "v0.2.0"]
