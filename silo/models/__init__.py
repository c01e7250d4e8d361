"""Models, by name: ``build_model("resnet20", num_classes=10, in_channels=3)``.

Importing this package registers every model below; adding one means adding its module
and one import line here (see registry.py).
"""

from silo.models.registry import (
    MODELS,
    ModelArgumentError,
    build_model,
    check_model_args,
    model_kwargs,
    model_names,
    register,
)

# Imported for their @register side effect on MODELS (the registry's only mutation).
from silo.models import densenet, mnist1d, mobilenetv2, resnet_cifar, resnet_imagenet, vgg, vit  # noqa: F401  isort: skip

__all__ = [
    "MODELS",
    "ModelArgumentError",
    "build_model",
    "check_model_args",
    "model_kwargs",
    "model_names",
    "register",
]
