"""GitOps promotion and rollback against a bare git remote: GTO tags, commits and pinned overlays."""

import subprocess
from pathlib import Path

import pytest

from components.errors import RelayError
from components.gitops.promote import overlay_file, pinned_version, pinned_version_text, promote, rollback
from components.registry.model_registry import ModelRegistry
from components.versioning import git
from tests.conftest import make_settings, needs_kubectl, write_gate_report

pytestmark = pytest.mark.slow  # builds registries with GTO and git remotes, renders kustomize


@pytest.fixture
def registry(tmp_path):
    remote = tmp_path / "gitops.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    settings = make_settings(tmp_path / "home", registry_remote=str(remote))
    registry = ModelRegistry(settings)
    for index, passed in enumerate((True, True, False)):
        gate = write_gate_report(tmp_path / f"gate-{index}", passed)

        def build(version, dest, gate=gate):
            (dest / "model.onnx").write_bytes(b"onnx " + version.encode())
            for report in gate.iterdir():
                (dest / report.name).write_bytes(report.read_bytes())

        registry.register("digits", build, {})
    return registry


def _remote_pin(registry, env):
    text = git(["show", f"main:k8s/digits/overlays/{env}/kustomization.yaml"], Path(registry.remote))
    return pinned_version_text(text)


def test_promotion_path_refusals_and_rollback(registry):
    settings = registry.settings
    with pytest.raises(RelayError, match="never went to staging"):
        promote("digits", "v0.1.0", "production", settings)
    with pytest.raises(RelayError, match="precision gate did not pass"):
        promote("digits", "v0.3.0", "staging", settings)
    with pytest.raises(RelayError, match="no registered version v9.9.9"):
        promote("digits", "v9.9.9", "staging", settings)
    with pytest.raises(RelayError, match="nothing to roll back"):
        rollback("digits", "production", settings)

    staged = promote("digits", "v0.1.0", "staging", settings)
    assert staged.previous is None and "Argo CD applies it" in staged.live
    assert _remote_pin(registry, "staging") == "v0.1.0"
    promote("digits", "v0.1.0", "production", settings)
    promote("digits", "v0.2.0", "staging", settings)
    live = promote("digits", "v0.2.0", "production", settings)
    assert live.previous == "v0.1.0" and _remote_pin(registry, "production") == "v0.2.0"
    assert registry.stage_version("digits", "production") == "v0.2.0"

    back = rollback("digits", "production", settings)
    assert (back.previous, back.version) == ("v0.2.0", "v0.1.0")
    assert _remote_pin(registry, "production") == "v0.1.0"
    assert registry.stage_version("digits", "production") == "v0.1.0"
    history = git(["log", "--format=%s", "main", "--", "k8s/digits/overlays/production"], Path(registry.remote))
    assert history.splitlines() == ["rollback digits in production to v0.1.0 (from v0.2.0)",
                                    "promote digits v0.2.0 to production", "promote digits v0.1.0 to production"]
    remote_tags = git(["tag", "--list", "digits#production#*"], Path(registry.remote)).split()
    assert len(remote_tags) == 3
    assert pinned_version(overlay_file(registry.path, "digits", "staging")) == "v0.2.0"


@needs_kubectl
def test_promoted_overlay_renders_with_kustomize(registry):
    promote("digits", "v0.1.0", "staging", registry.settings)
    rendered = subprocess.run(["kubectl", "kustomize", str(registry.path / "k8s" / "digits" / "overlays" / "staging")],
                              capture_output=True, text=True, check=True).stdout
    assert "MODEL_VERSION: v0.1.0" in rendered and "MODEL_TASK: digits" in rendered
    assert f"REGISTRY_URL: {registry.remote}" in rendered and "namespace: relay-staging" in rendered


def test_unknown_environment(registry):
    with pytest.raises(RelayError, match="unknown environment 'qa'"):
        promote("digits", "v0.1.0", "qa", registry.settings)


def test_kubernetes_deploy_target_pins_the_new_version_in_staging(registry, tmp_path):
    import json

    from components.run_files import RunDir
    from components.spec import load_spec
    from pipelines.steps import run_step

    spec = load_spec("digits")
    spec = spec.model_copy(update={"deploy": spec.deploy.model_copy(update={"target": "kubernetes"})})
    run = RunDir(tmp_path / "run")
    run.register.mkdir(parents=True)
    run.spec_file.write_text(json.dumps(spec.model_dump(mode="json")))
    run.registration.write_text(json.dumps({"version": "v0.2.0", "mar": "unused"}))
    summary = run_step("deploy", run, registry.settings)
    assert summary["env"] == "staging" and summary["version"] == "v0.2.0"
    assert _remote_pin(registry, "staging") == "v0.2.0" and "Argo CD" in summary["live"]


def test_rolling_back_twice_never_brings_the_bad_version_back(registry):
    settings = registry.settings
    for version in ("v0.1.0", "v0.2.0"):
        promote("digits", version, "staging", settings)
        promote("digits", version, "production", settings)
    assert rollback("digits", "production", settings).version == "v0.1.0"
    with pytest.raises(RelayError, match=r"nothing to roll back to: production runs digits v0.1.0, and every earlier "
                                         r"version was rolled back from \(v0.2.0\); promote one by name"):
        rollback("digits", "production", settings)
    assert _remote_pin(registry, "production") == "v0.1.0"
    trailer = git(["log", "-1", "--format=%(trailers:key=Relay-Rolled-Back-From,valueonly)", "main"],
                  Path(registry.remote))
    assert trailer.strip() == "v0.2.0"

    again = promote("digits", "0.2.0", "production", settings)  # by name (either form): allowed
    assert (again.previous, again.version) == ("v0.1.0", "v0.2.0")
    assert rollback("digits", "production", settings).version == "v0.1.0"
