"""Where Relay keeps its state on this machine, read from ``RELAY_*`` environment variables.

Everything a run produces lives under ``RELAY_HOME`` (runs, the model registry, the DVC remote and
the local model server), outside the code checkout, so a run never writes into the user's repo.
"""

from __future__ import annotations

import random
import socket
from functools import cached_property, lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_DIR = Path(__file__).resolve().parent.parent  # Relay's own code: a source checkout, or site-packages
PROJECT_FILE = "relay.yaml"  # marks a team's project made by `relay init`


@lru_cache(maxsize=None)
def is_source_checkout(path: Path = PROJECT_DIR) -> bool:
    """Whether ``path`` is Relay's own source tree (a checkout, or the images' /opt/relay), not an installed
    package. By the project named in its pyproject.toml: some packages drop one into site-packages."""
    import tomllib

    try:
        return tomllib.loads((path / "pyproject.toml").read_text())["project"]["name"] == "relay-mlops"
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return False


def relay_version() -> str:
    """The installed relay-mlops version; in a checkout that is not installed, its pyproject.toml's."""
    from importlib import metadata

    try:
        return metadata.version("relay-mlops")
    except metadata.PackageNotFoundError:
        import tomllib

        return tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["project"]["version"]


def find_project_dir(start: Path | None = None) -> Path:
    """The project Relay works on when RELAY_PROJECT_DIR is unset: the nearest directory at or above ``start``
    (the current one) that holds relay.yaml, as `git` finds its repository; else Relay's own checkout when
    Relay runs from one; else the current directory."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    return PROJECT_DIR if is_source_checkout() else here


def _default_tfx_env() -> Path:
    return PROJECT_DIR / ".venv-tfx" if is_source_checkout() else Path.home() / ".relay" / "venv-tfx"


def _default_serve_env() -> Path:
    return PROJECT_DIR / ".venv-serve" if is_source_checkout() else Path.home() / ".relay" / "venv-serve"


class Settings(BaseSettings):
    """Machine-level settings. Task-level choices belong in the task spec, not here."""

    model_config = SettingsConfigDict(env_prefix="RELAY_", frozen=True, populate_by_name=True)

    home: Path = Field(default=Path.home() / ".relay", description="Root of all local Relay state.")
    project_dir: Path = Field(default_factory=find_project_dir,
                              description="The team's project (specs, data/*.dvc, dags): default, the nearest "
                                          "directory holding relay.yaml, else Relay's own checkout.")
    dvc_remote: str | None = Field(
        default=None,
        description="DVC remote URL or directory; default <home>/dvc-remote, created on first use.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, validation_alias=AliasChoices("RELAY_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
        description="An S3-compatible endpoint (MinIO, moto, Ceph) instead of AWS, for s3:// DVC remotes and run "
                    "stores; else AWS's own AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL. Credentials are never Relay "
                    "settings: they come from the AWS environment (AWS_ACCESS_KEY_ID..., a profile or a role).")
    runs_uri: str | None = Field(
        default=None, description="Where runs live when steps share no disk (s3://bucket/runs): each step "
                                  "downloads its run, steps it and uploads what it wrote. Default: <home>/runs.")
    shards_uri: str | None = Field(
        default=None, description="Where the data step packs each data version's shards for training to stream "
                                  "(training.cache: shards), and with runs_uri a URL too, the packs of its original "
                                  "files for steps on machines without them; e.g. s3://bucket/shards. Default: "
                                  "<home>/shards.")
    train_queue: str | None = Field(
        default=None, description="The Celery queue Airflow sends the training work to (the train step and the "
                                  "bake-off), e.g. the one the workers with GPUs consume. Default: Airflow's "
                                  "default queue. The LocalExecutor ignores queues.")
    registry: Path | None = Field(default=None, description="Model registry git repo; default <home>/registry.")
    registry_remote: str | None = Field(
        default=None, description="Git remote the registry pushes commits and GTO tags to, if any."
    )
    tfx_env: Path = Field(default_factory=_default_tfx_env,
                          description="The Python 3.10 TFX environment, built from Relay's requirements/tfx.lock "
                                      "by `make setup` in a Relay checkout (<checkout>/.venv-tfx).")
    serve_env: Path = Field(default_factory=_default_serve_env,
                            description="The V2 server's environment (MLServer), built from Relay's "
                                        "requirements/serve.lock by `make setup` (<checkout>/.venv-serve).")
    ts_host: str = "127.0.0.1"
    ts_inference_port: int = 8380
    ts_management_port: int = 8381
    ts_metrics_port: int = 8382
    ts_grpc_inference_port: int = 8383
    ts_grpc_management_port: int = 8384
    ts_heap: str = "512m"
    v2_http_port: int = Field(default=8390, description="The V2 server's REST port (deploy.server: kserve), "
                                                        "on 127.0.0.1 like TorchServe's.")
    v2_grpc_port: int = Field(default=8391, description="The V2 server's gRPC port.")
    ts_token_expiration_min: float = Field(
        default=60, gt=0, le=60 * 24 * 365,
        description="Minutes TorchServe's inference and management keys stay valid (its token_expiration_min). "
                    "`relay serve key` prints a valid inference key, renewing an expired one.")
    step_cache: bool = Field(default=True, description="Reuse a step's output when its data version, code and "
                                                        "parameters are unchanged (RELAY_STEP_CACHE=false: never).")
    webhook_url: str | None = Field(default=None, description="Where each Airflow run posts its outcome (JSON): "
                                                               "deployed, rolled back, gate or validation failed.")
    airflow_url: str = Field(default="http://127.0.0.1:8480",
                             description="Airflow's API server (`make airflow` listens here), for asset events.")
    airflow_username: str = "admin"
    airflow_password: str | None = Field(
        default=None, description="Default: the password SimpleAuthManager generated in "
                                  "<AIRFLOW_HOME>/simple_auth_manager_passwords.json.generated.")

    @cached_property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @cached_property
    def shard_store(self) -> str:
        return self.shards_uri or str(self.home / "shards")

    @cached_property
    def registry_dir(self) -> Path:
        return self.registry or self.home / "registry"

    @cached_property
    def serve_dir(self) -> Path:
        return self.home / "serve"

    @cached_property
    def dags_dir(self) -> Path:
        """Airflow's DAG folder: the project's ``dags/`` (``relay init`` writes one), else Relay's own, whose
        DAG file builds the DAGs of the project's specs."""
        own = self.project_dir / "dags"
        return own if own.is_dir() else PROJECT_DIR / "dags"

    @cached_property
    def default_dvc_remote(self) -> Path:
        return self.home / "dvc-remote"


