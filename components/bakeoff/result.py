"""What a bake-off returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BakeoffResult:
    directory: Path
    report: Path
    """bakeoff.html"""
    document: dict
    """bakeoff.json's content"""
    summary: str
    """The markdown summary (bakeoff.md), which the CLI prints."""
