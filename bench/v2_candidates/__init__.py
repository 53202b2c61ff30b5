"""The two V2 (Open Inference Protocol) servers issue 20 asks to choose between, measured on the same model and
client as the HTTP floor (``bench --only v2-candidates``): the ``kserve`` package's ModelServer with a custom
``Model`` (``.venv-kserve``) and MLServer with a custom runtime (``.venv-serve``). Each runs Relay's preprocessing
(``components.imaging``) and ONNX Runtime, one process, one ORT thread. Benchmark fixtures, not Relay's server.

A V2 request carries the image file as one BYTES element, base64 in the JSON body (``v2_request``)."""

from __future__ import annotations

import base64
import json

RAW_PATH = "/digits/raw"  # MLServer's custom route for a raw image body (mlserver_runtime.DigitsRaw)


def v2_request(image: bytes) -> bytes:
    """The V2 inference request for one image file."""
    return json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                   "data": [base64.b64encode(image).decode()]}]}).encode()


def images_of(elements: list) -> list[bytes]:
    """The image files in a V2 BYTES input's elements (base64 strings)."""
    return [base64.b64decode(element) for element in elements]
