"""Deploying to the local TorchServe: new version beside the old, smoke test, then default; what is
served survives a restart or a crash; a refused or swapped model never replaces the default."""

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from components.data.dataset import load_split
from components.deploy.local import deploy_local, served_state, start_serving
from components.deploy.torchserve import TorchServe
from components.errors import RelayError, ServingError
from components.registry.model_registry import ModelRegistry
from tests.conftest import register_onnx, untrained_onnx

pytestmark = pytest.mark.slow  # starts TorchServe


@pytest.fixture
def served(settings):
    server = TorchServe(settings)
    yield server
    server.stop()


@pytest.fixture
def spec(trained_run):
    spec, _ = trained_run
    return spec.model_copy(update={"gate": spec.gate.model_copy(update={"min_accuracy": 0.7})})


@pytest.fixture
def two_versions(spec, trained_run, settings, served):
    """v0.1.0 then v0.2.0 (the same trained model, registered twice) deployed one after the other."""
    _, run = trained_run
    model = run.optimized_model
    first = deploy_local(spec, register_onnx(settings, spec, model, "run-1"), run.data, settings)
    second = deploy_local(spec, register_onnx(settings, spec, model, "run-2"), run.data, settings)
    return first, second


def _versions(server: TorchServe) -> set[str]:
    return {entry["modelVersion"] for entry in server.describe("digits")}


def _accuracy(server, run, spec, count=10) -> float:
    _, labels, paths = load_split(run.data, "test", spec.dataset.classes)
    answers = [server.predict("digits", p.read_bytes())["class"] for p in paths[:count]]
    return sum(a == spec.dataset.classes[y] for a, y in zip(answers, labels[:count])) / count


def test_new_version_goes_live_beside_the_old_one(spec, trained_run, served, two_versions):
    first, second = two_versions
    assert first.previous_default is None and first.smoke_accuracy >= 0.7
    assert second.previous_default == "v0.1.0"
    assert served.default_version("digits") == "0.2.0"
    assert _versions(served) == {"0.1.0", "0.2.0"}  # rollback target kept
    assert served_state(served.settings)["digits"] == {"default": "v0.2.0", "versions": ["v0.2.0", "v0.1.0"]}
    assert _accuracy(served, trained_run[1], spec) >= 0.7


def test_workers_and_batching_come_from_the_spec_through_the_mar(spec, trained_run, served, settings):
    """deploy.workers, batch_size and max_batch_delay_ms reach TorchServe in the .mar's model-config.yaml, and
    a batch the server forms is answered row by row (8 concurrent clients against a 3 ms batch window)."""
    from components.deploy.load import run_load

    _, run = trained_run
    serving = spec.model_copy(update={"deploy": spec.deploy.model_copy(
        update={"workers": 2, "batch_size": 4, "max_batch_delay_ms": 3})})
    deploy_local(serving, register_onnx(settings, serving, run.optimized_model, "batched"), run.data,
                 settings)
    [described] = served.describe("digits")
    assert (described["batchSize"], described["maxBatchDelay"], len(described["workers"])) == (4, 3, 2)
    _, labels, paths = load_split(run.data, "test", spec.dataset.classes)
    with ThreadPoolExecutor(8) as pool:  # concurrent requests: the server batches them
        answers = list(pool.map(lambda p: served.predict("digits", p.read_bytes())["class"], paths[:40]))
    right = sum(answer == spec.dataset.classes[y] for answer, y in zip(answers, labels[:40]))
    assert right / 40 >= 0.7  # each row got its own image's answer
    assert run_load(served, "digits", [p.read_bytes() for p in paths[:40]], total=200, concurrency=8).errors == 0


def test_redeploying_the_default_changes_nothing(spec, trained_run, served, settings, two_versions):
    again = deploy_local(spec, "0.2.0", trained_run[1].data, settings)  # either version form
    assert again.version == "v0.2.0" and again.previous_default is None
    assert served.default_version("digits") == "0.2.0" and _versions(served) == {"0.1.0", "0.2.0"}


