"""The model registry: real git repos (a bare one as the remote), real DVC pushes, real GTO tags."""

import json
import multiprocessing
import subprocess
from pathlib import Path

import pytest

from components.errors import RelayError
from components.registry.model_registry import ModelRegistry
from components.versioning import git
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
    build = _artifacts(run.optimized_model, gate_dir)
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
    assert model == run.optimized_model.read_bytes()


def test_two_tasks_in_one_registry_list_only_their_registered_versions(registry_settings, trained_run, gate_dir):
    """Another task's registration moves HEAD past this task's last one; GTO then shows that commit as an
    unregistered "version" of this task, named by its hexsha, and registering again failed on it."""
    _, run = trained_run
    registry = ModelRegistry(registry_settings)
    build = _artifacts(run.optimized_model, gate_dir)
    registry.register("digits", build, {"run_id": "d1"})
    registry.register("flowers", build, {"run_id": "f1"})
    assert [row["version"] for row in registry.versions("digits")] == ["v0.1.0"]
    assert registry.version_with_model("digits", "no such digest", "none") is None  # read every version's files
    assert registry.register("digits", build, {"run_id": "d2"}).version == "v0.2.0"


def test_registry_is_separate_from_the_code_checkout(registry_settings, trained_run, gate_dir):
    from tests.conftest import PROJECT

    head_before = git(["rev-parse", "HEAD"], PROJECT)
    _, run = trained_run
    ModelRegistry(registry_settings).register("digits", _artifacts(run.optimized_model, gate_dir), {})
    assert git(["rev-parse", "HEAD"], PROJECT) == head_before
    assert not git(["tag", "--list", "digits@*"], PROJECT)


def test_stage_assignment_finds_the_production_version(registry_settings, trained_run, gate_dir):
    _, run = trained_run
    registry = ModelRegistry(registry_settings)
    build = _artifacts(run.optimized_model, gate_dir)
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
    args = (registry_settings.model_dump_json(), str(run.optimized_model), str(gate_dir))
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        versions = pool.starmap(_register_in_subprocess, [args, args])
    assert sorted(versions) == ["v0.1.0", "v0.2.0"]


@pytest.mark.parametrize("head", ["master", "trunk"])
def test_a_plain_bare_remote_gets_a_clone_that_checks_out_the_registry(tmp_path, trained_run, gate_dir, head):
    """`git init --bare` makes HEAD master (or whatever init.defaultBranch says): Relay pushes there."""
    remote = tmp_path / "plain.git"
    subprocess.run(["git", "init", "-q", "--bare", f"--initial-branch={head}", str(remote)], check=True)
    settings = make_settings(tmp_path / "home", registry_remote=str(remote))
    _, run = trained_run
    ModelRegistry(settings).register("digits", _artifacts(run.optimized_model, gate_dir), {})
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(remote), str(clone)], check=True)
    assert (clone / "models" / "digits" / "artifacts.dvc").is_file()
    assert git(["symbolic-ref", "--short", "HEAD"], clone) == head
    assert git(["branch", "--list"], remote) == f"* {head}"


def _remote_head(remote: str) -> str:
    return git(["rev-parse", "HEAD"], Path(remote))


def test_a_push_the_remote_rejects_registers_nothing_and_leaves_no_local_tag(registry_settings, trained_run,
                                                                             gate_dir):
    _, run = trained_run
    registry = ModelRegistry(registry_settings).ensure()
    remote = registry_settings.registry_remote
    hook = Path(remote) / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'registry is frozen for the release' >&2\nexit 1\n")
    hook.chmod(0o755)
    head = _remote_head(remote)
    build = _artifacts(run.optimized_model, gate_dir)
    with pytest.raises(RelayError, match=r"registry remote .* refused the push .*registry is frozen.*nothing was "
                                         r"registered"):
        registry.register("digits", build, {"run_id": "r1"})
    assert git(["tag", "--list"], registry.path) == "" and git(["tag", "--list"], Path(remote)) == ""
    assert git(["rev-parse", "HEAD"], registry.path) == head == _remote_head(remote)
    assert git(["status", "--porcelain"], registry.path) == ""
    assert registry.versions("digits") == []

    hook.unlink()  # the remote accepts again: the same run registers as the first version
    assert registry.register("digits", build, {"run_id": "r1"}).version == "v0.1.0"


def test_an_unreachable_registry_remote_is_one_clear_error(registry_settings, trained_run, gate_dir, tmp_path):
    _, run = trained_run
    registry = ModelRegistry(registry_settings).ensure()
    Path(registry_settings.registry_remote).rename(tmp_path / "moved.git")
    with pytest.raises(RelayError, match="the registry remote .* is not reachable"):
        registry.register("digits", _artifacts(run.optimized_model, gate_dir), {})
    assert git(["tag", "--list"], registry.path) == ""


def test_an_unreachable_dvc_remote_names_it_and_registers_nothing(tmp_path, trained_run, gate_dir, monkeypatch):
    """An s3:// remote whose endpoint is a closed local port."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "relay-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "relay-test")
    remote = _bare_remote(tmp_path / "registry.git")
    settings = make_settings(tmp_path / "home", registry_remote=remote, dvc_remote="s3://relay-test/models")
    registry = ModelRegistry(settings)
    _, run = trained_run
    with pytest.raises(RelayError, match=r"cannot push digits v0.1.0 to the DVC remote s3://relay-test/models "
                                         r"\(endpoint http://127\.0\.0\.1:9\): the endpoint is unreachable: "
                                         r".*; nothing was registered"):
        registry.register("digits", _artifacts(run.optimized_model, gate_dir), {})
    assert git(["tag", "--list"], registry.path) == "" and registry.versions("digits") == []
    assert git(["rev-parse", "HEAD"], registry.path) == _remote_head(remote)


def test_registering_the_same_run_again_returns_its_version(registry_settings, trained_run, gate_dir):
    """An Airflow retry of the register step must not make a second version."""
    _, run = trained_run
    registry = ModelRegistry(registry_settings)
    build = _artifacts(run.optimized_model, gate_dir)
    first = registry.register("digits", build, {"run_id": "airflow-run-1"})
    again = registry.register("digits", build, {"run_id": "airflow-run-1"})
    assert (first.version, first.reused) == ("v0.1.0", False)
    assert (again.version, again.tag, again.commit, again.reused) == ("v0.1.0", first.tag, first.commit, True)
    assert [row["version"] for row in registry.versions("digits")] == ["v0.1.0"]


def test_the_dvc_remote_is_committed_and_artifacts_carry_their_sha256(registry_settings, trained_run, gate_dir):
    import hashlib

    _, run = trained_run
    registry = ModelRegistry(registry_settings)
    registry.register("digits", _artifacts(run.optimized_model, gate_dir), {})
    committed = git(["show", "HEAD:.dvc/config"], registry.path)
    assert f"url = {registry_settings.dvc_remote}" in committed and "remote = relay" in committed
    assert registry.dvc_remote() == registry_settings.dvc_remote
    digests = registry.model_info("digits", "v0.1.0")["sha256"]
    onnx = run.optimized_model.read_bytes()
    assert digests["model.onnx"] == hashlib.sha256(onnx).hexdigest()
    assert set(digests) == {"model.onnx", "model.mar", "gate.json", "gate.md"}
