"""DenseNet-40 (L=40, k=12) of Huang et al. 2017 ("Densely Connected Convolutional Networks"),
the original CIFAR DenseNet: no bottleneck, no compression (not DenseNet-BC).

A 3x3 stem conv to 16 channels, then three dense blocks of (L - 4) / 3 = 12 layers each.
A layer is BN-ReLU-Conv3x3 producing k = 12 new channels, concatenated to its input. Between
blocks a transition BN-ReLU-Conv1x1 (same width: no compression) and a 2x2 average pool.
Then BN-ReLU, global average pooling and a linear head. Widths: 16 -> 160 -> 304 -> 448.

Exact counts: 1,019,722 parameters for 10 classes and 1,060,132 for 100. Huang et al. quote
1.0M (Table 2); the pruning literature quotes 1.02M (CIFAR-10) and 1.06M (CIFAR-100), e.g.
Network Slimming (Liu et al. 2017), which are these two numbers. No dropout: with data
augmentation the paper trains without it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from silo.models.registry import positive_int, register


class DenseLayer(nn.Module):
    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        # No bias, as in the reference (Torch) implementation: a bias before the next BN is
        # redundant, and leaving it out is what gives the published 1.0M.
        self.conv = nn.Conv2d(in_channels, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], 1)


class Transition(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    def __init__(self, depth: int, growth: int, num_classes: int, in_channels: int) -> None:
        super().__init__()
        if depth < 7 or (depth - 4) % 3:
            raise ValueError(f"DenseNet depth must be 3n + 4 with n >= 1, got {depth}")
        n = (depth - 4) // 3
        width = 16  # the paper's stem width for DenseNet without bottleneck (2k for BC)
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        for b in range(3):
            layers = []
            for _ in range(n):
                layers.append(DenseLayer(width, growth))
                width += growth
            blocks.append(nn.Sequential(*layers))
            if b < 2:
                blocks.append(Transition(width))
        self.features = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # The reference implementation's init: convs normal(0, sqrt(2 / (k*k*out))) (He,
        # fan_out), BN (1, 0), linear bias 0 (its weight keeps PyTorch's default).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.features(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


@register("densenet40")
def densenet40(*, num_classes: int, in_channels: int, growth: int = 12) -> nn.Module:
    """DenseNet-40 (k=12): 1,019,722 parameters for 10 classes, 1,060,132 for 100."""
    return DenseNet(40, positive_int("densenet40: growth", growth), num_classes, in_channels)
