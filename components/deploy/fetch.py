"""Fetch a registered model version for a serving pod: what the initContainers run.

The model is never baked into an image: the pod gets the artifacts of the pinned GTO version from the
registry repository through DVC (`dvc get` at the tag, which reads the DVC remote).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from components.registry import model_version
from components.errors import RelayError
from components.atomic import sha256_file
from components.versioning import DvcError, dvc


def _dvc_get(registry: str, path: str, rev: str, out: Path, dvc_remote: str | None) -> None:
    # With dvc_remote the pod's own remote URL (and its credentials from the environment) replaces the
    # one committed in the registry, e.g. an in-cluster S3 endpoint.
    remote = ["--remote-config", f"url={dvc_remote}"] if dvc_remote else []
    try:
        dvc(["get", registry, path, "--rev", rev, "-o", str(out), *remote], Path.cwd())
    except DvcError as error:
        raise RelayError(f"dvc get {path} at {rev} from {registry} failed: {error.reason}") from None


def _check_sha256(registry: str, task: str, tag: str, mar: Path, dvc_remote: str | None) -> None:
    """The fetched .mar must be the one registered: its sha256 is committed in the version's model.json."""
    with tempfile.TemporaryDirectory() as tmp:
        info = Path(tmp) / "model.json"
        _dvc_get(registry, f"models/{task}/model.json", tag, info, dvc_remote)
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
                dvc_remote: str | None = None) -> list[Path]:
    """Fetch ``task`` ``version``: its .mar to ``dest/<task>.mar``, or with ``tfserving`` its
    ``tfserving/`` folder plus the SavedModel of every other version its models.config labels.
    ``dvc_remote`` overrides the DVC remote committed in the registry."""
    tag = f"{task}@{model_version.canonical(version)}"
    if not tfserving:
        target = dest / f"{task}.mar"
        _dvc_get(registry, f"models/{task}/artifacts/model.mar", tag, target, dvc_remote)
        _check_sha256(registry, task, tag, target, dvc_remote)
        return [target]
    from components.deploy.tfserving import parse_models_config

    base = dest / "tfserving"
    _dvc_get(registry, f"models/{task}/artifacts/tfserving", tag, base, dvc_remote)
    fetched = [base]
    (config,) = parse_models_config((base / "models.config").read_text()).model_config_list.config
    for number in config.model_version_policy.specific.versions:
        folder = base / task / str(number)
        if not folder.exists():  # e.g. the production version labelled stable beside a canary
            other = version_from_servable(number)
            _dvc_get(registry, f"models/{task}/artifacts/tfserving/{task}/{number}", f"{task}@{other}", folder,
                     dvc_remote)
            fetched.append(folder)
    return fetched