def test_only_the_default_and_the_previous_version_stay_served(spec, trained_run, served, settings, two_versions):
    _, run = trained_run
    third = deploy_local(spec, register_onnx(settings, spec, run.optimized_model, "run-3"),
                         run.data, settings)
    assert third.previous_default == "v0.2.0" and _versions(served) == {"0.2.0", "0.3.0"}


def test_failed_smoke_test_rolls_back_and_leaves_the_default_untouched(spec, trained_run, served, settings,
                                                                        tmp_path):
    _, run = trained_run
    deploy_local(spec, register_onnx(settings, spec, run.optimized_model), run.data, settings)
    bad = register_onnx(settings, spec, untrained_onnx(spec, tmp_path / "untrained.onnx"))
    result = deploy_local(spec, bad, run.data, settings)
    assert result.rolled_back and result.version == "v0.2.0" and result.previous_default == "v0.1.0"
    assert "smoke test: accuracy" in result.why and "the default stays v0.1.0" in result.why
    assert result.canary is None  # never got that far
    assert served.default_version("digits") == "0.1.0"
    assert _versions(served) == {"0.1.0"}
    assert served_state(settings)["digits"]["default"] == "v0.1.0"


def _wrapping_handler(tmp_path: Path, name: str, body: str) -> Path:
    """A serving handler that wraps Relay's own: the injected fault, then the real handling."""
    handler = tmp_path / f"{name}.py"
    handler.write_text("import time\nimport serving_handler\n\nserved = [0]\n\n\ndef handle(data, context):\n"
                       f"    if data is not None:\n        served[0] += 1\n        {body}\n"
                       "    return serving_handler.handle(data, context)\n")
    return handler


@pytest.mark.parametrize("fault, broken_bound", [
    ("time.sleep(0.3)", "p99 latency"),
    # Each worker's first request (the smoke test's) is answered; then every other one fails.
    ("assert served[0] % 2 == 1, 'injected failure'", "error rate"),
])
def test_a_canary_outside_its_bounds_rolls_back_while_the_old_version_serves(spec, trained_run, served, settings,
                                                                            tmp_path, fault, broken_bound):
    _, run = trained_run
    model = run.optimized_model
    deploy_local(spec, register_onnx(settings, spec, model, "run-1"), run.data, settings)
    spec = spec.model_copy(update={"deploy": spec.deploy.model_copy(update={
        "smoke_samples": 1, "canary_requests": 20, "canary_max_p99_ms": 200.0})})
    faulty = register_onnx(settings, spec, model, "run-faulty", handler=_wrapping_handler(tmp_path, "faulty", fault))
    result = deploy_local(spec, faulty, run.data, settings)
    assert result.rolled_back and broken_bound in result.why and "the default stays v0.1.0" in result.why, result
    assert result.canary["current"]["errors"] == 0 and result.canary["current"]["requests"] == 20
    assert served.default_version("digits") == "0.1.0" and _versions(served) == {"0.1.0"}
    assert served_state(settings)["digits"]["default"] == "v0.1.0"


def test_a_healthy_canary_goes_live_and_no_client_request_fails_during_the_change(spec, trained_run, served,
                                                                                    settings):
    """A steady client loop against the default endpoint while v0.2.0 is registered, canaried and switched to."""
    import threading

    _, run = trained_run
    model = run.optimized_model
    deploy_local(spec, register_onnx(settings, spec, model, "run-1"), run.data, settings)
    second = register_onnx(settings, spec, model, "run-2")
    image = next(iter(load_split(run.data, "test", spec.dataset.classes)[2])).read_bytes()
    answered, failures, stop = [], [], threading.Event()

    def client():
        while not stop.is_set():
            try:
                served.predict("digits", image)
                answered.append(1)
            except Exception as error:  # every failure counts, whatever its kind
                failures.append(repr(error))

    loop = threading.Thread(target=client)
    loop.start()
    try:
        result = deploy_local(spec, second, run.data, settings)
        time.sleep(0.5)
    finally:
        stop.set()
        loop.join()
    assert not result.rolled_back and result.why == "smoke test and canary passed"
    assert result.canary["new"]["requests"] == spec.deploy.canary_requests and result.canary["new"]["errors"] == 0
    assert result.canary["current"]["requests"] == spec.deploy.canary_requests
    assert served.default_version("digits") == "0.2.0"
    assert failures == [] and len(answered) > 50


