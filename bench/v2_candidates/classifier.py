"""What both candidates run: image files → class indices, with Relay's preprocessing and an ORT session."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from components.imaging import Preprocessing, load_pixel_batch, normalize
from components.onnx_runtime import make_session


class Classifier:
    def __init__(self, model: Path, preprocessing: Path):
        self.prep = Preprocessing.from_dict(json.loads(Path(preprocessing).read_text()))
        self.session = make_session(Path(model), threads=1)
        self.input_name = self.session.get_inputs()[0].name

    def labels(self, images: list[bytes]) -> list[int]:
        batch = normalize(load_pixel_batch(images, self.prep), self.prep)
        return np.argmax(self.session.run(None, {self.input_name: batch})[0], axis=1).tolist()