def get_settings() -> Settings:
    """Read settings from the environment now (tests and runs may change it between calls)."""
    return Settings()


def _ephemeral_port_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_ports(count: int) -> list[int]:
    """Distinct ports that are free on 127.0.0.1 right now, picked at random below the kernel's ephemeral range.

    Why not bind port 0: that hands out an ephemeral port, and the kernel hands the same ports to the outgoing
    connections of every process here, so one may take it before the server that was meant to listen on it binds.
    """
    low, high = _ephemeral_port_range()
    pick = random.Random()  # seeded from the OS, whatever a caller did to the random module
    first, last = (10000, low - 1) if low > 11000 else (high + 1, 65535)
    sockets: list[socket.socket] = []
    for _ in range(200 * count):
        if len(sockets) == count:
            break
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", pick.randint(first, last)))
            sockets.append(sock)
        except OSError:
            sock.close()
    ports = [s.getsockname()[1] for s in sockets]
    for sock in sockets:
        sock.close()
    if len(ports) < count:
        raise OSError(f"no {count} free ports on 127.0.0.1 between {first} and {last}")
    return ports


def own_server_settings(settings: Settings, home: Path) -> Settings:
    """``settings`` with model servers of their own: their directories under ``home`` and free ports."""
    names = ("ts_inference_port", "ts_management_port", "ts_metrics_port", "ts_grpc_inference_port",
             "ts_grpc_management_port", "v2_http_port", "v2_grpc_port")
    return Settings(**{**settings.model_dump(), "home": home, "registry": settings.registry_dir,
                       **dict(zip(names, free_ports(len(names))))})


def settings_env(settings: Settings) -> dict[str, str]:
    """The RELAY_* environment that reproduces ``settings`` in a subprocess."""
    env = {"RELAY_HOME": str(settings.home), "RELAY_DVC_REMOTE": settings.dvc_remote or "",
           "RELAY_PROJECT_DIR": str(settings.project_dir), "RELAY_REGISTRY": str(settings.registry_dir),
           "RELAY_TS_INFERENCE_PORT": str(settings.ts_inference_port),
           "RELAY_TS_MANAGEMENT_PORT": str(settings.ts_management_port),
           "RELAY_TS_METRICS_PORT": str(settings.ts_metrics_port),
           "RELAY_TS_GRPC_INFERENCE_PORT": str(settings.ts_grpc_inference_port),
           "RELAY_TS_GRPC_MANAGEMENT_PORT": str(settings.ts_grpc_management_port),
           "RELAY_TS_HEAP": settings.ts_heap, "RELAY_TS_TOKEN_EXPIRATION_MIN": str(settings.ts_token_expiration_min),
           "RELAY_V2_HTTP_PORT": str(settings.v2_http_port), "RELAY_V2_GRPC_PORT": str(settings.v2_grpc_port),
           "RELAY_STEP_CACHE": str(settings.step_cache).lower()}
    optional = {"RELAY_REGISTRY_REMOTE": settings.registry_remote, "RELAY_S3_ENDPOINT_URL": settings.s3_endpoint_url,
                "RELAY_RUNS_URI": settings.runs_uri, "RELAY_SHARDS_URI": settings.shards_uri}
    return env | {name: value for name, value in optional.items() if value}
