"""Relay's models in Keras 3, built from the same ``Architecture`` as ``torch_cnn``, layer for layer.

The input is NCHW like the PyTorch model's (named ``image``, so the SavedModel's serving signature
keeps a stable key); a Permute turns it into the NHWC layout TensorFlow's CPU kernels need. So both
frameworks' models, their ONNX exports and the serving handler take the same tensor.

Equivalences with PyTorch: BatchNormalization uses PyTorch's epsilon (1e-5) and momentum (0.9 here is
0.1 there); stride-2 3x3 convs pad one pixel on all sides explicitly, as PyTorch does.
"""

from __future__ import annotations

import keras

from components.models.architecture import Architecture, InvertedResidual
from components.onnx_runtime import INPUT_NAME, OUTPUT_NAME


class _Builder:
    def __init__(self, policy: str):
        self.policy = policy

    def conv_bn(self, x, channels: int, kernel: int = 3, stride: int = 1, depthwise: bool = False,
                activation: str | None = "relu"):
        padding = "same"
        if stride > 1 and kernel > 1:
            x = keras.layers.ZeroPadding2D(kernel // 2, dtype=self.policy)(x)
            padding = "valid"
        if depthwise:
            x = keras.layers.DepthwiseConv2D(kernel, stride, padding=padding, use_bias=False, dtype=self.policy)(x)
        else:
            x = keras.layers.Conv2D(channels, kernel, stride, padding=padding, use_bias=False, dtype=self.policy)(x)
        x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, dtype=self.policy)(x)
        if activation == "relu":
            x = keras.layers.ReLU(dtype=self.policy)(x)
        elif activation == "relu6":
            x = keras.layers.ReLU(max_value=6.0, dtype=self.policy)(x)
        return x

    def basic_block(self, x, in_channels: int, channels: int, stride: int):
        body = self.conv_bn(x, channels, 3, stride)
        body = self.conv_bn(body, channels, 3, 1, activation=None)
        shortcut = (self.conv_bn(x, channels, 1, stride, activation=None)
                    if stride != 1 or in_channels != channels else x)
        return keras.layers.ReLU(dtype=self.policy)(keras.layers.Add(dtype=self.policy)([body, shortcut]))

    def inverted_residual(self, x, block: InvertedResidual):
        body = x
        if block.expanded != block.in_channels:
            body = self.conv_bn(body, block.expanded, 1, activation="relu6")
        body = self.conv_bn(body, block.expanded, 3, block.stride, depthwise=True, activation="relu6")
        body = self.conv_bn(body, block.out_channels, 1, activation=None)
        return keras.layers.Add(dtype=self.policy)([x, body]) if block.residual else body

    def classifier(self, x, arch: Architecture):
        x = keras.layers.GlobalAveragePooling2D(dtype=self.policy)(x)
        if arch.dropout:
            x = keras.layers.Dropout(arch.dropout, dtype=self.policy)(x)
        return keras.layers.Dense(arch.num_classes, dtype="float32", name=OUTPUT_NAME)(x)


def build_keras_model(arch: Architecture, dtype_policy: str | None = None) -> keras.Model:
    """Build the Keras model for ``arch`` under ``dtype_policy`` (default: the global policy).

    The logits layer is always float32, as mixed precision requires for a numerically stable loss.
    """
    policy = dtype_policy or keras.mixed_precision.global_policy().name
    build = _Builder(policy)
    inputs = keras.Input(shape=(arch.channels, arch.height, arch.width), name=INPUT_NAME, dtype="float32")
    x = keras.layers.Permute((2, 3, 1), dtype=policy)(inputs)
    if arch.name == "resnet":
        x = build.conv_bn(x, arch.widths[0])
        channels = arch.widths[0]
        for stage, width in enumerate(arch.widths):
            for index in range(arch.blocks_per_stage):
                x = build.basic_block(x, channels, width, 2 if stage > 0 and index == 0 else 1)
                channels = width
        outputs = build.classifier(x, arch)
    elif arch.name == "mobilenet_v2":
        x = build.conv_bn(x, arch.stem_channels, activation="relu6")
        for block in arch.blocks:
            x = build.inverted_residual(x, block)
        x = build.conv_bn(x, arch.head_channels, 1, activation="relu6")
        outputs = build.classifier(x, arch)
    else:
        for channels in arch.conv_channels:
            x = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", dtype=policy)(x)
        x = keras.layers.MaxPooling2D(2, dtype=policy)(x)
        # PyTorch flattens CHW; Keras would flatten HWC. Permute back so the dense weights line up.
        x = keras.layers.Permute((3, 1, 2), dtype=policy)(x)
        x = keras.layers.Flatten(dtype=policy)(x)
        x = keras.layers.Dense(arch.hidden_units, activation="relu", dtype=policy)(x)
        if arch.dropout:
            x = keras.layers.Dropout(arch.dropout, dtype=policy)(x)
        outputs = keras.layers.Dense(arch.num_classes, dtype="float32", name=OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs, name=arch.name)


def as_float32(model: keras.Model, arch: Architecture) -> keras.Model:
    """The same model rebuilt under the float32 policy with ``model``'s weights.

    ONNX Runtime has no bf16 Conv kernel and TF Serving CPUs rarely have fast bf16, so exports use this.
    """
    copy = build_keras_model(arch, "float32")
    copy.set_weights([weight.astype("float32") for weight in model.get_weights()])
    return copy
