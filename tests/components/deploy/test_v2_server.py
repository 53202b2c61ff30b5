"""Relay's V2 server (MLServer in .venv-serve) as a real process on 127.0.0.1: it answers what the model says on
every way in (TorchServe's raw body, V2 BYTES images, V2 FP32 tensors), refuses everything without the token on
REST and gRPC, takes a renewed token without a restart, gives bad input a 4xx with the reason, serves several
versions with Relay's default, and starts empty after a restart. (Installing from the registry's .mar, the
canary and the restart from the registry: tests/components/deploy/test_serving_interface.py, on both servers.)"""

from __future__ import annotations

import base64
import json
import subprocess

import grpc
import psutil
import pytest
import requests

from components.data.dataset import load_split
from components.deploy.torchserve import PredictionRefused
from components.errors import ServingError
from components.deploy.v2 import SERVER_MODULE, V2Server
from components.imaging import preprocess_files
from components.onnx_runtime import onnx_predictor
from components.settings import PROJECT_DIR
from components.train import model_preprocessing
from tests.conftest import is_loopback, listening_addresses, make_settings

SMALL_LIMIT = 4000  # deploy.max_request_bytes for this server: the digits images are ~130 bytes


@pytest.fixture(scope="module")
def served(trained_run, tmp_path_factory):
    spec, run = trained_run
    spec = spec.model_copy(update={"deploy": spec.deploy.model_copy(update={"max_request_bytes": SMALL_LIMIT})})
    server = V2Server(make_settings(tmp_path_factory.mktemp("v2") / "relay-home"))
    server.start()
    try:
        server.add_version(spec, "v0.1.0", run.optimized_model, model_preprocessing(run.train))
        server.set_default("digits", "v0.1.0")
        _, _, paths = load_split(run.data, "test", spec.dataset.classes)
        yield server, spec, run, paths[:20]
    finally:
        server.stop()


def _expected(run, paths) -> list[int]:
    images = preprocess_files(paths, model_preprocessing(run.train))
    return onnx_predictor(run.optimized_model)(images).argmax(1).tolist()


def _images_request(bodies: list[bytes]) -> dict:
    return {"inputs": [{"name": "image", "shape": [len(bodies)], "datatype": "BYTES",
                        "data": [base64.b64encode(body).decode() for body in bodies]}]}


def test_every_way_in_answers_what_the_model_says(served):
    server, spec, run, paths = served
    expected = _expected(run, paths)
    raw = [server.predict("digits", p.read_bytes())["index"] for p in paths]
    batch = server.infer("digits", _images_request([p.read_bytes() for p in paths]))
    outputs = {o["name"]: o for o in batch["outputs"]}
    tensor = preprocess_files(paths, model_preprocessing(run.train))
    as_tensor = server.infer("digits", {"inputs": [{"name": "input", "shape": list(tensor.shape), "datatype": "FP32",
                                                    "data": tensor.ravel().tolist()}]})
    assert raw == expected and outputs["index"]["data"] == expected
    assert outputs["class"]["data"] == [spec.dataset.classes[i] for i in expected]
    assert {o["name"]: o for o in as_tensor["outputs"]}["index"]["data"] == expected
    assert outputs["logits"]["shape"] == [len(paths), len(spec.dataset.classes)]
    assert batch["model_version"] == "0.1.0"


def _in_serve_env(settings, module: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m module args`` in the V2 server's own environment (.venv-serve), from a plain environment."""
    return subprocess.run([str(settings.serve_env / "bin" / "python"), "-m", module, *args], cwd=PROJECT_DIR,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(PROJECT_DIR), "PATH": "/usr/bin:/bin"})


def _grpc_infer(server: V2Server, version: str, paths, token: str, model: str = "digits") -> dict:
    """ModelInfer over gRPC with image files as BYTES (raw bytes: base64 is only JSON's encoding of them); an empty
    ``version`` names none."""
    answered = _in_serve_env(server.settings, "tests.components.deploy.v2_grpc_client", server.grpc_address, token,
                             model, version, *map(str, paths))
    answered.check_returncode()
    return json.loads(answered.stdout)


