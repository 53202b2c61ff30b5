"""Run directories addressed by URI, for steps that run in separate pods without a shared disk.

`relay step NAME --run-uri URI` downloads the run (spec.json and earlier steps' outputs) from any
fsspec URI, runs the step on the local copy, then uploads what it wrote. Steps themselves only ever
see local paths. URIs: file:// here and in tests; s3:// needs s3fs (installed with dvc-s3).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fsspec

from components.atomic import is_temp_name
from components.settings import Settings


@contextmanager
def local_run(uri: str, settings: Settings) -> Iterator[Path]:
    """Yield a local copy of the run at ``uri``; upload it back when the block succeeds."""
    fs, root = fsspec.core.url_to_fs(uri)
    local = settings.home / "run-cache" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True)
    if fs.exists(root):
        fs.get(root.rstrip("/") + "/", str(local), recursive=True)
    yield local
    fs.makedirs(root, exist_ok=True)
    for path in sorted(local.rglob("*")):
        relative = path.relative_to(local)
        if any(is_temp_name(part) for part in relative.parts):
            continue  # a killed writer's unpublished temp: never uploaded
        if path.is_file() and not path.is_symlink():
            target = f"{root.rstrip('/')}/{relative.as_posix()}"
            fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(str(path), target)
    shutil.rmtree(local, ignore_errors=True)
