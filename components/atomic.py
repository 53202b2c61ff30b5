"""Publish files and directories atomically: write beside the target, then rename into place.

A crash therefore leaves either the old artifact or the new one, never half of one. Temp names carry
the writer's pid (``.<name>.tmp-<pid>-<random>``), so the next writer of the same target can tell a
dead writer's leftovers from a live one's and reclaim them.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from components.errors import RelayError

_SPACE_ERRORS = {errno.ENOSPC: "the disk is full", errno.EFBIG: "the file size limit was reached",
                 errno.EDQUOT: "the disk quota is exceeded"}


class PublishError(RelayError):
    """An artifact could not be written completely; nothing was published."""


def _prefix(target: Path, kind: str) -> str:
    return f".{target.name}.{kind}-{os.getpid()}-"


def _writer_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reclaim_stale(target: Path) -> list[Path]:
    """Remove temp files and directories beside ``target`` left by writers that are no longer running."""
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    for kind in ("tmp", "old"):
        for leftover in target.parent.glob(f".{target.name}.{kind}-*"):
            pid_part = leftover.name.removeprefix(f".{target.name}.{kind}-").split("-", 1)[0]
            if pid_part.isdigit() and _writer_alive(int(pid_part)):
                continue  # a concurrent writer's work in progress (or ours)
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed


@contextmanager
def _explained(target: Path) -> Iterator[None]:
    """Turn "disk full" and "file too large" into one line naming the artifact."""
    try:
        yield
    except OSError as error:
        if error.errno not in _SPACE_ERRORS:
            raise
        raise PublishError(f"writing {target} failed: {_SPACE_ERRORS[error.errno]} ({error.strerror}); "
                           "nothing was published, the previous version (if any) is intact. "
                           "Free space and run the step again.") from None


def _temp_dir_beside(target: Path) -> Path:
    """A new temp directory beside ``target``, once dead writers' leftovers there are reclaimed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    reclaim_stale(target)
    return Path(tempfile.mkdtemp(prefix=_prefix(target, "tmp"), dir=target.parent))


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temp directory that replaces ``target`` when the block succeeds."""
    target = Path(target)
    tmp = _temp_dir_beside(target)
    try:
        with _explained(target):
            yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=_prefix(target, "old"), dir=target.parent))
        os.rename(target, old / "previous")
    os.rename(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def scratch_beside(target: Path) -> Iterator[Path]:
    """Yield an empty temp directory beside ``target`` (on its filesystem, so files leave it by rename), removed
    when the block ends however it ends; a dead writer's leftovers are reclaimed as ``atomic_dir`` does."""
    target = Path(target)
    tmp = _temp_dir_beside(target)
    try:
        with _explained(target):
            yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(target: Path, mode: str = "w") -> Iterator[Any]:
    """Open a temp file beside ``target``; it is renamed over ``target`` when the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=_prefix(target, "tmp"), dir=target.parent)
    try:
        with _explained(target):
            with os.fdopen(fd, mode) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_json(target: Path, payload: Any) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_file(target) as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")
    return Path(target)


def write_text(target: Path, text: str) -> Path:
    """Write ``text`` atomically."""
    with atomic_file(target) as handle:
        handle.write(text)
    return Path(target)


def copy_file(source: Path, target: Path) -> Path:
    """Copy ``source`` to ``target`` atomically."""
    with atomic_file(target, "wb") as handle, open(source, "rb") as src:
        shutil.copyfileobj(src, handle)
    return Path(target)


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_temp_name(name: str) -> bool:
    """Whether a file or folder name is an unpublished temp of this module (never to be uploaded)."""
    return name.startswith(".") and (".tmp-" in name or ".old-" in name)
