"""Model version names. The registry's form is ``v0.2.0`` (a GTO tag ``digits@v0.2.0``); TorchServe's
is ``0.2.0``. Users may type either anywhere; Relay prints the registry form."""

from __future__ import annotations

import re

from components.errors import RelayError

_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")


def canonical(version: str) -> str:
    """``0.2.0`` or ``v0.2.0`` → ``v0.2.0``; anything else is one clear error."""
    match = _VERSION.match(version.strip())
    if not match:
        raise RelayError(f"version {version!r} is not a model version: use vMAJOR.MINOR.PATCH, e.g. v0.2.0")
    return "v" + ".".join(str(int(part)) for part in match.groups())


def served(version: str) -> str:
    """TorchServe's name for a version: ``v0.2.0`` (or ``0.2.0``) → ``0.2.0``."""
    return canonical(version).removeprefix("v")


def order(version: str) -> tuple[int, int, int]:
    """A sort key: ``v0.10.0`` after ``v0.9.0``."""
    major, minor, patch = served(version).split(".")
    return int(major), int(minor), int(patch)
