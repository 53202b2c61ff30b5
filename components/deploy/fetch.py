"""Fetch a registered model version for a serving pod: what the initContainers run.

The model is never baked into an image: the pod gets the artifacts of the pinned GTO version from the
registry repository through DVC (`dvc get` at the tag, which reads the DVC remote).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from components.registry import model_version
from components.errors import RelayError
from components.object_store import is_s3, probe_s3
from components.atomic import sha256_file
from components.versioning import DvcError, dvc


@dataclass(frozen=True)
class _Source:
    """Where a pod fetches from: the registry's git URL, and optionally its own DVC remote URL and S3 endpoint
    in place of those committed in the registry (an in-cluster endpoint, say; credentials come from the
    environment)."""

    registry: str
    dvc_remote: str | None = None
    s3_endpoint_url: str | None = None

    def remote_config(self) -> list[str]:
        pairs = [("url", self.dvc_remote), ("endpointurl", self.s3_endpoint_url)]
        return [arg for key, value in pairs if value for arg in ("--remote-config", f"{key}={value}")]

    def remote(self, rev: str) -> tuple[str | None, str | None]:
        """The DVC remote URL and S3 endpoint a fetch at ``rev`` uses: the overrides, else those committed in
        the registry at ``rev`` (read only to explain a failure)."""
        if self.dvc_remote and (self.s3_endpoint_url or not is_s3(self.dvc_remote)):
            return self.dvc_remote, self.s3_endpoint_url
        from configobj import ConfigObj  # DVC's own config parser

        with tempfile.TemporaryDirectory() as tmp:
            try:  # git-tracked, so `dvc get` reads it from git alone, whatever is wrong with the remote
                dvc(["get", self.registry, ".dvc/config", "--rev", rev, "-o", f"{tmp}/config"], Path.cwd())
            except DvcError:
                return self.dvc_remote, self.s3_endpoint_url
            config = ConfigObj(f"{tmp}/config")
        committed = config.get(f'remote "{config.get("core", {}).get("remote")}"', {})
        return self.dvc_remote or committed.get("url"), self.s3_endpoint_url or committed.get("endpointurl")


def _dvc_get(source: _Source, path: str, rev: str, out: Path) -> None:
    try:
        dvc(["get", source.registry, path, "--rev", rev, "-o", str(out), *source.remote_config()], Path.cwd())
    except DvcError as error:
        url, endpoint = source.remote(rev)
        reason = (is_s3(url) and probe_s3(url, endpoint)) or error.reason
        named = (url + (f" (endpoint {endpoint or 'AWS'})" if is_s3(url) else "")) if url else "unknown"
        raise RelayError(f"dvc get {path} at {rev} from {source.registry} (DVC remote {named}) failed: "
                         f"{reason}") from None


def _check_sha256(source: _Source, tag: str, mar: Path) -> None:
    """The fetched .mar must be the one registered: its sha256 is committed in the version's model.json."""
    with tempfile.TemporaryDirectory() as tmp:
        info = Path(tmp) / "model.json"
        _dvc_get(source, f"models/{tag.split('@')[0]}/model.json", tag, info)
        expected = json.loads(info.read_text()).get("sha256", {}).get("model.mar")
    if expected is None:
        raise RelayError(f"{tag} records no sha256 for model.mar: register the model again with this Relay")
    if sha256_file(mar) != expected:
        mar.unlink()
        raise RelayError(f"{tag} model.mar from the DVC remote does not match the sha256 the registry recorded: "
                         "refusing a swapped artifact")


def version_from_servable(number: int) -> str:
    """The inverse of tfserving.servable_version: 1002003 → v1.2.3."""
    return f"v{number // 1_000_000}.{number // 1_000 % 1_000}.{number % 1_000}"


def fetch_model(registry: str, task: str, version: str, dest: Path, tfserving: bool = False,
                dvc_remote: str | None = None, s3_endpoint_url: str | None = None, v2: bool = False) -> list[Path]:
    """Fetch ``task`` ``version``: its .mar to ``dest/<task>.mar`` (with ``v2``, made into the V2 server's
    repository ``dest/repository`` serving it), or with ``tfserving`` its ``tfserving/`` folder plus the
    SavedModel of every other version its models.config labels.
    ``dvc_remote`` and ``s3_endpoint_url`` override the DVC remote and endpoint committed in the registry."""
    source = _Source(registry, dvc_remote, s3_endpoint_url)
    tag = f"{task}@{model_version.canonical(version)}"
    if not tfserving:
        target = dest / f"{task}.mar"
        _dvc_get(source, f"models/{task}/artifacts/model.mar", tag, target)
        _check_sha256(source, tag, target)
        if v2:
            from components.deploy.package import v2_repository_from_mar

            repository = v2_repository_from_mar(target, task, version, dest / "repository")
            target.unlink()
            return [repository]
        return [target]
    from components.deploy.tfserving import parse_models_config

    base = dest / "tfserving"
    _dvc_get(source, f"models/{task}/artifacts/tfserving", tag, base)
    fetched = [base]
    (config,) = parse_models_config((base / "models.config").read_text()).model_config_list.config
    for number in config.model_version_policy.specific.versions:
        folder = base / task / str(number)
        if not folder.exists():  # e.g. the production version labelled stable beside a canary
            other = version_from_servable(number)
            _dvc_get(source, f"models/{task}/artifacts/tfserving/{task}/{number}", f"{task}@{other}", folder)
            fetched.append(folder)
    return fetched
