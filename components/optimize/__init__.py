"""Optimize: export the trained model to ONNX (each framework's exporter), optionally quantize it to INT8,
and check that ONNX Runtime loads it with graph optimizations on. The step's entry point, which picks the
framework's exporter, is ``components.frameworks.optimize_model``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.atomic import atomic_dir, write_json
from components.data.dataset import load_split
from components.errors import RelayError
from components.onnx_runtime import onnx_predictor
from components.run_files import OPTIMIZE_INFO, OPTIMIZED_MODEL
from components.train import model_framework, model_preprocessing
from components.spec import TaskSpec

CALIBRATION_IMAGES = 256


@dataclass(frozen=True)
class OptimizeResult:
    model: Path
    conversion_seconds: float
    quantized: bool


Exporter = Callable[[Path, Path, TaskSpec], Path]
"""(trained model dir, target .onnx, spec) -> the written ONNX file."""
Accelerator = Callable[[Path, Path], dict]
"""(trained model dir, target dir) -> what framework-native acceleration made, or why it was skipped."""


def optimize_onnx(spec: TaskSpec, train_dir: Path, data_dir: Path, out_dir: Path, export_onnx: Exporter,
                  accelerate: Accelerator) -> OptimizeResult:
    """Write ``out_dir/model.onnx`` (fp32, or INT8 when the spec asks) and ``optimize.json``."""
    framework = model_framework(train_dir)
    prep = model_preprocessing(train_dir)
    with atomic_dir(out_dir) as tmp:
        started = time.perf_counter()
        fp32 = tmp / "model.fp32.onnx"
        export_onnx(train_dir, fp32, spec)
        served = fp32
        if spec.optimize.quantize == "int8":
            from components.optimize.quantize import quantize_int8

            calibration = load_split(data_dir, "train", spec.dataset.classes, prep,
                                     limit=CALIBRATION_IMAGES)[0]
            served = quantize_int8(fp32, tmp / "model.int8.onnx", calibration)
        predict = onnx_predictor(served)  # building the optimized session is part of the conversion cost
        seconds = time.perf_counter() - started
        probe = np.zeros((2, prep.channels, prep.height, prep.width), np.float32)
        if predict(probe).shape != (2, len(spec.dataset.classes)):
            raise RelayError(f"exported model returns the wrong shape for a batch of 2: {predict(probe).shape}")
        served.rename(tmp / OPTIMIZED_MODEL)
        write_json(tmp / OPTIMIZE_INFO, {
            "framework": framework, "exporter": spec.optimize.exporter, "quantize": spec.optimize.quantize,
            "conversion_seconds": seconds,
            "tensorrt": accelerate(train_dir, tmp / "tftrt_saved_model"),
        })
    return OptimizeResult(out_dir / OPTIMIZED_MODEL, seconds, spec.optimize.quantize == "int8")
