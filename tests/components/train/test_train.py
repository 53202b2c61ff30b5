"""Model tests: the PyTorch path trains, logs, is reproducible, and uses mixed precision."""

import json

import pytest
import torch

from components.models.architecture import Architecture
from components.models.torch_cnn import build_torch_model
from components.frameworks import load_predictor, train_model
from components.train import torch_train


def test_architecture_matches_the_spec(digits_spec):
    arch = Architecture.from_spec(digits_spec)
    model = build_torch_model(arch)
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    convs = [m for m in model if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == digits_spec.model.conv_channels == [32]


def test_trained_run_learns_and_writes_metrics_and_dvclive(trained_run):
    spec, run = trained_run
    metrics = json.loads(run.metrics.read_text())
    assert metrics["framework"] == "pytorch" and metrics["precision"] == "mixed"
    assert metrics["test_accuracy"] > 0.8  # ten classes: chance is 0.1
    dvclive = run.train / "dvclive"
    assert (dvclive / "metrics.json").is_file()
    for series in ("train/loss", "train/accuracy", "val/loss", "val/accuracy"):
        logged = (dvclive / "plots" / "metrics" / f"{series}.tsv").read_text().splitlines()
        assert len(logged) == spec.training.epochs + 1  # header + one row per epoch
    assert 1 <= metrics["best_epoch"] <= spec.training.epochs and metrics["val_accuracy"] > 0.8
    per_class = json.loads((run.train / "per_class.json").read_text())
    assert sum(map(sum, per_class["confusion_matrix"])) == metrics["test_images"]
    for plot in ("confusion_matrix.png", "per_class.png"):
        assert (run.train / plot).read_bytes().startswith(b"\x89PNG")
    assert not run.checkpoints.exists()  # removed once the model is published


def test_training_is_deterministic_for_a_seed(trained_run, tmp_path):
    spec, run = trained_run
    short = spec.model_copy(update={"training": spec.training.model_copy(update={"epochs": 2})})
    train_model(short, run.data, tmp_path / "a")
    train_model(short, run.data, tmp_path / "b")
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_mixed_precision_autocasts_to_bfloat16_on_cpu(trained_run, monkeypatch, tmp_path):
    spec, run = trained_run
    seen = []
    original = torch_train._autocast

    def spy(device, precision):
        context = original(device, precision)
        seen.append((precision, getattr(context, "fast_dtype", None)))
        return context

    monkeypatch.setattr(torch_train, "_autocast", spy)
    short = spec.model_copy(update={"training": spec.training.model_copy(update={"epochs": 1})})
    train_model(short, run.data, tmp_path / "mixed")
    assert ("mixed", torch.bfloat16) in seen and {dtype for p, dtype in seen if p == "mixed"} == {torch.bfloat16}
    assert ("fp32", None) in seen  # the test split is scored in fp32, as the gate scores it


def test_mixed_precision_on_a_cpu_without_bf16_says_fp32_is_faster(monkeypatch):
    from components import machine
    from components.train.common import precision_note

    monkeypatch.setattr(machine, "cpu_has_bf16", lambda: False)
    note = precision_note("mixed", on_gpu=False)
    assert "without bf16 instructions" in note and "set training.precision: fp32" in note
    assert precision_note("fp32", on_gpu=False) is None and precision_note("mixed", on_gpu=True) is None
    monkeypatch.setattr(machine, "cpu_has_bf16", lambda: True)
    assert precision_note("mixed", on_gpu=False) is None


def test_the_trained_run_records_whether_its_precision_suits_this_cpu(trained_run):
    from components.machine import cpu_has_bf16

    metrics = json.loads(trained_run[1].metrics.read_text())
    assert (metrics["precision_note"] is None) == cpu_has_bf16()  # mixed on a CPU: a note where bf16 is emulated


def test_predictor_reloads_the_trained_model(trained_run):
    spec, run = trained_run
    from components.data.dataset import load_split

    images, labels, _ = load_split(run.data, "test", spec.dataset.classes)
    logits = load_predictor(run.train)(images)
    accuracy = (logits.argmax(1) == labels).mean()
    assert accuracy == pytest.approx(json.loads(run.metrics.read_text())["test_accuracy"])


def test_schedules_warm_up_then_follow_their_shape(digits_spec):
    from components.train.common import learning_rate

    cfg = digits_spec.training.model_copy(update={"learning_rate": 0.1, "warmup_epochs": 1, "schedule": "cosine"})
    rates = [learning_rate(cfg, step, 100, 10) for step in range(100)]
    assert rates[0] == pytest.approx(0.01) and rates[9] == pytest.approx(0.1)  # linear warm-up over one epoch
    assert rates[10] == pytest.approx(0.1) and rates[-1] < 0.001 and rates == sorted(rates[:10]) + rates[10:]
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    cycle = [learning_rate(cfg.model_copy(update={"schedule": "onecycle", "warmup_epochs": 0}), s, 100, 10)
             for s in range(100)]
    assert cycle[0] == pytest.approx(0.004) and max(cycle) == pytest.approx(0.1) and cycle.index(max(cycle)) == 30
    assert cycle[-1] < 1e-4


def test_balanced_class_weights_undo_imbalance():
    import numpy as np

    from components.train.loader import class_weights

    labels = np.array([0] * 90 + [1] * 10)
    weights = class_weights(labels, 2, "balanced")
    assert weights[0] * 90 == pytest.approx(weights[1] * 10) and class_weights(labels, 2, "none").tolist() == [1, 1]


def test_augmentation_flips_crops_and_jitters(digits_spec):
    from components.spec import AugmentSpec

    images = torch.zeros(64, 3, 8, 8)
    images[:, :, :, :4] = 1.0  # left half white
    generator = torch.Generator().manual_seed(0)
    flipped = torch_train.augment(images, AugmentSpec(horizontal_flip=True), generator)
    mirrored = (flipped[:, :, :, 4:].mean(dim=(1, 2, 3)) > 0.9)
    assert 10 < int(mirrored.sum()) < 54  # about half the batch is mirrored, exactly
    assert torch.equal(flipped[~mirrored], images[~mirrored])
    cropped = torch_train.augment(images, AugmentSpec(random_resized_crop=True), generator)
    assert not torch.equal(cropped, images) and cropped.shape == images.shape
    jittered = torch_train.augment(images, AugmentSpec(color_jitter=True), generator)
    assert jittered.min() >= 0 and jittered.max() <= 1 and not torch.equal(jittered, images)


def test_killed_training_resumes_from_its_last_checkpoint(trained_run, tmp_path):
    """SIGKILL once two epochs are checkpointed (mid-way through a later one); the same step run again
    resumes after its last checkpoint and ends with exactly the weights of an uninterrupted training."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import PROJECT

    spec, run = trained_run
    four = spec.model_copy(update={"training": spec.training.model_copy(update={"epochs": 30})})
    train_model(four, run.data, tmp_path / "straight" / "train")
    target = tmp_path / "killed" / "train"
    script = ("import json, sys; from components.spec import parse_spec; from components.frameworks import train_model; "
              "from pathlib import Path; spec = parse_spec(json.loads(sys.argv[1])); "
              "train_model(spec, Path(sys.argv[2]), Path(sys.argv[3]))")
    args = [sys.executable, "-c", script, four.model_dump_json(), str(run.data), str(target)]
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = target.parent / "train.checkpoints" / "state.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text())["epochs_done"] >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    assert proc.wait(30) == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not target.exists()  # nothing half-published
    done = json.loads(state.read_text())["epochs_done"]
    # A kill can also land while dvclive writes its summary, or after it logged an epoch no checkpoint committed.
    live = state.parent / "dvclive"
    (live / "metrics.json").write_text("")
    loss = live / "plots" / "metrics" / "train" / "loss.tsv"
    loss.write_text(loss.read_text() + "0\t99\t9.99\n")
    train_model(four, run.data, target)
    metrics = json.loads((target / "metrics.json").read_text())
    assert 2 <= done < 30 and metrics["resumed_from_epoch"] == done and metrics["epochs"] == 30
    assert [row["epoch"] for row in metrics["history"]] == list(range(1, 31))
    logged = (target / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert len(logged) == 31 and "9.99" not in "".join(logged)  # header + the 30 epochs the checkpoints hold
    assert [float(line.split("\t")[-1]) for line in logged[1:]] == pytest.approx(
        [row["train_loss"] for row in metrics["history"]])
    ours = torch.load(target / "model.pt", weights_only=True)
    straight = torch.load(tmp_path / "straight" / "train" / "model.pt", weights_only=True)
    assert all(torch.equal(ours[key], straight[key]) for key in ours)


def test_fine_tunes_from_a_local_checkpoint(trained_run, tmp_path):
    spec, run = trained_run
    checkpoint = tmp_path / "pretrained.pt"
    torch.save(torch.load(run.train / "model.pt", weights_only=True), checkpoint)
    tuned = spec.model_copy(update={
        "model": spec.model.model_copy(update={"init": "checkpoint", "checkpoint": str(checkpoint)}),
        "training": spec.training.model_copy(update={"epochs": 1, "learning_rate": 1e-4})})
    train_model(tuned, run.data, tmp_path / "tuned")
    metrics = json.loads((tmp_path / "tuned" / "metrics.json").read_text())
    assert metrics["fine_tune"] == {"loaded": 6, "skipped": []} and metrics["fine_tuned_from"] == str(checkpoint)
    assert metrics["history"][0]["val_accuracy"] > 0.8  # one small-LR epoch from the checkpoint, not from scratch


def test_missing_checkpoint_is_one_clear_error(trained_run, tmp_path):
    from components.errors import RelayError

    spec, run = trained_run
    tuned = spec.model_copy(update={"model": spec.model.model_copy(
        update={"init": "checkpoint", "checkpoint": str(tmp_path / "none.pt")})})
    with pytest.raises(RelayError, match=r"model.checkpoint: .*none.pt does not exist"):
        train_model(tuned, run.data, tmp_path / "out")
    assert not (tmp_path / "out").exists()
