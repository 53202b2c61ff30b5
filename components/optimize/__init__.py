"""The optimize step: export the trained model to ONNX, optionally quantize it to INT8, and check
that ONNX Runtime loads it with graph optimizations on."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.atomic import atomic_dir, write_json
from components.data import load_split
from components.errors import RelayError
from components.onnx_runtime import onnx_predictor
from pipelines.spec import TaskSpec

OPTIMIZED = "model.onnx"


@dataclass(frozen=True)
class OptimizeResult:
    model: Path
    conversion_seconds: float
    quantized: bool


def _exporter(framework: str):
    if framework == "pytorch":
        from components.optimize.torch_onnx import export_onnx

        return export_onnx
    if framework == "tensorflow":
        from components.optimize.tf_onnx import export_onnx

        return export_onnx
    raise RelayError(f"no ONNX exporter for framework '{framework}'")


def _tensorrt(framework: str, train_dir: Path, target: Path) -> dict:
    if framework != "tensorflow":
        return {"skipped": "TF-TRT applies to TensorFlow models only"}
    from components.optimize.tensorrt import convert_tftrt
    from components.train.keras_train import SAVED_MODEL

    return convert_tftrt(train_dir / SAVED_MODEL, target)


def optimize_model(spec: TaskSpec, train_dir: Path, data_dir: Path, out_dir: Path) -> OptimizeResult:
    """Write ``out_dir/model.onnx`` (fp32, or INT8 when the spec asks) and ``optimize.json``."""
    framework = json.loads((train_dir / "metrics.json").read_text())["framework"]
    with atomic_dir(out_dir) as tmp:
        started = time.perf_counter()
        fp32 = tmp / "model.fp32.onnx"
        _exporter(framework)(train_dir, fp32, spec)
        served = fp32
        if spec.optimize.quantize == "int8":
            from components.optimize.quantize import quantize_int8

            served = quantize_int8(fp32, tmp / "model.int8.onnx", load_split(data_dir, "train", spec.dataset.classes)[0])
        predict = onnx_predictor(served)  # building the optimized session is part of the conversion cost
        seconds = time.perf_counter() - started
        probe = np.zeros((2, 1, spec.dataset.image.height, spec.dataset.image.width), np.float32)
        if predict(probe).shape != (2, len(spec.dataset.classes)):
            raise RelayError(f"exported model returns the wrong shape for a batch of 2: {predict(probe).shape}")
        served.rename(tmp / OPTIMIZED)
        write_json(tmp / "optimize.json", {
            "framework": framework, "exporter": spec.optimize.exporter, "quantize": spec.optimize.quantize,
            "conversion_seconds": seconds,
            "tensorrt": _tensorrt(framework, train_dir, tmp / "tftrt_saved_model"),
        })
    return OptimizeResult(out_dir / OPTIMIZED, seconds, spec.optimize.quantize == "int8")
