"""The framework-neutral description of Relay's models, built identically by both framework modules.

- ``small_cnn``: per entry of ``conv_channels`` a 3x3 same-padded conv and ReLU, one 2x2 max-pool,
  a hidden dense layer with ReLU, and a linear layer to the classes.
- ``resnet``: a 3x3 conv stem (BatchNorm, ReLU), then per width in ``widths`` a stage of
  ``blocks_per_stage`` basic blocks (two 3x3 convs with BatchNorm; the first block of every stage
  after the first has stride 2 and a 1x1 projection shortcut), global average pooling, a linear layer.
- ``mobilenet_v2``: a 3x3 conv stem, inverted residual blocks (1x1 expansion, 3x3 depthwise,
  1x1 linear projection, BatchNorm, ReLU6; a residual where shapes allow), a 1x1 head conv,
  global average pooling, a linear layer. Channels scale with ``width_multiplier``.

Every conv followed by BatchNorm has no bias. Stride-2 3x3 convs pad one pixel on every side
(PyTorch's ``padding=1``; TensorFlow's ``same`` would pad only bottom and right for even sizes).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from components.atomic import write_json
from components.run_files import ARCHITECTURE

# The width of each inverted-residual stage: (expansion, channels, blocks, first stride). MobileNetV2's
# table with its 224-px stages trimmed: inputs here are tens of pixels, so 3 stride-2 stages, not 5.
MOBILENET_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 3, 2), (6, 96, 2, 1))
MOBILENET_STEM = 32
MOBILENET_HEAD = 640
# A small_cnn's dense layer larger than this is a spec mistake (a large input fed to the toy model).
SMALL_CNN_MAX_DENSE = 8_000_000


def make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNet's channel rounding: to a multiple of ``divisor``, never more than 10% down."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


@dataclass(frozen=True)
class InvertedResidual:
    in_channels: int
    expanded: int
    out_channels: int
    stride: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


@dataclass(frozen=True)
class Architecture:
    name: str
    height: int
    width: int
    channels: int
    num_classes: int
    conv_channels: tuple[int, ...] = ()
    hidden_units: int = 0
    widths: tuple[int, ...] = ()
    blocks_per_stage: int = 1
    width_multiplier: float = 1.0
    dropout: float = 0.0
    blocks: tuple[InvertedResidual, ...] = field(default=(), compare=False)

    @classmethod
    def from_spec(cls, spec) -> Architecture:
        model = spec.model
        arch = cls(name=model.name, height=spec.input.height, width=spec.input.width, channels=spec.input.channels,
                   num_classes=len(spec.dataset.classes), conv_channels=tuple(model.conv_channels),
                   hidden_units=model.hidden_units, widths=tuple(model.widths),
                   blocks_per_stage=model.blocks_per_stage, width_multiplier=model.width_multiplier,
                   dropout=model.dropout)
        return arch.with_blocks()

    def with_blocks(self) -> Architecture:
        if self.name != "mobilenet_v2":
            return self
        blocks, channels = [], self.stem_channels
        for expansion, base, count, stride in MOBILENET_STAGES:
            out = make_divisible(base * self.width_multiplier)
            for index in range(count):
                blocks.append(InvertedResidual(channels, channels * expansion, out, stride if index == 0 else 1))
                channels = out
        return replace(self, blocks=tuple(blocks))

    @property
    def stem_channels(self) -> int:
        return make_divisible(MOBILENET_STEM * self.width_multiplier)

    @property
    def head_channels(self) -> int:
        return make_divisible(MOBILENET_HEAD * max(1.0, self.width_multiplier))

    @property
    def flat_features(self) -> int:
        """small_cnn: the dense layer's input size."""
        return self.conv_channels[-1] * (self.height // 2) * (self.width // 2)

    def save(self, model_dir: Path) -> None:
        data = asdict(self)
        data.pop("blocks")
        write_json(model_dir / ARCHITECTURE, data)

    @classmethod
    def load(cls, model_dir: Path) -> Architecture:
        data = json.loads((model_dir / ARCHITECTURE).read_text())
        for key in ("conv_channels", "widths"):
            data[key] = tuple(data[key])
        return cls(**data).with_blocks()


def check_fits(model, input_spec) -> None:
    """Raise ValueError (the spec validator reports it) when ``model`` cannot take these images."""
    height, width = input_spec.size
    if model.name == "small_cnn":
        if min(height, width) < 2:
            raise ValueError(f"model small_cnn max-pools by 2: input.size {list(input_spec.size)} is too small")
        dense = model.conv_channels[-1] * (height // 2) * (width // 2) * model.hidden_units
        if dense > SMALL_CNN_MAX_DENSE:
            raise ValueError(
                f"model small_cnn on input.size {list(input_spec.size)} with {input_spec.channels} channel(s) needs a "
                f"{dense:,}-weight dense layer (limit {SMALL_CNN_MAX_DENSE:,}): use model.name resnet or "
                "mobilenet_v2 for images this large, or a smaller input.size")
    elif model.name == "resnet":
        smallest = 2 ** (len(model.widths) - 1)
        if min(height, width) < smallest:
            raise ValueError(f"model resnet with {len(model.widths)} stages halves the input {len(model.widths) - 1} "
                            f"times: input.size {list(input_spec.size)} must be at least {smallest}")
    elif min(height, width) < 8:
        raise ValueError(f"model mobilenet_v2 halves the input 3 times: input.size {list(input_spec.size)} "
                        "must be at least 8")
