"""MobileNetV2 (Sandler et al. 2018) for 32x32 inputs.

The architecture of torchvision's mobilenet_v2 (inverted residual blocks: 1x1 expand,
3x3 depthwise, 1x1 linear projection; a residual only where stride is 1 and the width is
unchanged; ReLU6), with the adaptation common to the CIFAR variants (kuangliu/pytorch-cifar,
chenyaofo/pytorch-cifar-models): the stem conv has stride 1 instead of 2, and so does the
first 24-channel stage, so a 32x32 input is downsampled 8x (to 4x4) rather than 32x.
No dropout before the head (the ImageNet model's 0.2 is for its 1000-way head).

Exact counts at width 1.0: 2,236,682 parameters for 10 classes and 2,351,972 for 100 (the
2.24M / 2.35M published for this CIFAR variant; the feature extractor alone has 2,223,872,
the head 1280 * classes + classes).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from silo.models.init import torchvision_init
from silo.models.registry import ModelArgumentError, register

# (expansion t, output channels c, repeats n, first stride s), as in the paper's Table 2 with
# the second row's stride 2 -> 1 for 32x32 inputs.
CIFAR_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM, LAST = 32, 1280


def _make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's rounding of widths to multiples of 8 (never more than 10% down)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1,
             act: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return layers


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_ch * expand
        self.use_residual = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand != 1:
            layers += _conv_bn(in_ch, hidden, 1)
        layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden)  # depthwise
        layers += _conv_bn(hidden, out_ch, 1, act=False)  # linear bottleneck
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width_mult: float = 1.0) -> None:
        super().__init__()
        width = _make_divisible(STEM * width_mult)
        last = _make_divisible(LAST * max(1.0, width_mult))
        layers: list[nn.Module] = list(_conv_bn(in_channels, width, 3, 1))  # stride 1: CIFAR stem
        for t, c, n, s in CIFAR_SETTINGS:
            out = _make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(width, out, s if i == 0 else 1, t))
                width = out
        layers += _conv_bn(width, last, 1)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(last, num_classes)
        torchvision_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(out)


@register("mobilenetv2")
def mobilenetv2(*, num_classes: int, in_channels: int, width_mult: float = 1.0) -> nn.Module:
    """MobileNetV2 for 32x32 inputs: 2,351,972 parameters for 100 classes (width 1.0)."""
    if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not (
        math.isfinite(width_mult) and width_mult > 0
    ):
        raise ModelArgumentError(f"mobilenetv2: width_mult must be a number > 0, got {width_mult!r}")
    return MobileNetV2(num_classes, in_channels, float(width_mult))
