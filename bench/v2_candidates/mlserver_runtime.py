"""MLServer custom runtimes (run in .venv-serve by ``mlserver start``, which ``measure_v2_candidates`` configures):
``Digits`` answers V2 requests; ``DigitsRaw`` also takes a raw image body on a custom REST route (``RAW_PATH``)."""

from __future__ import annotations

from fastapi import Request
from mlserver import MLModel
from mlserver.handlers import custom_handler
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

from bench.v2_candidates import RAW_PATH, images_of
from bench.v2_candidates.classifier import Classifier


class Digits(MLModel):
    async def load(self) -> bool:
        extra = self.settings.parameters.extra
        self.classifier = Classifier(extra["model"], extra["preprocessing"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        data = payload.inputs[0].data
        labels = self.classifier.labels(images_of(getattr(data, "root", data)))
        output = ResponseOutput(name="label", shape=[len(labels)], datatype="INT64", data=labels)
        return InferenceResponse(model_name=self.name, outputs=[output])


class DigitsRaw(Digits):
    @custom_handler(rest_path=RAW_PATH)
    async def predict_raw(self, request: Request) -> dict:
        return {"label": self.classifier.labels([await request.body()])[0]}
