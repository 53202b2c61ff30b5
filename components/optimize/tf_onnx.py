"""Keras → ONNX. ONNX Runtime has no bf16 Conv kernel, so a model trained under a mixed policy is
first rebuilt under float32 and given the trained weights."""

from __future__ import annotations

from pathlib import Path

from components.spec import TaskSpec


def export_onnx(train_dir: Path, target: Path, spec: TaskSpec) -> Path:
    """Export the trained Keras model to ``target`` with tf2onnx (opset 18, dynamic batch)."""
    import tensorflow as tf
    import tf2onnx

    from components.onnx_runtime import INPUT_NAME

    from components.models.architecture import Architecture

    from components.train.keras_train import load_float32_model

    model = load_float32_model(train_dir)
    arch = Architecture.load(train_dir)
    signature = [tf.TensorSpec((None, arch.channels, arch.height, arch.width), tf.float32,
                               name=INPUT_NAME)]
    function = tf.function(lambda image: model(image, training=False), input_signature=signature)
    tf2onnx.convert.from_function(function, input_signature=signature, opset=18, output_path=str(target))
    return target
