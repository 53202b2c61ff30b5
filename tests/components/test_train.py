"""Model tests: the PyTorch path trains, logs, is reproducible, and uses mixed precision."""

import json

import pytest
import torch

from components.models.architecture import Architecture
from components.models.torch_cnn import build_torch_model
from components.train import load_predictor, train_model
from components.train import torch_train


def test_architecture_matches_the_spec(digits_spec):
    arch = Architecture.from_spec(digits_spec)
    model = build_torch_model(arch)
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    convs = [m for m in model if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == digits_spec.model.conv_channels == [32]


def test_trained_run_learns_and_writes_metrics_and_dvclive(trained_run):
    spec, run = trained_run
    metrics = json.loads((run / "train" / "metrics.json").read_text())
    assert metrics["framework"] == "pytorch" and metrics["precision"] == "mixed"
    assert metrics["test_accuracy"] > 0.8  # ten classes: chance is 0.1
    dvclive = run / "train" / "dvclive"
    assert (dvclive / "metrics.json").is_file()
    logged = (dvclive / "plots" / "metrics" / "test" / "accuracy.tsv").read_text().splitlines()
    assert len(logged) == spec.training.epochs + 1  # header + one row per epoch


def test_training_is_deterministic_for_a_seed(trained_run, tmp_path):
    spec, run = trained_run
    short = spec.model_copy(update={"training": spec.training.model_copy(update={"epochs": 2})})
    train_model(short, run / "data", tmp_path / "a")
    train_model(short, run / "data", tmp_path / "b")
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_mixed_precision_autocasts_to_bfloat16_on_cpu(trained_run, monkeypatch, tmp_path):
    spec, run = trained_run
    seen = []
    original = torch_train._autocast

    def spy(device, precision):
        context = original(device, precision)
        seen.append(getattr(context, "fast_dtype", None))
        return context

    monkeypatch.setattr(torch_train, "_autocast", spy)
    short = spec.model_copy(update={"training": spec.training.model_copy(update={"epochs": 1})})
    train_model(short, run / "data", tmp_path / "mixed")
    assert seen and set(seen) == {torch.bfloat16}


def test_predictor_reloads_the_trained_model(trained_run):
    spec, run = trained_run
    from components.data import load_split

    images, labels, _ = load_split(run / "data", "test", spec.dataset.classes)
    logits = load_predictor(run / "train")(images)
    accuracy = (logits.argmax(1) == labels).mean()
    assert accuracy == pytest.approx(json.loads((run / "train" / "metrics.json").read_text())["test_accuracy"])
