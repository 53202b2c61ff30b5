"""kserve's ModelServer with a custom Model (run in .venv-kserve):
``python -m bench.v2_candidates.kserve_model MODEL.onnx PREPROCESSING.json PORT``; REST only, on 127.0.0.1."""

from __future__ import annotations

import sys
from pathlib import Path

import kserve
from kserve import InferOutput, InferResponse
from kserve.protocol.rest import server as rest_server

from bench.v2_candidates import images_of
from bench.v2_candidates.classifier import Classifier


class _LoopbackConfig(rest_server.uvicorn.Config):
    """kserve 0.21 hard-codes its REST server's host to 0.0.0.0 (and gRPC's to [::]); Relay listens on loopback."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "host": "127.0.0.1"})


class Digits(kserve.Model):
    def __init__(self, classifier: Classifier):
        super().__init__("digits")
        self.classifier = classifier
        self.ready = True

    async def predict(self, payload, headers=None, response_headers=None) -> InferResponse:
        labels = self.classifier.labels(images_of(payload.inputs[0].data))
        output = InferOutput(name="label", shape=[len(labels)], datatype="INT64", data=labels)
        return InferResponse(model_name=self.name, infer_outputs=[output], response_id=payload.id or "")


if __name__ == "__main__":
    rest_server.uvicorn.Config = _LoopbackConfig
    model, preprocessing, port = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    kserve.ModelServer(http_port=port, workers=1, enable_grpc=False, enable_docs_url=False,
                       enable_latency_logging=False).start([Digits(Classifier(model, preprocessing))])
