"""Train: both frameworks' training loops, their shared bookkeeping and input pipeline, and what a trained
model directory says about itself. The train step's entry point, which picks the framework, is
``components.frameworks.train_model``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from components.imaging import Preprocessing
from components.run_files import METRICS, PREPROCESSING


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    framework: str
    test_accuracy: float
    train_seconds: float


def model_framework(model_dir: Path) -> str:
    return json.loads((model_dir / METRICS).read_text())["framework"]


def model_preprocessing(model_dir: Path) -> Preprocessing:
    """The preprocessing a trained model was trained with."""
    return Preprocessing.from_dict(json.loads((model_dir / PREPROCESSING).read_text()))
