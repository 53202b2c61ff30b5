"""The framework-neutral description of Relay's small CNN.

Both framework modules build exactly this: per entry of ``conv_channels`` a 3x3 same-padded conv
and ReLU, then one 2x2 max-pool, a hidden dense layer with ReLU, and a linear layer to the classes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from components.atomic import write_json
from pipelines.spec import TaskSpec

ARCHITECTURE_FILE = "architecture.json"


@dataclass(frozen=True)
class Architecture:
    height: int
    width: int
    conv_channels: tuple[int, ...]
    hidden_units: int
    num_classes: int

    @classmethod
    def from_spec(cls, spec: TaskSpec) -> Architecture:
        return cls(
            height=spec.dataset.image.height,
            width=spec.dataset.image.width,
            conv_channels=tuple(spec.model.conv_channels),
            hidden_units=spec.model.hidden_units,
            num_classes=len(spec.dataset.classes),
        )

    def save(self, model_dir: Path) -> None:
        write_json(model_dir / ARCHITECTURE_FILE, dataclasses.asdict(self))

    @classmethod
    def load(cls, model_dir: Path) -> Architecture:
        data = json.loads((model_dir / ARCHITECTURE_FILE).read_text())
        return cls(**{**data, "conv_channels": tuple(data["conv_channels"])})

    @property
    def flat_features(self) -> int:
        return self.conv_channels[-1] * (self.height // 2) * (self.width // 2)
