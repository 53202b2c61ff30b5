"""TorchServe handler that runs the model with an ONNX Runtime session.

TorchServe's stock handler loads an .onnx file into a session but then calls ``self.model(x)``,
so it cannot serve ONNX. This one calls ``session.run``. It is packed into the .mar beside
``image_service.py``, ``imaging.py`` and ``onnx_runtime.py`` (its only Relay imports), ``index_to_name.json`` and
``relay_serving.json`` (the model's preprocessing and the request limit). Preprocessing is
``imaging``'s, the very code training and the gate ran: the handler has none of its own.

A request the model cannot take gets a 4xx with the reason in the body, in TorchServe's error shape
(``{"code", "type", "message"}``; gRPC: INVALID_ARGUMENT and the like), and never reaches the session:
400 for a body that is not a decodable image, 413 for a body or an image over the limits, 415 for a
body that is not an image file. Images of any size are resized by the model's resize policy.
"""

from __future__ import annotations

import os

from image_service import ImageRejected, ImageService  # in the .mar
from ts.utils.util import PredictionException  # the worker runs inside TorchServe's own Python


class OnnxImageClassifier:
    def __init__(self) -> None:
        self.service: ImageService | None = None

    def initialize(self, context) -> None:
        model_dir = context.system_properties["model_dir"]
        serialized = context.manifest["model"]["serializedFile"]
        self.service = ImageService(os.path.join(model_dir, serialized), model_dir)

    def _image(self, row: dict, content_type: str):
        return self.service.image(row.get("data") if row.get("data") is not None else row.get("body"), content_type)

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
            for index, answer in zip(rows, self.service.predictions(self.service.logits(images))):
                results[index] = answer
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
