"""VGG-19 with batch norm, in the form used on CIFAR (32x32 inputs).

The sixteen 3x3 convs of torchvision's VGG-19-BN; five max-pools take 32x32 down to 1x1,
so the three-layer 4096-wide ImageNet classifier is replaced by one linear layer
512 -> num_classes (the variant of kuangliu/pytorch-cifar and the pruning literature).
20,040,522 parameters for 10 classes, 20,086,692 for 100.
"""

from __future__ import annotations

import torch
from torch import nn

from silo.models.init import torchvision_init
from silo.models.registry import register

# Output channels of each 3x3 conv; "M" is a 2x2 max-pool.
VGG19_CFG: tuple[int | str, ...] = (
    64, 64, "M",
    128, 128, "M",
    256, 256, 256, 256, "M",
    512, 512, 512, 512, "M",
    512, 512, 512, 512, "M",
)  # fmt: skip


class VGG(nn.Module):
    def __init__(self, cfg: tuple[int | str, ...], num_classes: int, in_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                assert isinstance(v, int)
                # Conv biases kept (redundant before BN) to match torchvision's vgg19_bn and
                # the CIFAR variants, so parameter counts compare with published ones.
                layers += [
                    nn.Conv2d(channels, v, kernel_size=3, padding=1),
                    nn.BatchNorm2d(v),
                    nn.ReLU(inplace=True),
                ]
                channels = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)
        torchvision_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # flatten (not a global pool): at 32x32 input the map is already 1x1, and a different
        # input size fails loudly at the head instead of silently changing the model.
        return self.classifier(torch.flatten(self.features(x), 1))


@register("vgg19_bn")
def vgg19_bn(*, num_classes: int, in_channels: int) -> nn.Module:
    """VGG-19-BN for 32x32 inputs: 20,040,522 parameters for 10 classes."""
    return VGG(VGG19_CFG, num_classes, in_channels)
