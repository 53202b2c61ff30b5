"""What deploying to the local TorchServe does that only TorchServe does: workers and batching from the .mar, a
canary that a faulty handler fails, a server fully detached from the task that starts it, and its gRPC API.
(What both servers do alike: test_serving_interface.py.)"""

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from components.data.dataset import load_split
from components.deploy.local import deploy_local, served_state
from components.deploy.torchserve import TorchServe
from tests.conftest import register_onnx

pytestmark = pytest.mark.slow  # starts TorchServe


@pytest.fixture
def served(settings):
    server = TorchServe(settings)
    yield server
    server.stop()


@pytest.fixture
def spec(trained_run):
    spec, _ = trained_run
    return spec.model_copy(update={"gate": spec.gate.model_copy(update={"min_accuracy": 0.7}),
                                   "deploy": spec.deploy.model_copy(update={"server": "torchserve"})})


def _versions(server: TorchServe) -> set[str]:
    return {entry["modelVersion"] for entry in server.describe("digits")}


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
