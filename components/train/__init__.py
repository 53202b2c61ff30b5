"""The train step, dispatched to the framework the (possibly overridden) spec names."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.errors import RelayError
from pipelines.spec import TaskSpec

Predictor = Callable[[np.ndarray], np.ndarray]
"""NCHW float32 images in, float32 logits out."""


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    framework: str
    test_accuracy: float
    train_seconds: float


def _framework_module(framework: str):
    if framework == "pytorch":
        from components.train import torch_train

        return torch_train
    if framework == "tensorflow":
        from components.train import keras_train

        return keras_train
    raise RelayError(f"unknown framework '{framework}': use pytorch or tensorflow")


def train_model(spec: TaskSpec, data_dir: Path, out_dir: Path) -> TrainResult:
    """Train ``spec``'s model on the data step's train split; write it and its metrics to ``out_dir``."""
    return _framework_module(spec.framework).train(spec, data_dir, out_dir)


def load_predictor(model_dir: Path) -> Predictor:
    """Load a trained model (either framework) as a numpy predictor for the gate and benchmarks."""
    framework = json.loads((model_dir / "metrics.json").read_text())["framework"]
    return _framework_module(framework).load_predictor(model_dir)
