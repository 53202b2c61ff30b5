"""What a serving pod's initContainer does, run here against a real registry repo and DVC remote:
fetch the pinned version's artifacts, and for TF Serving the stable version labelled beside a canary."""

import subprocess

import pytest

from components.deploy.fetch import fetch_model, version_from_servable
from components.deploy.tfserving import parse_models_config, servable_version, write_tfserving_artifacts
from components.errors import RelayError
from components.registry import ModelRegistry
from tests.conftest import make_settings, needs_kubectl, write_gate_report


def test_servable_version_round_trip():
    for version in ("v0.1.0", "v1.2.3", "v12.0.999"):
        assert version_from_servable(servable_version(version)) == version


@pytest.fixture
def tf_registry(tmp_path, keras_run):
    _, _, run = keras_run
    settings = make_settings(tmp_path / "home")
    registry = ModelRegistry(settings)
    gate = write_gate_report(tmp_path / "gate")

    def build(version, dest):
        (dest / "model.mar").write_bytes(b"mar " + version.encode())
        for report in gate.iterdir():
            (dest / report.name).write_bytes(report.read_bytes())
        write_tfserving_artifacts("digits", version, run / "train" / "saved_model", dest / "tfserving",
                                  registry.stage_version("digits", "production"))

    registry.register("digits", build, {"framework": "tensorflow"})
    registry.assign("digits", "v0.1.0", "production")
    registry.register("digits", build, {"framework": "tensorflow"})  # canary beside stable v0.1.0
    return registry


def test_torchserve_fetch_gets_the_pinned_mar(tf_registry, tmp_path):
    (mar,) = fetch_model(str(tf_registry.path), "digits", "v0.2.0", tmp_path / "store")
    assert mar == tmp_path / "store" / "digits.mar" and mar.read_bytes() == b"mar v0.2.0"


def test_tfserving_fetch_brings_the_stable_version_beside_the_canary(tf_registry, tmp_path):
    fetch_model(str(tf_registry.path), "digits", "v0.2.0", tmp_path / "models", tfserving=True)
    base = tmp_path / "models" / "tfserving"
    (config,) = parse_models_config((base / "models.config").read_text()).model_config_list.config
    assert dict(config.version_labels) == {"stable": 1000, "canary": 2000}
    for number in (1000, 2000):
        assert (base / "digits" / str(number) / "saved_model.pb").is_file()


def test_unknown_version_is_one_clear_error(tf_registry, tmp_path):
    with pytest.raises(RelayError, match="dvc get models/digits/artifacts/model.mar at digits@v9.0.0"):
        fetch_model(str(tf_registry.path), "digits", "v9.0.0", tmp_path / "store")


@needs_kubectl
def test_promoting_a_tensorflow_version_adds_tf_serving_to_the_overlay(tf_registry):
    from components.promote import promote

    promote("digits", "v0.2.0", "staging", tf_registry.settings)
    overlay = tf_registry.path / "k8s" / "digits" / "overlays" / "staging"
    rendered = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True,
                              check=True).stdout
    assert "name: tfserving" in rendered and "name: torchserve" in rendered and "MODEL_VERSION: v0.2.0" in rendered
