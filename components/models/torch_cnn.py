"""The small CNN in plain ``torch.nn`` (torchvision does not import beside the CPU wheel here)."""

from __future__ import annotations

from torch import nn

from components.models.architecture import Architecture


def build_torch_model(arch: Architecture) -> nn.Sequential:
    """Build the PyTorch model for ``arch``; input NCHW float32, output logits."""
    layers: list[nn.Module] = []
    in_channels = 1
    for channels in arch.conv_channels:
        layers += [nn.Conv2d(in_channels, channels, kernel_size=3, padding=1), nn.ReLU()]
        in_channels = channels
    layers += [
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(arch.flat_features, arch.hidden_units),
        nn.ReLU(),
        nn.Linear(arch.hidden_units, arch.num_classes),
    ]
    return nn.Sequential(*layers)