def test_a_model_torchserve_refuses_is_removed_and_the_default_keeps_serving(spec, trained_run, served, settings,
                                                                             tmp_path):
    """The handler raises at initialize (the ONNX file is not a model): registration fails."""
    _, run = trained_run
    deploy_local(spec, register_onnx(settings, spec, run.optimized_model), run.data, settings)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an ONNX model")
    version = register_onnx(settings, spec, broken)
    with pytest.raises(ServingError, match="TorchServe refused digits v0.2.0"):
        deploy_local(spec, version, run.data, settings)
    assert served.default_version("digits") == "0.1.0" and _versions(served) == {"0.1.0"}
    assert _accuracy(served, run, spec) >= 0.7


def test_a_restart_serves_the_default_and_the_previous_version_again(spec, trained_run, served, settings,
                                                                     two_versions):
    for leftover in served.model_store.glob("*.mar"):  # served again from the registry, not from leftovers
        leftover.unlink()
    assert served.stop() is True
    assert served.pid() is None
    server, notes = start_serving(settings)
    assert notes == {"digits": "serving v0.1.0, v0.2.0 (default v0.2.0)"}
    assert server.default_version("digits") == "0.2.0" and _versions(server) == {"0.1.0", "0.2.0"}
    assert _accuracy(server, trained_run[1], spec) >= 0.7


def test_a_server_killed_between_deploys_comes_back_with_the_next_deploy(spec, trained_run, served, settings,
                                                                         two_versions):
    _, run = trained_run
    java = psutil.Process(served.pid())
    java.send_signal(signal.SIGKILL)
    java.wait(10)
    third = deploy_local(spec, register_onnx(settings, spec, run.optimized_model, "run-3"),
                         run.data, settings)
    assert third.previous_default == "v0.2.0"
    assert served.default_version("digits") == "0.3.0" and _versions(served) == {"0.2.0", "0.3.0"}


def test_a_swapped_artifact_is_refused_when_serving_again(spec, trained_run, served, settings, two_versions):
    """The .mar in the DVC cache is replaced: its sha256 no longer matches the registry's record."""
    registry = ModelRegistry(settings)
    digest = registry.model_info("digits", "v0.2.0")["sha256"]["model.mar"]
    swapped = 0
    for blob in (registry.path / ".dvc" / "cache").rglob("*"):
        if blob.is_file() and blob.read_bytes()[:2] == b"PK":  # the .mar zips in DVC's cache
            blob.chmod(0o644)
            blob.write_bytes(blob.read_bytes() + b"tampered")
            swapped += 1
    assert swapped >= 1 and digest
    served.stop()
    server, notes = start_serving(settings)
    assert "NOT serving default v0.2.0" in notes["digits"] and "refusing a swapped artifact" in notes["digits"]
    assert "0.2.0" not in _versions(server)


def _open_files(pid: int) -> set[str]:
    targets = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            pass  # closed while we looked
    return targets


def test_the_server_is_fully_detached_from_the_process_that_starts_it(served, settings):
    """As in an Airflow task, the starting process's stdin is a socket (to its supervisor), and it has
    another inheritable socket open: the server must hold neither, and must not share its session."""
    import socket
    import subprocess
    import sys

    from tests.conftest import PROJECT, settings_env

    supervisor, task_end = socket.socketpair()
    extra, _ = socket.socketpair()
    os.set_inheritable(extra.fileno(), True)
    starter = subprocess.run([sys.executable, "-c", "from components.deploy.torchserve import TorchServe; "
                              "print(TorchServe().start())"], stdin=task_end, pass_fds=[extra.fileno()],
                             env={**os.environ, **settings_env(settings), "PYTHONPATH": str(PROJECT)},
                             capture_output=True, text=True, timeout=120)
    assert starter.returncode == 0, starter.stderr[-2000:]
    pid = int(starter.stdout.split()[-1])
    assert served.pid() == pid
    assert os.getsid(pid) != os.getsid(0)  # its own session (led by the launcher, which has exited)
    held = _open_files(pid)
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    for sock in (task_end, extra):
        assert f"socket:[{os.fstat(sock.fileno()).st_ino}]" not in held
    for sock in (supervisor, task_end, extra):
        sock.close()


