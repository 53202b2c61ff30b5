"""Bounded load on loopback against each real server (TorchServe, the V2 server): no errors, bounded memory, and
no failed request while a new version is deployed and made default. Speed figures are in `make bench`, not
asserted here."""

import threading

import pytest

from components.data.dataset import load_split
from components.deploy.load import post_load, run_load, server_rss_bytes
from components.deploy.local import deploy_local
from components.deploy.servers import model_server
from components.settings import free_ports
from tests.conftest import register_onnx


@pytest.fixture(params=["torchserve", "kserve"])
def serving(request, trained_run, settings):
    spec, run = trained_run
    spec = spec.model_copy(update={"gate": spec.gate.model_copy(update={"min_accuracy": 0.7}),
                                   "deploy": spec.deploy.model_copy(update={"server": request.param})})
    server = model_server(request.param, settings)
    deploy_local(spec, register_onnx(settings, spec, run.optimized_model, "run-1"), run.data, settings)
    _, _, paths = load_split(run.data, "test", spec.dataset.classes)
    yield spec, run, server, [p.read_bytes() for p in paths]
    server.stop()


def test_ten_thousand_requests_at_concurrency_32_without_errors_or_memory_growth(serving):
    _, _, server, bodies = serving
    warmup = run_load(server, "digits", bodies, total=1000, concurrency=32)
    assert warmup.errors == 0, warmup.error_samples
    before = server_rss_bytes(server)
    result = run_load(server, "digits", bodies, total=10_000, concurrency=32)
    after = server_rss_bytes(server)
    assert result.requests == 10_000 and result.errors == 0, result.error_samples
    assert 0 < result.p50_ms <= result.p99_ms
    assert abs(after - before) / before <= 0.20, (before, after)


def test_no_request_fails_while_a_new_version_is_deployed_and_made_default(serving, settings):
    spec, run, server, bodies = serving
    deployed = threading.Event()
    results = []
    loop = threading.Thread(target=lambda: results.append(
        run_load(server, "digits", bodies, concurrency=8, until=deployed.is_set)))
    loop.start()
    try:
        new = deploy_local(spec, register_onnx(settings, spec, run.optimized_model, "run-2"),
                           run.data, settings)
    finally:
        deployed.set()
        loop.join()
    (result,) = results
    assert new.version == "v0.2.0" and server.default_version("digits") == "0.2.0"
    assert result.requests > 100 and result.errors == 0, result.error_samples


def test_a_server_that_is_not_listening_counts_every_request_as_an_error():
    (port,) = free_ports(1)  # nothing listens on it
    result = post_load(f"http://127.0.0.1:{port}/predictions/digits", {}, [b"x"], total=20, concurrency=4)
    assert result.requests == 20 and result.errors == 20
    assert "ConnectionRefusedError" in result.error_samples[0]
