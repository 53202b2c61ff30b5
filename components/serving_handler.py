"""TorchServe handler that runs the model with an ONNX Runtime session.

TorchServe's stock handler loads an .onnx file into a session but then calls ``self.model(x)``,
so it cannot serve ONNX. This one calls ``session.run``. It is packed into the .mar beside
``imaging.py`` and ``onnx_runtime.py`` (its only Relay imports) and ``index_to_name.json``.
"""

from __future__ import annotations

import json
import os

import numpy as np

from imaging import decode_image, to_batch  # shipped in the .mar as extra files
from onnx_runtime import make_session


class OnnxImageClassifier:
    def __init__(self) -> None:
        self.session = None
        self.classes: dict[str, str] = {}

    def initialize(self, context) -> None:
        model_dir = context.system_properties["model_dir"]
        serialized = context.manifest["model"]["serializedFile"]
        self.session = make_session(os.path.join(model_dir, serialized), threads=1)
        self.input_name = self.session.get_inputs()[0].name
        with open(os.path.join(model_dir, "index_to_name.json")) as handle:
            self.classes = json.load(handle)

    def handle(self, data: list[dict], context) -> list[dict]:
        """One PNG per request row (raw body or multipart 'data'); one prediction per row."""
        images = []
        for row in data:
            payload = row.get("data") or row.get("body")
            if not isinstance(payload, (bytes, bytearray)):
                raise ValueError("send the image file as the raw request body (Content-Type: image/png)")
            images.append(decode_image(bytes(payload)))
        logits = self.session.run(None, {self.input_name: to_batch(images)})[0]
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        return [
            {"class": self.classes[str(int(index))], "index": int(index), "probability": float(row[index])}
            for index, row in zip(logits.argmax(axis=1), probabilities)
        ]


_service = OnnxImageClassifier()


def handle(data, context):
    """TorchServe's entry point for a module-level handler."""
    if data is None:
        return None
    if _service.session is None:
        _service.initialize(context)
    return _service.handle(data, context)
