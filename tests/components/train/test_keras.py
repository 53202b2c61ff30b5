"""Model tests for the TensorFlow path: same architecture, mixed precision, SavedModel, ONNX export."""

import json

import numpy as np

from components.data.dataset import load_split
from components.models.architecture import Architecture
from components.onnx_runtime import onnx_predictor
from components.frameworks import load_predictor, optimize_model


def test_same_architecture_as_pytorch(digits_spec):
    from components.models.keras_cnn import build_keras_model
    from components.models.torch_cnn import build_torch_model

    arch = Architecture.from_spec(digits_spec)
    keras_model, torch_model = build_keras_model(arch, "float32"), build_torch_model(arch)
    assert keras_model.count_params() == sum(p.numel() for p in torch_model.parameters())
    assert keras_model.input_shape == (None, 1, 8, 8) and keras_model.output_shape == (None, 10)
    assert keras_model.inputs[0].name == "image"


def test_keras_trains_with_mixed_bfloat16_and_logs_like_pytorch(keras_run):
    spec, data, run = keras_run
    metrics = json.loads(run.metrics.read_text())
    assert metrics["framework"] == "tensorflow" and metrics["policy"] == "mixed_bfloat16"
    assert metrics["test_accuracy"] > 0.8
    rows = (run.train / "dvclive" / "plots" / "metrics" / "val" / "accuracy.tsv").read_text().splitlines()
    assert len(rows) == spec.training.epochs + 1


def test_saved_model_reload_is_identical_and_keyed_image(keras_run):
    import tensorflow as tf

    spec, data, run = keras_run
    assert json.loads(run.metrics.read_text())["saved_model_reload_max_abs_diff"] <= 1e-5
    serving = tf.saved_model.load(str(run.train / "saved_model")).signatures["serving_default"]
    assert list(serving.structured_input_signature[1]) == ["image"]
    from components.train.keras_train import load_float32_model

    images, _, _ = load_split(data, "test", spec.dataset.classes)
    reloaded = next(iter(serving(image=tf.constant(images)).values())).numpy()
    # The SavedModel holds the trained weights in float32 (the bf16 policy is for training only).
    assert np.array_equal(reloaded, np.asarray(load_float32_model(run.train)(images, training=False)))
    assert (reloaded.argmax(1) == load_predictor(run.train)(images).argmax(1)).mean() >= 0.99


def test_bf16_model_exports_to_fp32_onnx_within_tolerance(keras_run):
    import onnx

    from components.train.keras_train import load_float32_model

    spec, data, run = keras_run
    model_path = run.optimized_model
    graph = onnx.load(str(model_path)).graph
    types = {t.data_type for t in graph.initializer}
    assert onnx.TensorProto.FLOAT in types and onnx.TensorProto.BFLOAT16 not in types  # nothing for ORT to reject
    images, _, _ = load_split(data, "train", spec.dataset.classes)
    fp32, onnx_model = load_float32_model(run.train), onnx_predictor(model_path)
    for batch in (images[:1], images[:64]):
        assert np.abs(np.asarray(fp32(batch, training=False)) - onnx_model(batch)).max() < 1e-4
    # The predictor the gate compares with is that float32 model, not the bf16 one it was trained as.
    assert np.array_equal(load_predictor(run.train)(images[:64]), np.asarray(fp32(images[:64], training=False)))


def test_tftrt_is_skipped_with_its_reason_here(keras_run):
    spec, data, run = keras_run
    info = json.loads(run.optimize_info.read_text())
    assert info["tensorrt"] == {"skipped": "TensorFlow 2.21.0 here is a CPU-only build (no CUDA, no TensorRT)"}


def test_tensorflow_int8_quantization(keras_run, tmp_path):
    spec, data, run = keras_run
    int8 = spec.model_copy(update={"optimize": spec.optimize.model_copy(update={"quantize": "int8"})})
    result = optimize_model(int8, run.train, data, tmp_path / "int8")
    images, _, _ = load_split(data, "test", spec.dataset.classes)
    agreement = onnx_predictor(result.model)(images).argmax(1) == load_predictor(run.train)(images).argmax(1)
    assert result.quantized and agreement.mean() >= 0.9


def test_interrupted_keras_training_resumes_to_the_same_weights(keras_run, tmp_path, monkeypatch):
    """Interrupted once epoch 2 is checkpointed, the rerun resumes at epoch 3 (weights and optimizer from
    the .keras checkpoint) and ends where an uninterrupted training ends."""
    from components.frameworks import train_model
    from components.train import common

    spec, data, _ = keras_run
    three = spec.model_copy(update={"training": spec.training.model_copy(update={"epochs": 3})})
    train_model(three, data, tmp_path / "straight" / "train")
    commit = common.Checkpoints.save_state

    def interrupt_after_two(self, state):
        commit(self, state)
        if state.epochs_done == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(common.Checkpoints, "save_state", interrupt_after_two)
    try:
        train_model(three, data, tmp_path / "resumed" / "train")
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(common.Checkpoints, "save_state", commit)
    assert not (tmp_path / "resumed" / "train").exists()
    train_model(three, data, tmp_path / "resumed" / "train")
    metrics = json.loads((tmp_path / "resumed" / "train" / "metrics.json").read_text())
    straight = json.loads((tmp_path / "straight" / "train" / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == 2 and [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    def learning(history):  # the metrics per epoch; the elapsed times of two trainings differ, of course
        return [{k: v for k, v in row.items() if k != "elapsed_seconds"} for row in history]

    assert learning(metrics["history"]) == learning(straight["history"])
    images, _, _ = load_split(data, "test", spec.dataset.classes)
    assert np.array_equal(load_predictor(tmp_path / "resumed" / "train")(images),
                          load_predictor(tmp_path / "straight" / "train")(images))


def test_keras_fine_tunes_from_a_weights_file(keras_run, tmp_path):
    import keras

    from components.frameworks import train_model

    spec, data, run = keras_run
    weights = tmp_path / "pretrained.weights.h5"
    keras.models.load_model(run.train / "model.keras").save_weights(weights)
    tuned = spec.model_copy(update={
        "model": spec.model.model_copy(update={"init": "checkpoint", "checkpoint": str(weights)}),
        "training": spec.training.model_copy(update={"epochs": 1, "learning_rate": 1e-4})})
    train_model(tuned, data, tmp_path / "tuned")
    metrics = json.loads((tmp_path / "tuned" / "metrics.json").read_text())
    assert metrics["fine_tune"]["loaded"] == 6 and metrics["fine_tune"]["skipped"] == []
    assert metrics["history"][0]["val_accuracy"] > 0.8
