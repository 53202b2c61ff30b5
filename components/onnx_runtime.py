"""ONNX Runtime sessions, configured the same way for the gate, benchmarks and serving."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def make_session(model: Path | bytes, threads: int | None = None, inter_op: int = 1) -> ort.InferenceSession:
    """A CPU session with all graph optimizations on; ``threads`` (intra-op) defaults to OMP_NUM_THREADS or 1.
    Comparisons pass ``threads`` explicitly (components.measurement)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or int(os.environ.get("OMP_NUM_THREADS", "1"))
    options.inter_op_num_threads = inter_op
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def onnx_predictor(model: Path | bytes, threads: int | None = None):
    """A numpy predictor over an ONNX model: NCHW float32 images in, logits out."""
    session = make_session(model, threads)
    input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name

    def predict(images: np.ndarray) -> np.ndarray:
        return session.run([output_name], {input_name: images})[0]

    return predict