def test_grpc_clients_send_image_files_as_bytes_and_get_what_the_model_says(served):
    server, spec, run, paths = served
    answer = _grpc_infer(server, "0.1.0", paths, server.token())
    assert "outputs" in answer, answer
    assert answer["model_version"] == "0.1.0" and answer["outputs"]["index"] == _expected(run, paths)
    assert answer["outputs"]["class"] == [spec.dataset.classes[i] for i in _expected(run, paths)]
    assert _grpc_infer(server, "0.1.0", paths[:1], "wrong")["status"] == "UNAUTHENTICATED"
    no_default = _grpc_infer(server, "", paths[:1], server.token(), model="shapes")
    assert no_default == {"status": "NOT_FOUND", "details": "model shapes has no default version on this server"}


def test_it_listens_on_loopback_only(served):
    server, *_ = served
    addresses = listening_addresses(server.url)
    assert addresses and all(is_loopback(ip) for ip in addresses), addresses
    assert any(str(server.settings.v2_grpc_port) == str(port) for port in _listening_ports(server))


def _listening_ports(server: V2Server) -> set[int]:
    process = psutil.Process(server.pid())
    return {c.laddr.port for c in process.net_connections("inet") if c.status == psutil.CONN_LISTEN}


def _grpc_live(server: V2Server, token: str | None) -> grpc.StatusCode:
    """ServerLive over gRPC without generated stubs: an empty request is a valid ServerLiveRequest."""
    with grpc.insecure_channel(server.grpc_address) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ServerLive")
        try:
            answer = call(b"", timeout=10, metadata=[("authorization", f"Bearer {token}")] if token else None)
        except grpc.RpcError as error:
            return error.code()
    assert answer == b"\x08\x01"  # live: true
    return grpc.StatusCode.OK


def test_everything_needs_the_token_on_rest_and_grpc(served):
    server, _, _, paths = served
    image = paths[0].read_bytes()
    for method, path, body in [("POST", "/predictions/digits", image), ("POST", "/predictions/digits/0.1.0", image),
                               ("POST", "/v2/models/digits/infer", json.dumps(_images_request([image]))),
                               ("GET", "/v2/health/ready", None), ("GET", "/v2/models/digits", None),
                               ("POST", "/v2/repository/index", "{}"),
                               ("POST", "/v2/repository/models/digits/unload", None)]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": server.token()}):
            refused = requests.request(method, server.url + path, data=body, headers=headers, timeout=30)
            assert refused.status_code == 401 and "a token is required" in refused.json()["message"], path
    assert _grpc_live(server, None) == grpc.StatusCode.UNAUTHENTICATED
    assert _grpc_live(server, "wrong") == grpc.StatusCode.UNAUTHENTICATED
    assert _grpc_live(server, server.token()) == grpc.StatusCode.OK
    assert server.versions("digits") == ["0.1.0"]  # the refused unload did nothing