BAD_REQUESTS = {  # body, content type → status, a phrase of the reason
    "empty": (b"", "image/png", 400, "the request body is empty"),
    "random bytes": (bytes(range(256)) * 4, "application/octet-stream", 400, "not a decodable image"),
    "truncated png": (None, "image/png", 400, "not a decodable image"),
    "json body": (b'{"image": [1, 2, 3]}', "application/json", 415, "is not an image"),
    "text body": (b"hello", "text/plain", 415, "is not an image"),
    "too many bytes": (b"\0" * 16_000_001, "image/png", 413, "over the limit of 16000000"),
    "too many pixels": (None, "image/png", 413, "over the limit of 50.0 MP"),
}


def _body(kind: str, sample: Path) -> bytes:
    import io

    from PIL import Image

    if kind == "truncated png":
        return sample.read_bytes()[:40]
    buffer = io.BytesIO()
    Image.new("L", (8000, 8000)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_bad_requests_get_a_4xx_with_the_reason_and_serving_goes_on(spec, trained_run, served, settings):
    _, run = trained_run
    deploy_local(spec, register_onnx(settings, spec, run.optimized_model), run.data, settings)
    _, _, paths = load_split(run.data, "test", spec.dataset.classes)
    answers = {}
    for kind, (body, content_type, status, reason) in BAD_REQUESTS.items():
        with pytest.raises(ServingError) as refused:
            served.predict("digits", _body(kind, paths[0]) if body is None else body, content_type=content_type)
        answers[kind] = (refused.value.status, reason in str(refused.value), str(refused.value))
    assert {kind: answer[:2] for kind, answer in answers.items()} == {
        kind: (status, True) for kind, (_, _, status, _) in BAD_REQUESTS.items()}, answers
    assert _accuracy(served, run, spec, count=5) >= 0.6  # and it keeps serving
    import io

    from PIL import Image

    larger = io.BytesIO()  # another size and format: resized by the model's preprocessing, not refused
    Image.open(paths[0]).convert("RGB").resize((32, 32)).save(larger, format="JPEG")
    assert served.predict("digits", larger.getvalue(), content_type="image/jpeg")["class"] in spec.dataset.classes

    image = paths[0].read_bytes()  # either version form reaches the same model
    assert served.predict("digits", image, "v0.1.0") == served.predict("digits", image, "0.1.0")
    with pytest.raises(RelayError, match="'latest' is not a model version"):
        served.predict("digits", image, "latest")


def test_grpc_clients_get_invalid_argument_with_the_reason(spec, trained_run, served, settings):
    """TorchServe's gRPC inference API (its inference.proto, encoded by hand: the stubs ship only inside
    TorchServe's jar) maps the handler's 400 to INVALID_ARGUMENT, instead of UNAVAILABLE."""
    import grpc

    _, run = trained_run
    deploy_local(spec, register_onnx(settings, spec, run.optimized_model), run.data, settings)
    _, _, paths = load_split(run.data, "test", spec.dataset.classes)

    def varint(number: int) -> bytes:
        out = b""
        while True:
            low, number = number & 0x7F, number >> 7
            out += bytes([low | (0x80 if number else 0)])
            if not number:
                return out

    def field(number: int, data: bytes) -> bytes:  # a length-delimited protobuf field
        return varint(number << 3 | 2) + varint(len(data)) + data

    def predictions_request(body: bytes) -> bytes:  # PredictionsRequest{model_name, input: {"data": body}}
        return field(1, b"digits") + field(3, field(1, b"data") + field(2, body))

    with grpc.insecure_channel(f"127.0.0.1:{settings.ts_grpc_inference_port}") as channel:
        predictions = channel.unary_unary("/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions",
                                          request_serializer=bytes, response_deserializer=bytes)
        metadata = [("authorization", f"Bearer {served._key('inference')}")]
        answer = predictions(predictions_request(paths[0].read_bytes()), metadata=metadata, timeout=30)
        assert b'"class"' in answer
        with pytest.raises(grpc.RpcError) as refused:
            predictions(predictions_request(b"not an image"), metadata=metadata, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a decodable image" in refused.value.details()
