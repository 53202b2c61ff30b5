"""The HTTP floor for serving figures: the least a Python server can do to answer one image. A benchmark fixture,
never a serving target.

Starlette on uvicorn (one process, one event loop, no middleware), the optimized ONNX model in an ONNX Runtime
session with one thread, and Relay's own preprocessing (``components.imaging``): a raw image body in, the class
index out as JSON. No authentication, no limits, no batching, no logging: what a served model costs above this
is what a serving stack adds. ``python -m bench.floor_server MODEL.onnx PREPROCESSING.json PORT`` listens on
127.0.0.1:PORT; ``make bench`` (``measure_serving``) starts it and stops it by its pid.
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.v2_candidates.classifier import Classifier

PATH = "/predict"


def floor_app(model: Path, preprocessing: Path) -> Starlette:
    """The app: POST PATH with an image file as the body → {"label": class index}."""
    classifier = Classifier(model, preprocessing)

    async def predict(request: Request) -> JSONResponse:
        return JSONResponse({"label": classifier.labels([await request.body()])[0]})

    return Starlette(routes=[Route(PATH, predict, methods=["POST"])])


if __name__ == "__main__":
    model_file, preprocessing_file, port = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    uvicorn.run(floor_app(model_file, preprocessing_file), host="127.0.0.1", port=port, log_level="warning",
                access_log=False)
