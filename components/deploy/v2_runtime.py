"""Relay's MLServer runtime: one model version served on the V2 (Open Inference) protocol by ``ImageService``,
the same code TorchServe's handler runs. It is loaded only inside the V2 server (``v2_server``, in
``.venv-serve``), from each version's ``model-settings.json``.

Two ways in:
- V2 inference (``/v2/models/<name>/versions/<version>/infer``, REST or gRPC), with either an ``image`` BYTES
  input (the image files: base64 in JSON, as they are over gRPC) or an FP32 tensor already in the model's input
  layout. The answer has the outputs ``class``, ``index``, ``probability`` and ``logits``; bad input gets 400 with
  ``{"error": reason}``.
- The image file as the raw body on ``/predictions/<name>/<version>``, TorchServe's path, answered in
  TorchServe's shapes: the prediction as JSON, or the 4xx with ``{"code", "type", "message"}``. (The server
  maps ``/predictions/<name>`` to the default version, and routes this path to ``answer_image`` ahead of
  MLServer's FastAPI app.)
"""

from __future__ import annotations

import base64
import binascii
import os

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, RequestInput
from mlserver.utils import get_model_uri
from starlette.requests import Request
from starlette.responses import JSONResponse

from components.deploy.image_service import MODEL_FILE, ImageRejected, ImageService

RAW_ROUTE = "/predictions/{model_name}/{model_version}"  # answered by answer_image
# The raw route is one route for every version: it finds the version here (so MLServer must load models in its
# own process: parallel_workers 0, which v2_server checks). MLServer re-imports this module
# (importlib.reload) whenever it resolves a model's implementation, so the map must outlive a reload.
_LOADED: dict[tuple[str, str], RelayImageClassifier] = globals().get("_LOADED", {})


class RelayImageClassifier(MLModel):
    async def load(self) -> bool:
        folder = await get_model_uri(self.settings)  # "." in model-settings.json: its own folder
        try:
            self.service = ImageService(os.path.join(folder, MODEL_FILE), folder)
        except Exception as error:  # whatever ONNX Runtime or a missing file says, as one line for the caller
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise MLServerError(f"version {self.version} of {self.name} cannot be loaded: {first_line}", 422) from None
        _LOADED[(self.name, self.version or "")] = self
        return True

    async def unload(self) -> bool:
        key = (self.name, self.version or "")
        if _LOADED.get(key) is self:  # a reload loads the new instance before it unloads the old one
            del _LOADED[key]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        if len(payload.inputs) != 1:
            raise MLServerError(f"send one input (the images, BYTES, or a FP32 tensor); got {len(payload.inputs)}")
        try:
            logits = self._logits(payload.inputs[0])
        except ImageRejected as refused:
            raise MLServerError(str(refused), refused.status) from None
        answers = self.service.predictions(logits)
        outputs = [StringCodec.encode_output("class", [a["class"] for a in answers]),
                   NumpyCodec.encode_output("index", np.array([a["index"] for a in answers], dtype=np.int64)),
                   NumpyCodec.encode_output("probability", np.array([a["probability"] for a in answers],
                                                                    dtype=np.float32)),
                   NumpyCodec.encode_output("logits", logits.astype(np.float32))]
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=outputs)

    def _logits(self, tensor: RequestInput) -> np.ndarray:
        if tensor.datatype == "BYTES":
            images = []
            for position, element in enumerate(_elements(tensor)):
                images.append(self.service.image(_image_file(tensor.name, position, element)))
            if not images:
                raise ImageRejected(f"input {tensor.name!r} holds no image")
            return self.service.logits(images)
        if tensor.datatype == "FP32":
            return self.service.logits_of_tensor(NumpyCodec.decode_input(tensor))
        raise ImageRejected(f"input {tensor.name!r} is {tensor.datatype}: send the image files as BYTES "
                            "(base64 in JSON) or a preprocessed FP32 tensor")


async def answer_image(request: Request) -> JSONResponse:
    """TorchServe's way in: the image file as the body of ``POST`` (or ``PUT``, as ``curl -T FILE URL`` sends)
    ``/predictions/<name>/<version>``, answered by that loaded version. ``v2_server`` routes it ahead of
    MLServer's app, so it costs what the floor's route costs (docs/benchmarks.md)."""
    key = (request.path_params["model_name"], request.path_params["model_version"])
    model = _LOADED.get(key)
    if model is None:
        return _refused(404, "ModelNotFound", f"no version {key[1]} of model {key[0]} is loaded")
    try:
        image = model.service.image(await request.body(), request.headers.get("content-type", ""))
    except ImageRejected as refused:
        return _refused(refused.status, type(refused).__name__, str(refused))
    return JSONResponse(model.service.predictions(model.service.logits([image]))[0])


def _image_file(input_name: str, position: int, element: str | bytes) -> bytes:
    """One BYTES element as the image file: gRPC carries the file's bytes as they are; JSON (REST) carries them as
    a base64 string."""
    if isinstance(element, (bytes, bytearray)):
        return bytes(element)
    try:
        return base64.b64decode(element, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ImageRejected(f"input {input_name!r}, element {position}: not base64 (in JSON, send each image file "
                            "base64-encoded)") from None


def _elements(tensor: RequestInput) -> list:
    data = tensor.data
    return list(getattr(data, "root", data))


def _refused(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "type": kind, "message": message}, status_code=status)
