"""The train step, dispatched to the backend of the framework the (possibly overridden) spec names."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from components.frameworks import Predictor, backend
from components.imaging import Preprocessing
from components.run_files import METRICS, PREPROCESSING
from components.spec import TaskSpec

__all__ = ["Predictor", "TrainResult", "load_predictor", "model_framework", "model_preprocessing", "train_model"]


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    framework: str
    test_accuracy: float
    train_seconds: float


def train_model(spec: TaskSpec, data_dir: Path, out_dir: Path) -> TrainResult:
    """Train ``spec``'s model on the data step's train split; write it and its metrics to ``out_dir``."""
    return backend(spec.framework).train(spec, data_dir, out_dir)


def model_framework(model_dir: Path) -> str:
    return json.loads((model_dir / METRICS).read_text())["framework"]


def model_preprocessing(model_dir: Path) -> Preprocessing:
    """The preprocessing a trained model was trained with."""
    return Preprocessing.from_dict(json.loads((model_dir / PREPROCESSING).read_text()))


def load_predictor(model_dir: Path) -> Predictor:
    """Load a trained model (either framework) as a numpy predictor for the gate and benchmarks."""
    return backend(model_framework(model_dir)).load_predictor(model_dir)
