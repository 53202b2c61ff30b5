"""What the floor and both candidates run: image files → class indices, with Relay's preprocessing and an ORT
session (one thread)."""

from __future__ import annotations

import json
from pathlib import Path

from components.imaging import Preprocessing, preprocess_files
from components.onnx_runtime import onnx_predictor


class Classifier:
    def __init__(self, model: Path, preprocessing: Path):
        self.prep = Preprocessing.from_dict(json.loads(Path(preprocessing).read_text()))
        self.predict = onnx_predictor(Path(model), threads=1)

    def labels(self, images: list[bytes]) -> list[int]:
        return self.predict(preprocess_files(images, self.prep)).argmax(axis=1).tolist()
