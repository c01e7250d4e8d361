"""A small residual network: a stem, residual blocks, global pooling, a linear classifier."""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input (He et al. 2016), then ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + x)


class TinyResNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int, blocks: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(*(ResidualBlock(width) for _ in range(blocks)))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(x.mean(dim=(2, 3)))


def tiny_resnet(*, num_classes: int, in_channels: int, width: int = 16, blocks: int = 2) -> nn.Module:
    """The factory the study names (`ownnet.models:tiny_resnet`). silo-oracle passes
    num_classes and in_channels (from the data) and the study's model_args (width, blocks)."""
    return TinyResNet(in_channels, num_classes, width, blocks)
