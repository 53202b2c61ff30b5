"""INT8 post-training quantization with onnxruntime.quantization (static, QDQ, calibrated)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process


class _Calibration(CalibrationDataReader):
    def __init__(self, images: np.ndarray, input_name: str, batches: int = 16):
        self._batches = iter(np.array_split(images[: batches * 16], batches))
        self._input = input_name

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {self._input: batch}


def quantize_int8(source: Path, target: Path, calibration_images: np.ndarray) -> Path:
    """Quantize ``source`` to ``target`` using training images for calibration."""
    from components.onnx_runtime import INPUT_NAME

    prepared = target.with_suffix(".prep.onnx")
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared), str(target), _Calibration(calibration_images, INPUT_NAME),
        # Unsigned activations, signed weights (U8S8): x86's VNNI/AMX int8 path. S8S8 QDQ convs fall back to a
        # slow kernel on this CPU (0.95x fp32, against 2.8x for U8S8, measured on the shapes resnet).
        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        per_channel=True,
    )
    prepared.unlink()
    return target
