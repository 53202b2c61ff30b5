"""The HTTP floor and the V2 candidates as real processes on 127.0.0.1, each in the environment it needs, for the
benchmarks and their tests. Each context manager yields the URL to POST to and stops its server by its pid."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.floor_server import PATH as FLOOR_PATH
from bench.v2_candidates import RAW_PATH
from components.child_processes import wait_listening
from components.settings import PROJECT_DIR, free_ports

V2_INFER_PATH = "/v2/models/digits/infer"


@contextlib.contextmanager
def listening(command: list[str], port: int, what: str, cwd: Path = PROJECT_DIR, timeout: float = 90) -> Iterator[None]:
    """Run ``command`` (a server on 127.0.0.1:``port``) until the block ends; stop it by its pid."""
    server = subprocess.Popen(command, cwd=cwd, env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        if (problem := wait_listening(server, "127.0.0.1", port, timeout)) is not None:
            raise RuntimeError(f"{what} {problem}")
        yield
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextlib.contextmanager
def floor_server(model: Path, preprocessing: Path) -> Iterator[str]:
    """bench/floor_server.py (this environment): a raw image body in."""
    (port,) = free_ports(1)
    with listening([sys.executable, "-m", "bench.floor_server", str(model), str(preprocessing), str(port)], port,
                   "the floor server"):
        yield f"http://127.0.0.1:{port}{FLOOR_PATH}"


@dataclass(frozen=True)
class FloorTarget:
    """The floor as a load target beside the model servers (components.deploy.load.LoadTarget): one model, no
    token (the key is sent, as to the servers, and ignored)."""

    url: str

    def valid_key(self) -> str:
        return "unchecked"

    def predictions_url(self, model_name: str) -> str:
        return self.url


@contextlib.contextmanager
def floor_target(model: Path, preprocessing: Path) -> Iterator[FloorTarget]:
    """The floor on ``model`` as a load target (a bake-off's ``ReferenceServer``)."""
    with floor_server(model, preprocessing) as url:
        yield FloorTarget(url)


@contextlib.contextmanager
def kserve_server(model: Path, preprocessing: Path) -> Iterator[str]:
    """kserve's ModelServer (.venv-kserve): a V2 request in."""
    (port,) = free_ports(1)
    with listening([str(PROJECT_DIR / ".venv-kserve" / "bin" / "python"), "-m", "bench.v2_candidates.kserve_model",
                    str(model), str(preprocessing), str(port)], port, "kserve's ModelServer"):
        yield f"http://127.0.0.1:{port}{V2_INFER_PATH}"


@contextlib.contextmanager
def mlserver_server(folder: Path, model: Path, preprocessing: Path, raw: bool,
                    metrics_on: bool = True) -> Iterator[str]:
    """MLServer (.venv-serve) configured in ``folder``: a V2 request in, or with ``raw`` an image body on its
    custom route."""
    http, grpc, metrics = free_ports(3)
    (folder / "digits").mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": http, "grpc_port": grpc, "metrics_port": metrics,
        "parallel_workers": 0, "load_models_at_startup": True,
        # None turns off its Prometheus endpoint and the middleware that counts every request for it.
        **({} if metrics_on else {"metrics_endpoint": None})}))
    (folder / "digits" / "model-settings.json").write_text(json.dumps({
        "name": "digits", "implementation": f"bench.v2_candidates.mlserver_runtime.Digits{'Raw' if raw else ''}",
        "parameters": {"extra": {"model": str(model), "preprocessing": str(preprocessing)}}}))
    with listening([str(PROJECT_DIR / ".venv-serve" / "bin" / "mlserver"), "start", str(folder)], http, "MLServer",
                   cwd=folder):
        yield f"http://127.0.0.1:{http}{RAW_PATH if raw else V2_INFER_PATH}"
