"""The small CNN in Keras 3, the same architecture as ``torch_cnn``.

Its input is NCHW like the PyTorch model's (named ``image``, so the SavedModel's serving signature
keeps a stable key); a Permute turns it into the NHWC layout TensorFlow's CPU kernels need. So both
frameworks' models, their ONNX exports and the serving handler take the same tensor.
"""

from __future__ import annotations

import keras

from components.models.architecture import Architecture
from components.onnx_runtime import INPUT_NAME, OUTPUT_NAME


def build_keras_model(arch: Architecture, dtype_policy: str | None = None) -> keras.Model:
    """Build the Keras model for ``arch`` under ``dtype_policy`` (default: the global policy).

    The logits layer is always float32, as mixed precision requires for a numerically stable loss.
    """
    policy = dtype_policy or keras.mixed_precision.global_policy().name
    inputs = keras.Input(shape=(1, arch.height, arch.width), name=INPUT_NAME, dtype="float32")
    x = keras.layers.Permute((2, 3, 1), dtype=policy)(inputs)
    for channels in arch.conv_channels:
        x = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", dtype=policy)(x)
    x = keras.layers.MaxPooling2D(2, dtype=policy)(x)
    x = keras.layers.Flatten(dtype=policy)(x)
    x = keras.layers.Dense(arch.hidden_units, activation="relu", dtype=policy)(x)
    outputs = keras.layers.Dense(arch.num_classes, dtype="float32", name=OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def as_float32(model: keras.Model, arch: Architecture) -> keras.Model:
    """The same model rebuilt under the float32 policy with ``model``'s weights.

    ONNX Runtime has no bf16 Conv kernel and TF Serving CPUs rarely have fast bf16, so exports use this.
    """
    copy = build_keras_model(arch, "float32")
    copy.set_weights([weight.astype("float32") for weight in model.get_weights()])
    return copy
