"""Deploying to the local TorchServe: new version beside the old, smoke test, then default."""

import pytest
import torch

from components.deploy.local import deploy_local
from components.deploy.torchserve import TorchServe
from components.errors import ServingError
from components.models.architecture import Architecture
from components.models.torch_cnn import build_torch_model
from components.optimize.torch_onnx import export_onnx
from components.package import build_mar


@pytest.fixture
def served(settings):
    server = TorchServe(settings)
    yield server
    server.stop()


@pytest.fixture
def spec(trained_run):
    spec, _ = trained_run
    return spec.model_copy(update={"gate": spec.gate.model_copy(update={"min_accuracy": 0.7})})


def _untrained_onnx(spec, tmp_path):
    """An ONNX model with random weights: it cannot pass a smoke test."""
    train_dir = tmp_path / "untrained"
    train_dir.mkdir()
    arch = Architecture.from_spec(spec)
    torch.manual_seed(123)
    torch.save(build_torch_model(arch).state_dict(), train_dir / "model.pt")
    arch.save(train_dir)
    return export_onnx(train_dir, tmp_path / "untrained.onnx", spec)


def test_new_version_goes_live_beside_the_old_one(spec, trained_run, served, settings, tmp_path):
    _, run = trained_run
    model = run / "optimize" / "model.onnx"
    first = deploy_local(spec, "v0.1.0", build_mar(spec.name, "v0.1.0", model, spec.dataset.classes,
                                                    tmp_path / "a.mar"), run / "data", settings)
    assert first.previous_default is None and first.smoke_accuracy >= 0.7
    second = deploy_local(spec, "v0.2.0", build_mar(spec.name, "v0.2.0", model, spec.dataset.classes,
                                                     tmp_path / "b.mar"), run / "data", settings)
    assert second.previous_default == "0.1.0"
    assert served.default_version("digits") == "0.2.0"
    assert {m["modelVersion"] for m in served.describe("digits")} == {"0.1.0", "0.2.0"}  # rollback target kept

    from components.data import load_split

    _, labels, paths = load_split(run / "data", "test", spec.dataset.classes)
    answers = [served.predict("digits", p.read_bytes())["class"] for p in paths[:10]]
    assert sum(a == spec.dataset.classes[y] for a, y in zip(answers, labels[:10])) >= 7


def test_failed_smoke_test_leaves_the_default_untouched(spec, trained_run, served, settings, tmp_path):
    _, run = trained_run
    good = build_mar(spec.name, "v0.1.0", run / "optimize" / "model.onnx", spec.dataset.classes, tmp_path / "a.mar")
    deploy_local(spec, "v0.1.0", good, run / "data", settings)
    bad = build_mar(spec.name, "v0.2.0", _untrained_onnx(spec, tmp_path), spec.dataset.classes, tmp_path / "b.mar")
    with pytest.raises(ServingError, match="smoke test of digits v0.2.0 .* the default stays 0.1.0"):
        deploy_local(spec, "v0.2.0", bad, run / "data", settings)
    assert served.default_version("digits") == "0.1.0"
    assert {m["modelVersion"] for m in served.describe("digits")} == {"0.1.0"}
