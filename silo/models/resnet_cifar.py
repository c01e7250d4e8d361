"""CIFAR ResNets of He et al. 2016 ("Deep Residual Learning", section 4.2).

Depth 6n + 2: a 3x3 stem conv, three stages of n basic blocks with 16, 32 and 64 channels
(the 2nd and 3rd stages start with stride 2), global average pooling and a linear head.
Shortcuts are "option A": identity, or, where the shape changes, stride-2 subsampling plus
zero channels, so they hold no parameters. That is the variant whose parameter counts the
paper and the SILO experiments quote (ResNet-20: 0.27M, ResNet-56: 0.85M), and it matters
for pruning: every weight a pruner sees is in a 3x3 conv or the head.

Exact counts for 10 classes: ResNet-20 269,722 and ResNet-56 853,018 (as in the reference
implementations). The often-quoted 272,474 / 855,770 are option B: a 1x1 projection conv
plus BN at the two stage transitions adds 16*32 + 32*64 + 2*(32 + 64) = 2,752 parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from silo.models.registry import register

STAGE_WIDTHS = (16, 32, 64)


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and zero-pad the new channels.

    A module rather than a lambda so that models pickle (Ray ships them between processes)
    and so that it shows up, parameter-free, when walking ``model.modules()``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        # Split the extra channels evenly on both sides, as the reference does (planes//4
        # each side when the width doubles).
        extra = out_channels - in_channels
        self.pad_front, self.pad_back = extra // 2, extra - extra // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_front}, {self.pad_back})"


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        # No conv biases: each conv is followed by BN, whose shift makes a bias redundant.
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = PadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # Not in place: autograd and forward hooks (e.g. mask application) stay safe.
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, in_channels: int) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, STAGE_WIDTHS[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0])
        stages = []
        width = STAGE_WIDTHS[0]
        for i, out in enumerate(STAGE_WIDTHS):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(width, out, stride))
                width = out
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(width, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # As in the widely used reference implementation (akamaster/pytorch_resnet_cifar10)
        # that reproduces the paper's numbers: He-normal (fan_in) for convs and the head;
        # BN (1, 0) and the head's bias keep PyTorch's defaults.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


@register("resnet20")
def resnet20(*, num_classes: int, in_channels: int) -> nn.Module:
    """ResNet-20 (n=3): 269,722 parameters for 10 classes, 275,572 for 100."""
    return CifarResNet(20, num_classes, in_channels)


@register("resnet56")
def resnet56(*, num_classes: int, in_channels: int) -> nn.Module:
    """ResNet-56 (n=9): 853,018 parameters for 10 classes, 858,868 for 100."""
    return CifarResNet(56, num_classes, in_channels)
