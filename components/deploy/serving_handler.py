"""TorchServe handler that runs the model with an ONNX Runtime session.

TorchServe's stock handler loads an .onnx file into a session but then calls ``self.model(x)``,
so it cannot serve ONNX. This one calls ``session.run``. It is packed into the .mar beside
``imaging.py`` and ``onnx_runtime.py`` (its only Relay imports), ``index_to_name.json`` and
``relay_serving.json`` (the model's preprocessing and the request limit). Preprocessing is
``imaging``'s, the very code training and the gate ran: the handler has none of its own.

A request the model cannot take gets a 4xx with the reason in the body, in TorchServe's error shape
(``{"code", "type", "message"}``; gRPC: INVALID_ARGUMENT and the like), and never reaches the session:
400 for a body that is not a decodable image, 413 for a body or an image over the limits, 415 for a
body that is not an image file. Images of any size are resized by the model's resize policy.
"""

from __future__ import annotations

import json
import os

import numpy as np

from imaging import SERVING_CONFIG, ImageRejected, ImageTooLarge, Preprocessing, load_pixels, normalize  # in the .mar
from onnx_runtime import make_session
from ts.utils.util import PredictionException  # the worker runs inside TorchServe's own Python

# Raw image bodies; multipart uploads arrive as a 'data' field, octet-stream from clients that set no type.
ACCEPTED_TYPES = ("image/", "application/octet-stream", "multipart/form-data")


class UnsupportedType(ImageRejected):
    status = 415


class OnnxImageClassifier:
    def __init__(self) -> None:
        self.session = None
        self.classes: dict[str, str] = {}

    def initialize(self, context) -> None:
        model_dir = context.system_properties["model_dir"]
        serialized = context.manifest["model"]["serializedFile"]
        with open(os.path.join(model_dir, SERVING_CONFIG)) as handle:
            self.config = json.load(handle)
        self.prep = Preprocessing.from_dict(self.config["preprocessing"])
        with open(os.path.join(model_dir, "index_to_name.json")) as handle:
            self.classes = json.load(handle)
        self.session = make_session(os.path.join(model_dir, serialized), threads=self.config.get("threads", 1))
        self.input_name = self.session.get_inputs()[0].name

    def _image(self, row: dict, content_type: str) -> np.ndarray:
        payload = row.get("data") if row.get("data") is not None else row.get("body")
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
            raise ImageTooLarge(f"the body is {len(payload)} bytes, over the limit of {limit} (deploy.max_request_bytes)")
        return load_pixels(bytes(payload), self.prep, "the image")

    def handle(self, data: list[dict], context) -> list[dict]:
        """One image per request row; one prediction (class, index, probability and the raw logits) or one
        4xx error per row."""
        results: list[dict | None] = [None] * len(data)
        images, rows = [], []
        for index, row in enumerate(data):
            try:
                images.append(self._image(row, _content_type(context, index)))
                rows.append(index)
            except ImageRejected as error:
                if len(data) == 1 and error.status != 413:
                    # The whole (one-request) batch fails with this status: TorchServe then answers HTTP with
                    # it and gRPC with the matching code (INVALID_ARGUMENT for 400), reason included.
                    # (TorchServe turns a raised 413 into 507, so 413 takes the per-request path below.)
                    raise PredictionException(str(error), error.status) from None
                # Only this request fails: HTTP gets its status; gRPC, which ignores per-request
                # statuses, gets OK with this error body.
                context.set_response_status(error.status, _PHRASES[error.status], index)
                results[index] = {"code": error.status, "type": type(error).__name__, "message": str(error)}
        if images:
            logits = self.session.run(None, {self.input_name: normalize(np.stack(images), self.prep)})[0]
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            probabilities = shifted / shifted.sum(axis=1, keepdims=True)
            for index, row_logits, row_probabilities in zip(rows, logits, probabilities):
                best = int(row_logits.argmax())
                results[index] = {"class": self.classes[str(best)], "index": best,
                                  "probability": float(row_probabilities[best]),
                                  "logits": [float(value) for value in row_logits]}
        return results


_PHRASES = {400: "Bad Request", 413: "Payload Too Large", 415: "Unsupported Media Type"}


def _content_type(context, index: int) -> str:
    headers = context.get_all_request_header(index) or {}
    return next((str(value) for key, value in headers.items() if key.lower() == "content-type"), "")


_service = OnnxImageClassifier()


def handle(data, context):
    """TorchServe's entry point for a module-level handler; TorchServe calls it with ``data=None`` once
    when the worker starts, so a model that cannot load fails its registration, not a request."""
    if data is None:
        _service.initialize(context)
        return None
    return _service.handle(data, context)
