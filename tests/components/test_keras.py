"""Model tests for the TensorFlow path: same architecture, mixed precision, SavedModel, ONNX export."""

import json

import numpy as np

from components.data import load_split
from components.models.architecture import Architecture
from components.onnx_runtime import onnx_predictor
from components.optimize import optimize_model
from components.train import load_predictor


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
    metrics = json.loads((run / "train" / "metrics.json").read_text())
    assert metrics["framework"] == "tensorflow" and metrics["policy"] == "mixed_bfloat16"
    assert metrics["test_accuracy"] > 0.8
    rows = (run / "train" / "dvclive" / "plots" / "metrics" / "val" / "accuracy.tsv").read_text().splitlines()
    assert len(rows) == spec.training.epochs + 1


def test_saved_model_reload_is_identical_and_keyed_image(keras_run):
    import tensorflow as tf

    spec, data, run = keras_run
    assert json.loads((run / "train" / "metrics.json").read_text())["saved_model_reload_max_abs_diff"] == 0.0
    serving = tf.saved_model.load(str(run / "train" / "saved_model")).signatures["serving_default"]
    assert list(serving.structured_input_signature[1]) == ["image"]
    from components.optimize.tf_onnx import float32_copy

    images, _, _ = load_split(data, "test", spec.dataset.classes)
    reloaded = next(iter(serving(image=tf.constant(images)).values())).numpy()
    # The SavedModel holds the trained weights in float32 (the bf16 policy is for training only).
    assert np.array_equal(reloaded, np.asarray(float32_copy(run / "train")(images, training=False)))
    assert (reloaded.argmax(1) == load_predictor(run / "train")(images).argmax(1)).mean() >= 0.99


def test_bf16_model_exports_to_fp32_onnx_within_tolerance(keras_run):
    import onnx

    from components.optimize.tf_onnx import float32_copy

    spec, data, run = keras_run
    model_path = run / "optimize" / "model.onnx"
    graph = onnx.load(str(model_path)).graph
    types = {t.data_type for t in graph.initializer}
    assert onnx.TensorProto.FLOAT in types and onnx.TensorProto.BFLOAT16 not in types  # nothing for ORT to reject
    images, _, _ = load_split(data, "train", spec.dataset.classes)
    fp32, onnx_model = float32_copy(run / "train"), onnx_predictor(model_path)
    for batch in (images[:1], images[:64]):
        assert np.abs(np.asarray(fp32(batch, training=False)) - onnx_model(batch)).max() < 1e-4
    # Against the bf16 model itself only rounding differs: predictions agree.
    bf16 = load_predictor(run / "train")(images)
    assert (bf16.argmax(1) == onnx_model(images).argmax(1)).mean() >= 0.99


def test_tftrt_is_skipped_with_its_reason_here(keras_run):
    spec, data, run = keras_run
    info = json.loads((run / "optimize" / "optimize.json").read_text())
    assert info["tensorrt"] == {"skipped": "TensorFlow 2.21.0 here is a CPU-only build (no CUDA, no TensorRT)"}


def test_tensorflow_int8_quantization(keras_run, tmp_path):
    spec, data, run = keras_run
    int8 = spec.model_copy(update={"optimize": spec.optimize.model_copy(update={"quantize": "int8"})})
    result = optimize_model(int8, run / "train", data, tmp_path / "int8")
    images, _, _ = load_split(data, "test", spec.dataset.classes)
    agreement = onnx_predictor(result.model)(images).argmax(1) == load_predictor(run / "train")(images).argmax(1)
    assert result.quantized and agreement.mean() >= 0.9
