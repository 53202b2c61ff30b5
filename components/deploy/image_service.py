"""What a model server does with a request, whichever server it is: check the image body, preprocess it with
``imaging`` (the very code training and the gate ran), run the ONNX Runtime session, and answer the class,
its index, its probability and the logits.

TorchServe's handler (``serving_handler``) and the V2 server's runtime (``v2_runtime``) are thin adapters over
``ImageService``. Inside a TorchServe .mar this file sits beside ``imaging.py`` and ``onnx_runtime.py`` as
top-level modules; everywhere else it imports them from ``components``.

A body the model cannot take raises an ``ImageRejected`` whose ``status`` is the 4xx to answer with: 400 for
a body that is not a decodable image, 413 for a body or an image over the limits, 415 for a body that is not an
image file. It never reaches the session.
"""

from __future__ import annotations

import json
import os

import numpy as np

try:  # inside a .mar: the modules packed beside this one
    from imaging import SERVING_CONFIG, ImageRejected, ImageTooLarge, Preprocessing, load_pixels, normalize
    from onnx_runtime import make_session
except ImportError:
    from components.imaging import (SERVING_CONFIG, ImageRejected, ImageTooLarge, Preprocessing, load_pixels,
                                    normalize)
    from components.onnx_runtime import make_session

CLASS_NAMES = "index_to_name.json"
MODEL_FILE = "model.onnx"  # in a V2 model version's folder (a .mar names its own)
# Raw image bodies; multipart uploads arrive as a 'data' field, octet-stream from clients that set no type.
ACCEPTED_TYPES = ("image/", "application/octet-stream", "multipart/form-data")


class UnsupportedType(ImageRejected):
    status = 415


class ImageService:
    """One model version: ``model_file`` (ONNX) and, in ``config_dir``, ``relay_serving.json`` (preprocessing,
    request limit, threads) and ``index_to_name.json`` (class names)."""

    def __init__(self, model_file: str, config_dir: str) -> None:
        with open(os.path.join(config_dir, SERVING_CONFIG)) as handle:
            self.config = json.load(handle)
        self.prep = Preprocessing.from_dict(self.config["preprocessing"])
        with open(os.path.join(config_dir, CLASS_NAMES)) as handle:
            self.classes: dict[str, str] = json.load(handle)
        self.session = make_session(model_file, threads=self.config.get("threads", 1))
        self.input_name = self.session.get_inputs()[0].name

    def image(self, payload, content_type: str = "") -> np.ndarray:
        """The pixels of one request body, or ``ImageRejected`` with the status and the reason."""
        if content_type and not content_type.lower().startswith(ACCEPTED_TYPES):
            raise UnsupportedType(f"Content-Type {content_type} is not an image: send the image file as the body "
                                  "with Content-Type image/png, image/jpeg, … or application/octet-stream")
        if not isinstance(payload, (bytes, bytearray)):
            raise UnsupportedType("the body is not an image file: send the file's bytes as the raw body "
                                  "(Content-Type image/png, image/jpeg, …)")
        if not payload:
            raise ImageRejected("the request body is empty: send an image file")
        limit = self.config["max_request_bytes"]
        if len(payload) > limit:
            raise ImageTooLarge(f"the body is {len(payload)} bytes, over the limit of {limit} "
                                "(deploy.max_request_bytes)")
        return load_pixels(bytes(payload), self.prep, "the image")

    def logits(self, images: list[np.ndarray]) -> np.ndarray:
        """The logits of images ``image`` returned (stacked and normalized here)."""
        return self.session.run(None, {self.input_name: normalize(np.stack(images), self.prep)})[0]

    def logits_of_tensor(self, tensor: np.ndarray) -> np.ndarray:
        """The logits of an already preprocessed batch, in the model's own input layout (V2 tensor clients)."""
        expected = self.session.get_inputs()[0].shape
        if tensor.ndim != len(expected) or any(isinstance(d, int) and d != s for d, s in zip(expected[1:],
                                                                                         tensor.shape[1:])):
            raise ImageRejected(f"the tensor's shape is {list(tensor.shape)}; this model takes "
                                f"{['N' if not isinstance(d, int) else d for d in expected]} (float32)")
        return self.session.run(None, {self.input_name: tensor.astype(np.float32, copy=False)})[0]

    def predictions(self, logits: np.ndarray) -> list[dict]:
        """Per row: the class, its index, its probability (softmax) and the raw logits."""
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        answers = []
        for row_logits, row_probabilities in zip(logits, probabilities):
            best = int(row_logits.argmax())
            answers.append({"class": self.classes[str(best)], "index": best,
                            "probability": float(row_probabilities[best]),
                            "logits": [float(value) for value in row_logits]})
        return answers
