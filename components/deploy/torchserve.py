"""A TorchServe instance owned by Relay: its config, lifecycle and management/inference client.

Each instance has its own directory (config, model store, logs, key file) and its own TMPDIR,
where TorchServe keeps its pid file, so several instances (the demo's, a test's) can coexist and
each is stopped by its own pid.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil
import requests

from components.child_processes import stop_server, stop_session
from components.registry import model_version
from components.errors import ServingError
from components.settings import Settings, get_settings

JAVA_MAIN = "org.pytorch.serve.ModelServer"
# TorchServe's default logging writes eight lines per request, each twice (file and console): a third of
# the frontend's CPU per request on a small model. This keeps errors, startup, registration and access logs.
LOG_CONFIG = Path(__file__).with_name("torchserve_log4j2.xml")


def _socket_dir(serve_dir: Path) -> Path:
    """The instance's TMPDIR: ``<dir>/tmp``, unless that is too long for the workers' Unix sockets
    (``.ts.sock.<port>``; a socket path holds at most 107 bytes), then a short one in the system temp
    directory named by a hash of ``serve_dir``, so the same instance always finds its pid file."""
    tmp = serve_dir / "tmp"
    if len(os.fsencode(tmp)) + len("/.ts.sock.65535") <= 107:
        return tmp
    digest = hashlib.sha256(os.fsencode(serve_dir.resolve())).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"relay-ts-{digest}"


class PredictionRefused(ServingError):
    """The server answered a prediction request with an error status."""

    def __init__(self, status: int, reason: str):
        self.status = status
        kind = "the request was refused" if 400 <= status < 500 else "the server failed"
        super().__init__(f"HTTP {status}, {kind}: {reason}")


def error_reason(response: requests.Response) -> str:
    """The message in TorchServe's (and Relay's handler's) error body or in a V2 error body, else the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason
    return str(body.get("message") or body.get("error") or body) if isinstance(body, dict) else str(body)


