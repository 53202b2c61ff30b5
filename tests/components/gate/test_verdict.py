import numpy as np
import pytest

from components.gate.verdict import Champion, evaluate_gate, write_gate
from components.spec import GateSpec

rng = np.random.default_rng(0)
IMAGES = rng.random((200, 1, 8, 8), dtype=np.float32)
WEIGHTS = rng.standard_normal((64, 10)).astype(np.float32)


def model(images):
    return images.reshape(len(images), -1) @ WEIGHTS


LABELS = model(IMAGES).argmax(1)  # the reference model is right on every image


def perturbed(fraction):
    """A model that gets ``fraction`` of the images wrong (a fixed, known set)."""
    wrong = np.arange(len(IMAGES)) < int(fraction * len(IMAGES))

    def predict(images):
        logits = model(images)
        if len(images) == len(IMAGES):
            logits[wrong] = np.roll(logits[wrong], 1, axis=1)
        return logits

    return predict


def slow(images):
    for _ in range(50):
        model(images)
    return model(images)


def checks(gate):
    return {c["name"]: c["passed"] for c in gate["checks"]}


THRESHOLDS = GateSpec(latency_runs=30)


def test_identical_models_pass_every_check():
    gate = evaluate_gate(THRESHOLDS, slow, model, IMAGES, LABELS)
    assert gate["passed"] and all(checks(gate).values())
    assert gate["metrics"]["agreement"] == 1.0 and gate["metrics"]["max_abs_logit_diff"] == 0.0


def test_accuracy_drop_over_threshold_fails():
    gate = evaluate_gate(THRESHOLDS, slow, perturbed(0.01), IMAGES, LABELS)  # 1 pp > 0.5 pp
    assert not gate["passed"]
    assert checks(gate)["accuracy_drop"] is False and checks(gate)["agreement"] is False
    assert gate["metrics"]["accuracy_drop_pp"] == pytest.approx(1.0)


def test_drop_within_threshold_passes():
    gate = evaluate_gate(GateSpec(latency_runs=30, min_agreement=0.99), slow, perturbed(0.005), IMAGES, LABELS)
    assert checks(gate)["accuracy_drop"] and gate["passed"]


def test_slower_optimized_model_fails_latency():
    gate = evaluate_gate(THRESHOLDS, model, slow, IMAGES, LABELS)
    assert checks(gate)["latency"] is False and not gate["passed"]


def test_accuracy_floor():
    gate = evaluate_gate(GateSpec(latency_runs=30, min_accuracy=0.99), perturbed(0.05), perturbed(0.05), IMAGES, LABELS)
    assert checks(gate)["accuracy_floor"] is False


def test_champion_check_uses_the_tolerance():
    worse = perturbed(0.005)  # 0.5 pp below the champion
    within = evaluate_gate(GateSpec(latency_runs=30, min_agreement=0.99), worse, worse, IMAGES, LABELS,
                           Champion("v0.1.0", model))
    assert checks(within)["champion"] and within["champion"] == {"version": "v0.1.0", "accuracy": 1.0, "role": "production"}
    beyond = evaluate_gate(GateSpec(latency_runs=30, champion_tolerance_pp=0.1), worse, worse, IMAGES, LABELS,
                           Champion("v0.1.0", model))
    assert checks(beyond)["champion"] is False and not beyond["passed"]


def test_without_champion_the_check_is_absent_and_said_so(tmp_path):
    gate = evaluate_gate(THRESHOLDS, slow, model, IMAGES, LABELS)
    assert "champion" not in checks(gate)
    result = write_gate("digits", gate, {"tensorrt": "skipped: not a TensorFlow model"}, tmp_path / "gate")
    report = (tmp_path / "gate" / "gate.md").read_text()
    assert result.passed and "PASS" in report and "none yet" in report and "skipped:" in report
    assert (tmp_path / "gate" / "gate.png").read_bytes()[:4] == b"\x89PNG"


def test_empty_heldout_set_is_refused():
    with pytest.raises(ValueError, match="held-out split is empty"):
        evaluate_gate(THRESHOLDS, model, model, IMAGES[:0], LABELS[:0])


def test_champion_and_challenger_side_by_side_per_class(tmp_path):
    """The challenger confuses the first 10 images (each predicted as the next class); the champion is exact."""
    from PIL import Image

    classes = [f"c{i}" for i in range(10)]
    challenger = perturbed(0.05)
    gate = evaluate_gate(GateSpec(latency_runs=10, min_agreement=0.0, max_accuracy_drop_pp=100), challenger,
                         challenger, IMAGES, LABELS, Champion("v0.3.0", model, "served default"), classes)
    comparison = gate["comparison"]
    mine, theirs = comparison["challenger"], comparison["champion"]
    assert theirs["version"] == "v0.3.0" and theirs["accuracy"] == 1.0 and mine["accuracy"] == pytest.approx(0.95)
    ours = np.array(mine["confusion_matrix"])
    assert ours.sum() == len(IMAGES) and np.trace(ours) == 190 and np.trace(np.array(theirs["confusion_matrix"])) == 200
    wrong = LABELS[:10]
    for label in set(wrong):
        missed = int((wrong == label).sum())
        row = mine["per_class"][classes[label]]
        assert row["recall"] == pytest.approx(1 - missed / row["support"])
        assert theirs["per_class"][classes[label]]["recall"] == 1.0
    write_gate("digits", gate, {}, tmp_path / "gate")
    report = (tmp_path / "gate" / "gate.md").read_text()
    assert "## Champion and challenger, per class" in report and "champion v0.3.0 recall" in report
    assert "| c0 |" in report and "champion_vs_challenger.png" in report
    assert Image.open(tmp_path / "gate" / "champion_vs_challenger.png").size[0] > 600
