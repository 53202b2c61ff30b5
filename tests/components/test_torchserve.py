"""A real TorchServe per test: own directory, TMPDIR (pid file) and ports, stopped by its own pid."""

import json
import socket
import stat

import pytest
import requests

from components.deploy.torchserve import TorchServe
from components.errors import ServingError
from tests.conftest import make_settings


@pytest.fixture
def server(settings):
    instance = TorchServe(settings)
    yield instance
    instance.stop()


def test_starts_on_loopback_with_token_auth_on(server):
    pid = server.start()
    assert server.pid() == pid and server.pid_file.parent == server.settings.serve_dir / "tmp"
    assert stat.S_IMODE(server.key_file.stat().st_mode) == 0o600
    assert requests.get(f"{server.inference_url}/ping", timeout=5).status_code == 400  # no token, no answer
    wrong = requests.get(f"{server.inference_url}/ping", headers={"Authorization": "Bearer nope"}, timeout=5)
    assert wrong.status_code == 400
    keys = json.loads(server.key_file.read_text())
    ok = requests.get(f"{server.inference_url}/ping", headers={"Authorization": f"Bearer {keys['inference']['key']}"},
                      timeout=5)
    assert ok.status_code == 200 and ok.json()["status"] == "Healthy"
    assert requests.get(f"{server.metrics_url}/metrics", timeout=5).status_code == 200  # the probe-able route
    config = server.config.read_text()
    for key in ("inference_address", "management_address", "metrics_address"):
        assert f"{key}=http://127.0.0.1:" in config
    assert "grpc_inference_address=127.0.0.1" in config and "-Xmx256m" in config
    assert server.start() == pid  # idempotent: the running instance is reused


def test_expiring_keys_are_renewed_with_the_api_key(server):
    server.start()
    old = json.loads(server.key_file.read_text())["inference"]["key"]
    server.refresh_key("inference")
    new = json.loads(server.key_file.read_text())["inference"]["key"]
    assert new != old
    assert requests.get(f"{server.inference_url}/ping", headers={"Authorization": f"Bearer {old}"},
                        timeout=5).status_code == 400
    assert server._request("GET", server.inference_url, "/ping", "inference").status_code == 200


def test_port_in_use_is_one_clear_error(server):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", server.settings.ts_management_port))
        squatter.listen()
        with pytest.raises(ServingError, match=rf"port {server.settings.ts_management_port} "
                                               r"\(RELAY_TS_MANAGEMENT_PORT\) on 127.0.0.1 is in use"):
            server.start()
    assert server.pid() is None


def test_two_instances_run_side_by_side_and_stop_independently(server, tmp_path):
    other = TorchServe(make_settings(tmp_path / "other-home"))
    try:
        first, second = server.start(), other.start()
        assert first != second
        assert other.stop() is True
        assert other.pid() is None and server.pid() == first
    finally:
        other.stop()
    assert server.stop() is True and server.stop() is False


def test_client_without_server_says_how_to_start_it(server):
    with pytest.raises(ServingError, match="relay serve start"):
        server.predict("digits", b"")