def test_a_renewed_token_is_in_force_at_once_and_the_old_one_is_refused(served):
    server, _, _, paths = served
    old = server.token()
    new = server.rotate_token()
    answer = requests.post(server.url + "/predictions/digits", data=paths[0].read_bytes(), timeout=30,
                           headers={"Authorization": f"Bearer {new}"})
    stale = requests.post(server.url + "/predictions/digits", data=paths[0].read_bytes(), timeout=30,
                          headers={"Authorization": f"Bearer {old}"})
    assert answer.status_code == 200 and stale.status_code == 401
    assert _grpc_live(server, old) == grpc.StatusCode.UNAUTHENTICATED and _grpc_live(server, new) == grpc.StatusCode.OK
    assert oct(server.token_file.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("body, content_type, status, reason", [
    (b"not an image at all", "application/octet-stream", 400, "not a decodable image"),
    (b"", "application/octet-stream", 400, "the request body is empty"),
    (b"\x89PNG" + b"\0" * SMALL_LIMIT, "image/png", 413, "over the limit of 4000 (deploy.max_request_bytes)"),
    (b"{}", "application/json", 415, "is not an image"),
])
def test_a_bad_body_gets_torchserves_4xx_with_the_reason(served, body, content_type, status, reason):
    server, *_ = served
    with pytest.raises(PredictionRefused) as refused:
        server.predict("digits", body, content_type=content_type)
    assert refused.value.status == status and reason in str(refused.value)


@pytest.mark.parametrize("tensor, reason", [
    ({"name": "image", "shape": [1], "datatype": "BYTES", "data": ["%%% not base64"]}, "not base64"),
    ({"name": "image", "shape": [1], "datatype": "BYTES",
      "data": [base64.b64encode(b"not an image").decode()]}, "not a decodable image"),
    ({"name": "x", "shape": [1, 3], "datatype": "INT32", "data": [1, 2, 3]}, "is INT32: send the image files"),
    ({"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}, "this model takes"),
])
def test_a_bad_v2_request_gets_400_with_the_reason(served, tensor, reason):
    server, *_ = served
    with pytest.raises(PredictionRefused) as refused:
        server.infer("digits", {"inputs": [tensor]})
    assert refused.value.status == 400 and reason in str(refused.value)


def test_versions_are_served_side_by_side_and_requests_without_one_go_to_relays_default(served):
    server, spec, run, paths = served
    image = paths[0].read_bytes()
    server.add_version(spec, "v0.2.0", run.optimized_model, model_preprocessing(run.train))
    try:
        assert server.versions("digits") == ["0.1.0", "0.2.0"]
        assert server.infer("digits", _images_request([image]))["model_version"] == "0.1.0"  # default unchanged
        assert _grpc_infer(server, "", paths[:1], server.token())["model_version"] == "0.1.0"  # not the newest
        assert server.infer("digits", _images_request([image]), version="v0.2.0")["model_version"] == "0.2.0"
        server.set_default("digits", "0.2.0")
        assert server.infer("digits", _images_request([image]))["model_version"] == "0.2.0"
        assert _grpc_infer(server, "", paths[:1], server.token())["model_version"] == "0.2.0"
        assert server.predict("digits", image, version="0.2.0")["index"] == server.predict("digits", image)["index"]
    finally:
        server.set_default("digits", "v0.1.0")
        server.remove("digits", "v0.2.0")
    assert server.versions("digits") == ["0.1.0"]
    with pytest.raises(PredictionRefused) as gone:
        server.predict("digits", image, version="0.2.0")
    assert gone.value.status == 404


def test_a_restarted_server_serves_nothing_until_versions_are_installed_again(served):
    """Like TorchServe's --ncs: local.start_serving installs the recorded versions from the registry again."""
    server, spec, run, paths = served
    first = server.pid()
    assert server.stop() and server.pid() is None
    with pytest.raises(ServingError, match="not reachable"):
        server.predict("digits", paths[0].read_bytes())
    assert server.start() != first
    assert server.versions("digits") == [] and server.default_version("digits") is None
    server.add_version(spec, "v0.1.0", run.optimized_model, model_preprocessing(run.train))
    server.set_default("digits", "v0.1.0")
    assert [server.predict("digits", p.read_bytes())["index"] for p in paths] == _expected(run, paths)


@pytest.mark.parametrize("settings_json, refusal", [
    ({"host": "0.0.0.0"}, "host 0.0.0.0 is not loopback"),
    # MLServer's worker processes would load the models where the raw image route cannot find them.
    ({"host": "127.0.0.1", "parallel_workers": 2}, "parallel_workers must be 0"),
])
def test_the_server_refuses_settings_it_cannot_serve_safely(tmp_path, settings, settings_json, refusal):
    (tmp_path / "settings.json").write_text(json.dumps({**settings_json, "http_port": 1, "grpc_port": 2}))
    (tmp_path / "token").write_text("t")
    started = _in_serve_env(settings, SERVER_MODULE, str(tmp_path), "--token-file", str(tmp_path / "token"))
    assert started.returncode != 0 and refusal in started.stderr
    assert str(tmp_path / "settings.json") in started.stderr


def test_the_server_has_relays_components_package_alone_on_its_path(served):
    """What the server imports of Relay is the components package the caller runs, linked on its own: in an
    installed Relay the package's parent is the Airflow environment's site-packages, which must not shadow the
    server environment's packages."""
    server, *_ = served
    path = psutil.Process(server.pid()).environ()["PYTHONPATH"]
    assert path == str(server.dir / "relay-code")
    linked = list((server.dir / "relay-code").iterdir())
    assert [entry.name for entry in linked] == ["components"]
    assert linked[0].is_symlink() and linked[0].resolve() == PROJECT_DIR / "components"


def test_a_missing_server_environment_is_one_error_naming_it_and_what_to_set(tmp_path):
    settings = make_settings(tmp_path / "relay-home", serve_env=tmp_path / "no-such-venv")
    with pytest.raises(ServingError) as refused:
        V2Server(settings).start()
    message = str(refused.value)
    assert str(tmp_path / "no-such-venv") in message and "RELAY_SERVE_ENV" in message and "make setup" in message
    assert "deploy.server: torchserve" in message
    assert not (settings.serve_dir / "v2" / "server.pid").exists()  # nothing was started
