"""Fetch a registered model version for a serving pod: what the initContainers run.

The model is never baked into an image: the pod gets the artifacts of the pinned GTO version from the
registry repository through DVC (`dvc get` at the tag, which reads the DVC remote).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from components.errors import RelayError


def _dvc_get(registry: str, path: str, rev: str, out: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "dvc", "get", registry, path, "--rev", rev, "-o", str(out)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        raise RelayError(f"dvc get {path} at {rev} from {registry} failed: {detail}")


def version_from_servable(number: int) -> str:
    """The inverse of tfserving.servable_version: 1002003 → v1.2.3."""
    return f"v{number // 1_000_000}.{number // 1_000 % 1_000}.{number % 1_000}"


def fetch_model(registry: str, task: str, version: str, dest: Path, tfserving: bool = False) -> list[Path]:
    """Fetch ``task`` ``version``: its .mar to ``dest/<task>.mar``, or with ``tfserving`` its
    ``tfserving/`` folder plus the SavedModel of every other version its models.config labels."""
    tag = f"{task}@{version}"
    if not tfserving:
        target = dest / f"{task}.mar"
        _dvc_get(registry, f"models/{task}/artifacts/model.mar", tag, target)
        return [target]
    from components.deploy.tfserving import parse_models_config

    base = dest / "tfserving"
    _dvc_get(registry, f"models/{task}/artifacts/tfserving", tag, base)
    fetched = [base]
    (config,) = parse_models_config((base / "models.config").read_text()).model_config_list.config
    for number in config.model_version_policy.specific.versions:
        folder = base / task / str(number)
        if not folder.exists():  # e.g. the production version labelled stable beside a canary
            other = version_from_servable(number)
            _dvc_get(registry, f"models/{task}/artifacts/tfserving/{task}/{number}", f"{task}@{other}", folder)
            fetched.append(folder)
    return fetched
