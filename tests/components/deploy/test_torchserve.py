"""A real TorchServe per test: own directory, TMPDIR (pid file) and ports, stopped by its own pid."""

import json
import socket
import stat

import psutil
import pytest
import requests

from components.deploy.torchserve import TorchServe
from components.errors import ServingError
from tests.conftest import make_settings

pytestmark = pytest.mark.slow  # starts TorchServe


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


def _processes_of(server: TorchServe) -> list[psutil.Process]:
    """The processes started for ``server``: its JVM is the one given its config file."""
    found = []
    for process in psutil.process_iter():
        try:
            if str(server.config) in process.cmdline():
                found.append(process)
        except psutil.Error:
            continue
    return found


def test_a_start_that_fails_leaves_no_server_behind(server, monkeypatch):
    # The pid file never names the JVM when read (as when CI once found a JVM holding a failed start's ports an
    # hour later): stop() finds nothing to stop, and the launcher's session still takes the JVM down.
    monkeypatch.setattr(TorchServe, "pid", lambda self: None)
    with pytest.raises(ServingError, match=r"TorchServe (exited while starting|did not become ready in 20s)"):
        server.start(timeout=20)
    assert _processes_of(server) == []
    server._check_ports_free()  # would raise naming a port still held


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


def _non_loopback_addresses() -> list[str]:
    import psutil

    return [address.address for addresses in psutil.net_if_addrs().values() for address in addresses
            if address.family == socket.AF_INET and not address.address.startswith("127.")]


@pytest.mark.skipif(not _non_loopback_addresses(), reason="this machine has no non-loopback IPv4 address to try")
def test_no_port_answers_on_any_other_address(server):
    server.start()
    s = server.settings
    ports = [s.ts_inference_port, s.ts_management_port, s.ts_metrics_port, s.ts_grpc_inference_port,
             s.ts_grpc_management_port]
    for address in _non_loopback_addresses():
        for port in ports:
            with socket.socket() as probe:
                probe.settimeout(2)
                assert probe.connect_ex((address, port)) != 0, f"{address}:{port} accepts connections"
    with socket.create_connection(("127.0.0.1", s.ts_management_port), timeout=2):
        pass  # while loopback does


@pytest.mark.parametrize("url", ["file:///etc/passwd", "https://example.com/model.mar", "file://{tmp}/elsewhere.mar",
                                 "{tmp}/elsewhere.mar", "file://{store}/../outside.mar"])
def test_only_mar_files_from_the_model_store_can_be_registered(server, tmp_path, url):
    server.start()
    outside = server.model_store.parent / "outside.mar"
    outside.write_bytes(b"PK not really a mar")
    (tmp_path / "elsewhere.mar").write_bytes(b"PK")
    response = server._request("POST", server.management_url, "/models", "management",
                               params={"url": url.format(store=server.model_store, tmp=tmp_path),
                                       "model_name": "x"})
    assert response.status_code in (400, 403, 404), response.text
    # A URL is refused by allowed_urls (or for its ../); a bare path is looked up inside the model store only.
    assert any(reason in response.text for reason in ("does not match any allowed URL", "Model not found at",
                                                      "Relative path is not allowed"))
    assert server.describe("x") == []


def test_the_management_api_refuses_the_inference_key(server):
    server.start()
    inference_key = json.loads(server.key_file.read_text())["inference"]["key"]
    response = requests.get(f"{server.management_url}/models", headers={"Authorization": f"Bearer {inference_key}"},
                            timeout=5)
    assert response.status_code == 400


def test_an_instance_in_a_deep_directory_keeps_its_sockets_in_a_short_one(tmp_path):
    """Workers connect over Unix sockets in TMPDIR, whose path may hold 107 bytes at most: a deep instance
    directory gets a short TMPDIR of its own, the same every time (its pid file is found again)."""
    from components.deploy.torchserve import _socket_dir

    deep = tmp_path / ("d" * 60) / ("e" * 60) / "serve"
    short = _socket_dir(deep)
    assert len(str(short / ".ts.sock.65535")) <= 107
    assert short == _socket_dir(deep) != _socket_dir(tmp_path / ("d" * 60) / ("f" * 60) / "serve")
    assert _socket_dir(tmp_path / "serve") == tmp_path / "serve" / "tmp"
