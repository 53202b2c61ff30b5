"""Fuzzing the serving handler through the real TorchServe: random bytes and mutated images always get
a 4xx (or, for a mutation that is still a valid image of the model's size, an answer), never a server
error, and the server keeps serving."""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from components.data.dataset import load_split
from components.deploy.local import deploy_local
from components.deploy.torchserve import PredictionRefused, TorchServe
from tests.conftest import make_settings, register_onnx

CLIENT_ERRORS = {400, 413, 415}


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    spec, run = trained_run
    spec = spec.model_copy(update={"gate": spec.gate.model_copy(update={"min_accuracy": 0.7}),
                                   "deploy": spec.deploy.model_copy(update={"server": "torchserve"})})
    settings = make_settings(tmp_path_factory.mktemp("fuzz") / "relay-home")
    instance = TorchServe(settings)
    deploy_local(spec, register_onnx(settings, spec, run.optimized_model), run.data, settings)
    _, _, paths = load_split(run.data, "test", spec.dataset.classes)
    yield instance, [p.read_bytes() for p in paths[:5]]
    instance.stop()


def _status(server: TorchServe, body: bytes, content_type: str) -> int:
    try:
        server.predict("digits", body, content_type=content_type)
        return 200
    except PredictionRefused as refused:
        return refused.status


def _encoded(fmt: str, size: tuple[int, int], mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color=7 if mode == "L" else (7, 8, 9)).save(buffer, format=fmt)
    return buffer.getvalue()


@st.composite
def mutated_images(draw, samples: list[bytes]):
    body = bytearray(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        position = draw(st.integers(0, max(len(body) - 1, 0)))
        if kind == "flip" and body:
            body[position] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del body[position:]
        elif kind == "insert":
            body[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del body[position:position + draw(st.integers(1, 16))]
    return bytes(body)


FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
CONTENT_TYPES = st.sampled_from(["image/png", "application/octet-stream", "image/jpeg", ""])


def test_fuzzed_bodies_get_client_errors_and_serving_goes_on(server):
    instance, samples = server
    seen: list[int] = []

    @FUZZ
    @given(body=st.binary(max_size=2048) | mutated_images(samples)
           | st.builds(_encoded, st.sampled_from(["PNG", "BMP", "GIF", "TIFF", "JPEG", "WEBP"]),
                       st.tuples(st.integers(1, 40), st.integers(1, 40)), st.sampled_from(["L", "RGB"])),
           content_type=CONTENT_TYPES)
    def check(body, content_type):
        status = _status(instance, body, content_type)
        seen.append(status)
        assert status in CLIENT_ERRORS | {200}

    check()
    assert set(seen) & CLIENT_ERRORS  # the fuzzer did reach the refusals
    for sample in samples:  # and the model still answers
        assert _status(instance, sample, "image/png") == 200
