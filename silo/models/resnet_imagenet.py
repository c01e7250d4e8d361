"""ResNet-50 (He et al. 2016) as torchvision builds it, for ImageNet-sized inputs.

`torchvision.models.resnet50(weights=None, num_classes=...)`: bottleneck blocks with the
stride on the 3x3 conv (the "v1.5" of torchvision), projection shortcuts, torchvision's
initialisation (He-normal fan_out convs, BN (1, 0), PyTorch's default for the head). Never
downloads weights. 25,557,032 parameters for 1000 classes (published: 25.56M), 23,917,832
for 200 (Tiny-ImageNet).

Options: `in_channels` other than 3 replaces the stem conv (same shape and init otherwise);
`small_input: true` swaps the 7x7 stride-2 stem and its max-pool for a 3x3 stride-1 conv,
the usual adaptation for 32x32 / 64x64 inputs (7,680 fewer parameters).
"""

from __future__ import annotations

from torch import nn

from silo.models.registry import ModelArgumentError, register


def _stem(in_channels: int, small_input: bool) -> nn.Conv2d:
    if small_input:
        conv = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    else:
        conv = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # torchvision's
    return conv


@register("resnet50")
def resnet50(*, num_classes: int, in_channels: int, small_input: bool = False) -> nn.Module:
    """torchvision ResNet-50: 25,557,032 parameters for 1000 classes."""
    from torchvision.models import (
        resnet50 as tv_resnet50,  # seconds to import: only when used
    )

    if not isinstance(small_input, bool):
        raise ModelArgumentError(f"resnet50: small_input must be true or false, got {small_input!r}")
    model = tv_resnet50(weights=None, num_classes=num_classes)
    if in_channels != 3 or small_input:
        model.conv1 = _stem(in_channels, small_input)
    if small_input:
        model.maxpool = nn.Identity()
    return model
