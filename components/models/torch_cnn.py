"""Relay's models in plain ``torch.nn``, built from the framework-neutral ``Architecture``
(torchvision does not import beside the CPU wheel here)."""

from __future__ import annotations

from torch import nn

from components.models.architecture import Architecture, InvertedResidual


def _conv_bn(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1, groups: int = 1,
             activation: type[nn.Module] | None = nn.ReLU) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2,
                                         groups=groups, bias=False), nn.BatchNorm2d(out_channels)]
    return layers + ([activation()] if activation else [])


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 conv-BN, a shortcut (1x1 conv-BN projection when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(in_channels, out_channels, 3, stride),
                                  *_conv_bn(out_channels, out_channels, 3, 1, activation=None))
        self.shortcut = (nn.Sequential(*_conv_bn(in_channels, out_channels, 1, stride, activation=None))
                         if stride != 1 or in_channels != out_channels else nn.Identity())
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


class InvertedResidualBlock(nn.Module):
    """MobileNetV2's block: 1x1 expansion, 3x3 depthwise, 1x1 linear projection; residual when shapes allow."""

    def __init__(self, block: InvertedResidual):
        super().__init__()
        layers = []
        if block.expanded != block.in_channels:
            layers += _conv_bn(block.in_channels, block.expanded, 1, activation=nn.ReLU6)
        layers += _conv_bn(block.expanded, block.expanded, 3, block.stride, groups=block.expanded,
                           activation=nn.ReLU6)
        layers += _conv_bn(block.expanded, block.out_channels, 1, activation=None)
        self.body = nn.Sequential(*layers)
        self.residual = block.residual

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


def _classifier(features: int, arch: Architecture) -> list[nn.Module]:
    dropout = [nn.Dropout(arch.dropout)] if arch.dropout else []
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), *dropout, nn.Linear(features, arch.num_classes)]


def build_torch_model(arch: Architecture) -> nn.Sequential:
    """Build the PyTorch model for ``arch``; input NCHW float32, output logits."""
    if arch.name == "resnet":
        layers = _conv_bn(arch.channels, arch.widths[0])
        channels = arch.widths[0]
        for stage, width in enumerate(arch.widths):
            for index in range(arch.blocks_per_stage):
                layers.append(BasicBlock(channels, width, 2 if stage > 0 and index == 0 else 1))
                channels = width
        return nn.Sequential(*layers, *_classifier(channels, arch))
    if arch.name == "mobilenet_v2":
        layers = _conv_bn(arch.channels, arch.stem_channels, activation=nn.ReLU6)
        layers += [InvertedResidualBlock(block) for block in arch.blocks]
        layers += _conv_bn(arch.blocks[-1].out_channels, arch.head_channels, 1, activation=nn.ReLU6)
        return nn.Sequential(*layers, *_classifier(arch.head_channels, arch))
    layers = []
    in_channels = arch.channels
    for channels in arch.conv_channels:
        layers += [nn.Conv2d(in_channels, channels, kernel_size=3, padding=1), nn.ReLU()]
        in_channels = channels
    dropout = [nn.Dropout(arch.dropout)] if arch.dropout else []
    return nn.Sequential(*layers, nn.MaxPool2d(2), nn.Flatten(), nn.Linear(arch.flat_features, arch.hidden_units),
                         nn.ReLU(), *dropout, nn.Linear(arch.hidden_units, arch.num_classes))