class TorchServe:
    """Start, stop and talk to the local TorchServe described by ``settings``."""

    kind = "torchserve"

    def __init__(self, settings: Settings | None = None, log_config: Path | None = LOG_CONFIG):
        """``log_config``: a log4j2 file; None runs TorchServe with its own default logging."""
        self.log_config = log_config
        self.settings = s = settings or get_settings()
        self.dir = s.serve_dir
        self.model_store = self.dir / "model-store"
        self.tmp = _socket_dir(self.dir)
        self.config = self.dir / "config.properties"
        self.key_file = self.dir / "key_file.json"
        self.pid_file = self.tmp / ".model_server.pid"
        self.inference_url = f"http://{s.ts_host}:{s.ts_inference_port}"
        self.management_url = f"http://{s.ts_host}:{s.ts_management_port}"
        self.metrics_url = f"http://{s.ts_host}:{s.ts_metrics_port}"

    # -- lifecycle -------------------------------------------------------------------------
    def _ports(self) -> dict[str, int]:
        s = self.settings
        return {"RELAY_TS_INFERENCE_PORT": s.ts_inference_port, "RELAY_TS_MANAGEMENT_PORT": s.ts_management_port,
                "RELAY_TS_METRICS_PORT": s.ts_metrics_port, "RELAY_TS_GRPC_INFERENCE_PORT": s.ts_grpc_inference_port,
                "RELAY_TS_GRPC_MANAGEMENT_PORT": s.ts_grpc_management_port}

    def write_config(self) -> None:
        s = self.settings
        self.config.write_text("\n".join([
            f"inference_address=http://{s.ts_host}:{s.ts_inference_port}",
            f"management_address=http://{s.ts_host}:{s.ts_management_port}",
            f"metrics_address=http://{s.ts_host}:{s.ts_metrics_port}",
            f"grpc_inference_address={s.ts_host}",
            f"grpc_management_address={s.ts_host}",
            f"grpc_inference_port={s.ts_grpc_inference_port}",
            f"grpc_management_port={s.ts_grpc_management_port}",
            f"model_store={self.model_store}",
            # Only .mar files from this instance's own model store may be registered.
            f"allowed_urls=file://{self.model_store}/.*\\\\.mar",
            "enable_model_api=true",
            # Bodies over this get 413 from TorchServe itself; each model's handler applies its own,
            # smaller deploy.max_request_bytes.
            "max_request_size=67108864",
            "metrics_mode=prometheus",
            # Keys expire (token auth stays on); `relay serve key` renews them (docs/operations.md, "Keys").
            f"token_expiration_min={s.ts_token_expiration_min:g}",
            "default_workers_per_model=1",
            "install_py_dep_per_model=false",
            f"vmargs=-Xmx{s.ts_heap} -XX:+UseContainerSupport -Djava.io.tmpdir={self.tmp}",
            "",
        ]))

    def pid(self) -> int | None:
        """The pid of this instance's running server, or None (stale pid files are ignored)."""
        try:
            pid = int(self.pid_file.read_text().strip())
            process = psutil.Process(pid)
            return pid if JAVA_MAIN in process.cmdline() and process.status() != psutil.STATUS_ZOMBIE else None
        except (FileNotFoundError, ValueError, psutil.Error):
            return None

    def _check_ports_free(self) -> None:
        for variable, port in self._ports().items():
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((self.settings.ts_host, port))
                except OSError:
                    raise ServingError(
                        f"port {port} ({variable}) on {self.settings.ts_host} is in use: stop what holds it "
                        f"or set {variable} to a free port") from None

    def start(self, timeout: float = 90) -> int:
        """Start the server unless it already runs; wait until it answers. Returns its pid."""
        running = self.pid()
        if running:
            return running
        self._check_ports_free()
        for folder in (self.dir, self.model_store, self.tmp, self.dir / "logs"):
            folder.mkdir(parents=True, exist_ok=True)
        self.write_config()
        self.key_file.unlink(missing_ok=True)
        env = {**os.environ, "TMPDIR": str(self.tmp), "TEMP": str(self.tmp), "LOG_LOCATION": str(self.dir / "logs"),
               "METRICS_LOCATION": str(self.dir / "logs")}
        launcher = Path(sys.executable).with_name("torchserve")
        with open(self.dir / "logs" / "launcher.log", "ab") as log:
            # Fully detached: stdin from /dev/null, no inherited descriptors, its own session. An Airflow
            # task's stdin is a socket to its supervisor; a server holding it keeps the task slot busy.
            launcher_process = subprocess.Popen(
                [str(launcher), "--start", "--ncs", "--model-store", str(self.model_store), "--ts-config",
                 str(self.config), *(["--log-config", str(self.log_config)] if self.log_config else [])],
                cwd=self.dir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, close_fds=True,
                start_new_session=True)
        # The launcher exits once it has spawned the JVM; the JVM stays in the launcher's session.
        if launcher_process.wait() != 0:
            stop_session(launcher_process.pid)
            raise ServingError(f"TorchServe's launcher failed (exit {launcher_process.returncode}); see "
                               f"{self.dir / 'logs' / 'launcher.log'}")
        deadline = time.monotonic() + timeout
        why = f"did not become ready in {timeout:.0f}s"
        while time.monotonic() < deadline:
            pid = self.pid()
            if pid and self.key_file.exists():
                try:
                    if self._get(self.inference_url, "/ping", "inference", timeout=2).status_code == 200:
                        return pid
                except (ServingError, requests.Timeout):
                    pass  # not listening yet, or too busy starting to answer within the ping's timeout
            elif self.pid_file.exists() and not pid:
                why = "exited while starting"
                break
            time.sleep(0.5)
        self.stop()
        # stop() ends the process that the pid file names when it reads it; once, under load in CI, a JVM outlived
        # this error by an hour, holding this instance's ports. Whatever the launcher started is in its session.
        stop_session(launcher_process.pid)
        raise ServingError(f"TorchServe {why}; see {self.dir / 'logs'}")

    def stop(self, timeout: float = 30) -> bool:
        """Stop this instance (by its own pid). Returns whether one was running."""
        stopped = stop_server(self.pid(), self.pid_file, timeout)
        if stopped and not self.tmp.is_relative_to(self.dir):
            shutil.rmtree(self.tmp, ignore_errors=True)  # the short socket directory outside the instance's own
        return stopped

    # -- HTTP ------------------------------------------------------------------------------
    def _key_entry(self, kind: str) -> dict:
        for _ in range(20):
            try:
                return json.loads(self.key_file.read_text())[kind]
            except FileNotFoundError:
                raise ServingError(f"no TorchServe key file at {self.key_file}: is the server running? "
                                   "start it with `relay serve start`") from None
            except json.JSONDecodeError:
                time.sleep(0.1)  # TorchServe creates the file first and fills it a moment later
        raise ServingError(f"TorchServe key file {self.key_file} is not valid JSON")

    def _key(self, kind: str) -> str:
        """The current ``kind`` key (inference, management), renewed first when it has expired or is about to
        (within a tenth of its lifetime, at most 30 s), so a caller never gets a key that dies in flight."""
        entry = self._key_entry(kind)
        expires = entry.get("expiration time")
        margin = timedelta(seconds=min(30.0, self.settings.ts_token_expiration_min * 6))
        if kind != "API" and expires and datetime.fromisoformat(expires) <= datetime.now(timezone.utc) + margin:
            self.refresh_key(kind)
            entry = self._key_entry(kind)
        return entry["key"]

    def valid_key(self, kind: str = "inference") -> str:
        """A key that TorchServe accepts now (``relay serve key``): the key file's, renewed when it has expired."""
        if not self.pid():
            raise ServingError(f"no Relay TorchServe is running ({self.dir}): start it with `relay serve start`")
        return self._key(kind)

    def refresh_key(self, kind: str) -> None:
        """Renew an expiring key with the API key (which never expires); TorchServe rewrites the key file."""
        try:
            response = requests.post(f"{self.management_url}/token", params={"type": kind},
                                     headers={"Authorization": f"Bearer {self._key('API')}"}, timeout=10)
        except requests.ConnectionError:
            raise ServingError(f"TorchServe is not reachable at {self.management_url} to renew its {kind} key: "
                               "start it with `relay serve start`") from None
        if response.status_code != 200:
            raise ServingError(f"renewing the TorchServe {kind} key failed ({response.status_code}): {response.text}")

    def _request(self, method: str, base: str, path: str, kind: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self._key(kind)}", **kwargs.pop("headers", {})}
        try:
            return requests.request(method, base + path, headers=headers, timeout=kwargs.pop("timeout", 60), **kwargs)
        except requests.ConnectionError:
            raise ServingError(f"TorchServe is not reachable at {base}: start it with `relay serve start`") from None

    def _get(self, base: str, path: str, kind: str, **kwargs) -> requests.Response:
        return self._request("GET", base, path, kind, **kwargs)

    def _management(self, method: str, path: str, **kwargs) -> requests.Response:
        response = self._request(method, self.management_url, path, "management", **kwargs)
        if response.status_code >= 300:
            raise ServingError(f"TorchServe {method} {path} → {response.status_code}: {response.text.strip()}")
        return response

    def register(self, mar_file: str, model_name: str, **settings) -> None:
        """Register a .mar from the model store and wait for its workers. Workers and batching come from the
        .mar's model-config.yaml; ``settings`` (initial_workers, batch_size, max_batch_delay) override it."""
        self._management("POST", "/models", params={"url": mar_file, "model_name": model_name,
                                                    "synchronous": "true", **settings}, timeout=180)

    # -- the serving interface (components.deploy.servers.ModelServer) ------------------------
    def endpoints(self) -> str:
        return (f"TorchServe: inference {self.inference_url}, management {self.management_url}, keys in "
                f"{self.key_file}")

    def mar_path(self, model_name: str, version: str) -> Path:
        """Where a version's .mar is placed before ``install``: the model store, the only place TorchServe
        registers from."""
        return self.model_store / f"{model_name}-{model_version.served(version)}.mar"

    def install(self, model_name: str, version: str) -> None:
        """Register the .mar at ``mar_path`` (version and batching come from the .mar)."""
        self.register(self.mar_path(model_name, version).name, model_name)

    def versions(self, model_name: str) -> list[str]:
        """The served versions of ``model_name`` (TorchServe's form, 0.2.0)."""
        return sorted((entry["modelVersion"] for entry in self.describe(model_name)), key=model_version.order)

    def remove(self, model_name: str, version: str) -> None:
        self.unregister(model_name, model_version.served(version))

    def predictions_url(self, model_name: str, version: str | None = None) -> str:
        path = f"/predictions/{model_name}" + (f"/{model_version.served(version)}" if version else "")
        return self.inference_url + path

    def unregister(self, model_name: str, version: str) -> None:
        self._management("DELETE", f"/models/{model_name}/{version}")

    def set_default(self, model_name: str, version: str) -> None:
        self._management("PUT", f"/models/{model_name}/{version}/set-default")

    def describe(self, model_name: str) -> list[dict]:
        """All registered versions of ``model_name`` ([] when none)."""
        response = self._request("GET", self.management_url, f"/models/{model_name}/all", "management")
        return response.json() if response.status_code == 200 else []

    def default_version(self, model_name: str) -> str | None:
        response = self._request("GET", self.management_url, f"/models/{model_name}", "management")
        return response.json()[0]["modelVersion"] if response.status_code == 200 else None

    def predict(self, model_name: str, image: bytes, version: str | None = None,
                content_type: str = "application/octet-stream") -> dict:
        """The served model's answer for one image file; ``version`` in either form (v0.2.0 or 0.2.0)."""
        path = f"/predictions/{model_name}" + (f"/{model_version.served(version)}" if version else "")
        response = self._request("POST", self.inference_url, path, "inference", data=image,
                                 headers={"Content-Type": content_type})
        if response.status_code != 200:
            raise PredictionRefused(response.status_code, error_reason(response))
        return response.json()
