"""A V2 (Open Inference Protocol) server owned by Relay: MLServer started by ``v2_server`` in ``.venv-serve``,
its model repository, its token, and a client for it.

Its directory (``<serve dir>/v2``) holds the repository (one folder per model version, built from the version's
registered .mar, plus ``defaults.json``), the token file (mode 0600), the pid file and the log.
Registering a version publishes its folder atomically, then asks MLServer to load the model's versions that are
on disk (the V2 repository API): the versions already served keep serving while the new one loads.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import psutil
import requests

from components.atomic import write_json, write_text
from components.child_processes import stop_server, wait_listening
from components.deploy.package import V2_DEFAULTS_FILE, build_v2_version, v2_server_settings, v2_version_from_mar
from components.deploy.torchserve import PredictionRefused, error_reason
from components.errors import ServingError
from components.imaging import Preprocessing
from components.registry import model_version
from components.settings import PROJECT_DIR, Settings, get_settings, is_source_checkout
from components.spec import TaskSpec

SERVER_MODULE = "components.deploy.v2_server"


class V2Server:
    """Start, stop and talk to the local V2 server described by ``settings``."""

    kind = "kserve"

    def __init__(self, settings: Settings | None = None):
        self.settings = s = settings or get_settings()
        self.dir = s.serve_dir / "v2"
        self.repository = self.dir / "repository"
        self.token_file = self.dir / "token"
        self.pid_file = self.dir / "server.pid"
        self.log_file = self.dir / "server.log"
        self.url = self.inference_url = f"http://{s.ts_host}:{s.v2_http_port}"
        self.grpc_address = f"{s.ts_host}:{s.v2_grpc_port}"

    # -- lifecycle -------------------------------------------------------------------------
    def pid(self) -> int | None:
        """The pid of this instance's running server, or None (a stale pid file is ignored)."""
        try:
            pid = int(self.pid_file.read_text().strip())
            command = psutil.Process(pid).cmdline()
        except (FileNotFoundError, ValueError, psutil.Error):
            return None
        return pid if SERVER_MODULE in command and str(self.repository) in command else None

    def _write_server_settings(self) -> None:
        s = self.settings
        write_json(self.repository / "settings.json", v2_server_settings(s.ts_host, s.v2_http_port, s.v2_grpc_port))

    def _check_ports_free(self) -> None:
        for name, port in (("RELAY_V2_HTTP_PORT", self.settings.v2_http_port),
                           ("RELAY_V2_GRPC_PORT", self.settings.v2_grpc_port)):
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((self.settings.ts_host, port))
                except OSError:
                    raise ServingError(f"port {port} ({name}) on {self.settings.ts_host} is in use: stop what "
                                       f"holds it or set {name} to a free port") from None

    def start(self, timeout: float = 120) -> int:
        """Start the server unless it already runs; wait until it is ready. Returns its pid.

        It starts empty, as TorchServe does with ``--ncs``: what a stopped server had is not trusted, and
        ``local.start_serving`` installs the recorded versions again from the registry, sha256-checked."""
        if running := self.pid():
            return running
        python = self.settings.serve_env / "bin" / "python"  # MLServer's pins clash with Airflow's: a venv of its own
        if not python.exists():
            build = ("run `make setup`" if is_source_checkout() else
                     "run `make setup` in a Relay checkout and set RELAY_SERVE_ENV to its .venv-serve")
            raise ServingError(f"the V2 server's environment {self.settings.serve_env} is missing: {build} (or set "
                               "RELAY_SERVE_ENV to an environment built from requirements/serve.lock), or serve the "
                               "task on TorchServe with deploy.server: torchserve in its spec")
        self._check_ports_free()
        shutil.rmtree(self.repository, ignore_errors=True)
        self.repository.mkdir(parents=True)
        self._write_server_settings()
        if not self.token_file.exists():
            self.rotate_token()
        with open(self.log_file, "ab") as log:
            # Detached like TorchServe: no inherited stdin (an Airflow task's is a socket), its own session.
            server = subprocess.Popen(
                [str(python), "-m", SERVER_MODULE, str(self.repository),
                 "--token-file", str(self.token_file)],
                cwd=self.dir, env={**os.environ, "PYTHONPATH": str(self._relay_code())}, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, close_fds=True, start_new_session=True)
        write_text(self.pid_file, f"{server.pid}\n")
        problem = wait_listening(server, self.settings.ts_host, self.settings.v2_http_port, timeout)
        deadline = time.monotonic() + timeout
        while problem is None and time.monotonic() < deadline:
            try:
                if self._request("GET", "/v2/health/ready", timeout=5).status_code == 200:
                    return server.pid
            except ServingError:
                pass
            if server.poll() is not None:
                problem = f"exited with {server.returncode}"
            time.sleep(0.3)
        self.stop()
        raise ServingError(f"the V2 server {problem or 'was not ready in time'}; see {self.log_file}")

    def _relay_code(self) -> Path:
        """A folder holding only Relay's ``components`` package, for the server's path: in an installed Relay the
        package's parent is the Airflow environment's site-packages, whose packages must not shadow the server
        environment's own."""
        code = self.dir / "relay-code"
        code.mkdir(parents=True, exist_ok=True)
        link = code / "components"
        if not (link.is_symlink() and link.resolve() == PROJECT_DIR / "components"):
            staged = code / f".components-{os.getpid()}"
            staged.unlink(missing_ok=True)
            staged.symlink_to(PROJECT_DIR / "components", target_is_directory=True)
            staged.replace(link)  # atomic: a server starting beside this one never sees no link
        return code

    def stop(self, timeout: float = 30) -> bool:
        """Stop this instance (by its own pid). Returns whether one was running."""
        return stop_server(self.pid(), self.pid_file, timeout)

    # -- token -----------------------------------------------------------------------------
    def token(self) -> str:
        try:
            return self.token_file.read_text().strip()
        except FileNotFoundError:
            raise ServingError(f"no V2 server token at {self.token_file}: start the server with `relay serve start`"
                               ) from None

    def rotate_token(self) -> str:
        """A new token, in force at once (the server reads the file again when it changes); the old one stops
        working."""
        self.dir.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        write_text(self.token_file, token + "\n")
        self.token_file.chmod(0o600)
        return token

    # -- models ----------------------------------------------------------------------------
    def add_version(self, spec: TaskSpec, version: str, onnx_model: Path, prep: Preprocessing,
                    batch_time_s: float = 0.0) -> None:
        """Publish ``version`` of ``spec.name`` into the repository and load it beside the versions served
        (``batch_time_s``: see ``package.v2_model_settings``)."""
        build_v2_version(spec, version, onnx_model, prep, self._version_dir(spec.name, version), batch_time_s)
        self._load(spec.name)

    # -- the serving interface (components.deploy.servers.ModelServer) ------------------------
    def endpoints(self) -> str:
        return (f"the V2 server (MLServer): REST {self.url}, gRPC {self.grpc_address}, token in {self.token_file} "
                "(send 'Authorization: Bearer <token>')")

    def valid_key(self, kind: str = "inference") -> str:
        """The token (one for inference and the repository API alike; it does not expire: ``rotate_token``)."""
        if not self.pid():
            raise ServingError(f"no Relay V2 server is running ({self.dir}): start it with `relay serve start`")
        return self.token()

    def mar_path(self, model_name: str, version: str) -> Path:
        """Where a version's registered .mar is placed before ``install``."""
        return self.dir / "incoming" / f"{model_name}-{model_version.served(version)}.mar"

    def install(self, model_name: str, version: str) -> None:
        """Serve ``version`` from the .mar at ``mar_path`` (its model, config and class names), beside the versions
        served; the .mar is removed once its files are in the repository."""
        mar = self.mar_path(model_name, version)
        v2_version_from_mar(mar, model_name, version, self._version_dir(model_name, version))
        mar.unlink()
        try:
            self._load(model_name)
        except ServingError:
            self.remove(model_name, version)  # what served before keeps serving
            raise

    def predictions_url(self, model_name: str, version: str | None = None) -> str:
        return f"{self.url}/predictions/{model_name}" + (f"/{model_version.served(version)}" if version else "")

    def remove(self, model_name: str, version: str) -> None:
        """Stop serving ``version``: its folder goes, and MLServer unloads what is no longer on disk."""
        shutil.rmtree(self._version_dir(model_name, version), ignore_errors=True)
        if any((self.repository / model_name).glob("*/model-settings.json")):
            self._load(model_name)
        else:
            self._repository_call(f"/v2/repository/models/{model_name}/unload")

    def set_default(self, model_name: str, version: str) -> None:
        defaults = self._defaults()
        write_json(self.repository / V2_DEFAULTS_FILE, {**defaults, model_name: model_version.served(version)})

    def default_version(self, model_name: str) -> str | None:
        return self._defaults().get(model_name)

    def versions(self, model_name: str) -> list[str]:
        """The versions of ``model_name`` the server has ready."""
        index = self._repository_call("/v2/repository/index", json={"ready": True}).json()
        return sorted((item.get("version") or "" for item in index if item["name"] == model_name),
                      key=model_version.order)

    def _version_dir(self, model_name: str, version: str) -> Path:
        return self.repository / model_name / model_version.served(version)

    def _defaults(self) -> dict[str, str]:
        path = self.repository / V2_DEFAULTS_FILE
        return json.loads(path.read_text()) if path.exists() else {}

    def _load(self, model_name: str) -> None:
        self._repository_call(f"/v2/repository/models/{model_name}/load")

    def _repository_call(self, path: str, **kwargs) -> requests.Response:
        response = self._request("POST", path, **kwargs)
        if response.status_code != 200:
            raise ServingError(f"the V2 server refused POST {path} ({response.status_code}): "
                               f"{error_reason(response)}; see {self.log_file}")
        return response

    # -- inference -------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        try:
            return requests.request(method, self.url + path, headers=headers, timeout=kwargs.pop("timeout", 120),
                                    **kwargs)
        except requests.ConnectionError:
            raise ServingError(f"the V2 server is not reachable at {self.url}: start it with "
                               "`relay serve start`") from None

    def predict(self, model_name: str, image: bytes, version: str | None = None,
                content_type: str = "application/octet-stream") -> dict:
        """The served model's answer for one image file (TorchServe's route and answer)."""
        path = f"/predictions/{model_name}" + (f"/{model_version.served(version)}" if version else "")
        response = self._request("POST", path, data=image, headers={"Content-Type": content_type})
        if response.status_code != 200:
            raise PredictionRefused(response.status_code, error_reason(response))
        return response.json()

    def infer(self, model_name: str, request: dict, version: str | None = None) -> dict:
        """A V2 inference request, answered as the V2 response."""
        path = f"/v2/models/{model_name}" + (f"/versions/{model_version.served(version)}" if version else "")
        response = self._request("POST", f"{path}/infer", json=request)
        if response.status_code != 200:
            raise PredictionRefused(response.status_code, error_reason(response))
        return response.json()

