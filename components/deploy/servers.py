"""The one serving interface: TorchServe and Relay's V2 server (MLServer) answer the same calls, so that the local
deploy (register, smoke test, canary, default and previous versions, restart from the registry), ``relay serve``,
``relay predict`` and the lineage card work the same on either. ``deploy.server`` in a task's spec picks one."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from components.deploy.torchserve import TorchServe
from components.deploy.v2 import V2Server
from components.errors import RelayError
from components.settings import Settings, get_settings
from components.spec import DeploySpec

SERVERS: dict[str, type] = {"torchserve": TorchServe, "kserve": V2Server}
NAMES = {"torchserve": "TorchServe", "kserve": "the V2 server (MLServer)"}
DEFAULT_SERVER: str = DeploySpec.model_fields["server"].default  # what a spec without deploy.server deploys to


class ModelServer(Protocol):
    kind: str  # a deploy.server value
    dir: Path
    inference_url: str

    def pid(self) -> int | None: ...
    def start(self, timeout: float = ...) -> int: ...
    def stop(self, timeout: float = ...) -> bool: ...
    def endpoints(self) -> str: ...
    def valid_key(self, kind: str = ...) -> str: ...
    def mar_path(self, model_name: str, version: str) -> Path: ...
    def install(self, model_name: str, version: str) -> None: ...
    def versions(self, model_name: str) -> list[str]: ...
    def default_version(self, model_name: str) -> str | None: ...
    def set_default(self, model_name: str, version: str) -> None: ...
    def remove(self, model_name: str, version: str) -> None: ...
    def predictions_url(self, model_name: str, version: str | None = None) -> str: ...
    def predict(self, model_name: str, image: bytes, version: str | None = None,
                content_type: str = ...) -> dict: ...


def model_server(kind: str, settings: Settings | None = None) -> ModelServer:
    """The local server of ``kind`` (deploy.server)."""
    if kind not in SERVERS:
        raise RelayError(f"deploy.server {kind!r} is not a model server: use {' or '.join(SERVERS)}")
    return SERVERS[kind](settings or get_settings())


def stop_servers(settings: Settings | None = None) -> list[str]:
    """Stop every local model server of ``settings`` that runs (each by its own pid); return their names."""
    return [NAMES[kind] for kind in SERVERS if model_server(kind, settings).stop()]
