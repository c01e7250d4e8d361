"""The model registry: a name -> builder table, and the one function that builds from it.

Builders are plain functions ``builder(*, num_classes, in_channels, **named_options)``.
The registry reads each builder's signature, so the options a model accepts are declared
once, in the builder itself, and unknown options are rejected before anything is built
(a typo in a study's ``model_args`` must fail loudly, not be silently ignored: the args
are part of the run identity).

To add a model (densenet40, mobilenetv2, vit, resnet50, ...): write a module in this
package whose builder is decorated with ``@register("name")``, and import that module in
``silo/models/__init__.py``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

Builder = Callable[..., nn.Module]

# The only module-level state: filled by @register when the model modules are imported.
MODELS: dict[str, Builder] = {}

# Every builder takes these; they come from the dataset, not from the study's model_args.
_REQUIRED = ("num_classes", "in_channels")


class ModelArgumentError(TypeError, ValueError):
    """A bad model name or option.

    It is a TypeError because that is what Python raises for an unexpected keyword, and a
    ValueError so that pydantic validators (which only convert ValueError) turn it into a
    field error of the study file.
    """


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator: add a builder to MODELS under ``name``."""

    def decorate(builder: Builder) -> Builder:
        if name in MODELS:
            # Silently replacing a model would change what existing run ids mean.
            raise ValueError(f"model {name!r} is already registered")
        params = inspect.signature(builder).parameters
        for required in _REQUIRED:
            p = params.get(required)
            if p is None or p.kind is not inspect.Parameter.KEYWORD_ONLY:
                raise TypeError(f"builder for {name!r} must take keyword-only {required!r}")
        for p in params.values():
            # Options need defaults so that an empty model_args builds the reference model.
            if p.name not in _REQUIRED and p.kind is not inspect.Parameter.VAR_KEYWORD:
                if p.default is inspect.Parameter.empty:
                    raise TypeError(f"builder for {name!r}: option {p.name!r} needs a default")
        MODELS[name] = builder
        return builder

    return decorate


def model_names() -> list[str]:
    """The registered model names, sorted."""
    return sorted(MODELS)


def _builder(name: str) -> Builder:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelArgumentError(
            f"unknown model {name!r}; known models: {', '.join(model_names())}"
        ) from None


def model_kwargs(name: str) -> dict[str, Any]:
    """The options ``name`` accepts in ``model_args``, with their defaults."""
    params = inspect.signature(_builder(name)).parameters
    return {
        p.name: p.default
        for p in params.values()
        if p.name not in _REQUIRED and p.kind is not inspect.Parameter.VAR_KEYWORD
    }


def check_model_args(name: str, args: Mapping[str, Any]) -> None:
    """Raise ModelArgumentError if ``name`` is unknown or ``args`` has options it lacks.

    Cheap (builds nothing), so study validation can call it for every task. An import path
    (silo.models.foreign) is imported and its signature checked.
    """
    if ":" in name:
        from silo.models.foreign import check_foreign_model_args

        check_foreign_model_args(name, args)
        return
    builder = _builder(name)
    params = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # the builder checks its own options
    for key in _REQUIRED:
        if key in args:
            raise ModelArgumentError(
                f"model {name!r}: {key!r} comes from the dataset and cannot be set in model_args"
            )
    allowed = model_kwargs(name)
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        accepts = ", ".join(sorted(allowed)) or "no options"
        raise ModelArgumentError(
            f"model {name!r} got unknown argument(s) {', '.join(map(repr, unknown))}; "
            f"it accepts: {accepts}"
        )


def build_model(name: str, *, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    """Build model ``name`` with freshly initialised weights.

    Initialisation draws from torch's default generator only, so the caller fixes the
    weights with ``torch.manual_seed`` (inside ``torch.random.fork_rng`` to keep its own
    RNG untouched). Weights are created on the CPU; move the model afterwards. A name with
    a colon is an import path or torchvision:NAME (silo.models.foreign).
    """
    foreign = ":" in name
    if not foreign:
        check_model_args(name, kwargs)
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        positive_int(f"model {name!r}: {key}", value)
    if foreign:
        from silo.models.foreign import build_foreign_model

        return build_foreign_model(name, num_classes=num_classes, in_channels=in_channels, **kwargs)
    return MODELS[name](num_classes=num_classes, in_channels=in_channels, **kwargs)


def positive_int(what: str, value: Any) -> int:
    """Shared check for integer sizes (bool is an int in Python, but never a size)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelArgumentError(f"{what} must be a positive integer, got {value!r}")
    return value
