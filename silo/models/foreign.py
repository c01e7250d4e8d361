"""Models that are not in the registry: `torchvision:NAME` and `package.module:callable`.

    build_foreign_model("torchvision:resnet18", num_classes=10, in_channels=3)
    build_foreign_model("mynets.models:TinyNet", num_classes=10, in_channels=1, width=16)

- ``torchvision:NAME``: ``torchvision.models.get_model(NAME, weights=None, num_classes=...)``
  with the study's ``model_args`` as keyword arguments. Never a download: ``weights`` and
  ``weights_backbone`` cannot be set. torchvision's classifiers take 3 input channels.
- ``package.module:callable`` (the callable may be a class or a dotted attribute,
  ``pkg.mod:Factory.build``): called with ``model_args`` as keyword arguments, plus
  ``num_classes`` and ``in_channels`` where its signature accepts them (a parameter of that
  name, or ``**kwargs``). It must return a ``torch.nn.Module`` whose weights it initialises
  from torch's default generator (the run seeds it), on the CPU.

The module is imported by name, so the code must be importable: installed, or named in the
study's ``code:`` (which puts it on the driver's path and ships it to every Ray worker).

`architecture_fingerprint` is what the run identity knows of such a model: the names,
shapes and dtypes of its parameters and buffers. It cannot see a changed forward pass that
keeps the same parameters (an activation swapped, a skip connection moved).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from silo.models.registry import ModelArgumentError

TORCHVISION = "torchvision"
FINGERPRINT_CHARS = 16
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# Set from the dataset; a study's model_args cannot set them.
_FROM_DATA = ("num_classes", "in_channels")
_NO_DOWNLOAD = ("weights", "weights_backbone")


class ForeignCodeError(ModelArgumentError):
    """The user's code (or a torchvision name) could not give what a study asks of it.

    The message is one line, meant to follow the study field it concerns."""


class ForeignArgumentError(ForeignCodeError):
    """The arguments given to the user's callable (model_args, data.args) do not fit its signature."""


def is_import_path(name: str) -> bool:
    """Whether a model or dataset name is an import path (or torchvision:...), not a registered name."""
    return isinstance(name, str) and ":" in name


def split_import_path(spec: str) -> tuple[str, str]:
    """("package.module", "attr.path") of "package.module:attr.path"; ForeignCodeError if malformed."""
    module, _, attr = spec.partition(":")
    if not _DOTTED.match(module) or not _DOTTED.match(attr):
        raise ForeignCodeError(
            f"{spec!r} is not an import path: write package.module:callable (or torchvision:NAME)"
        )
    return module, attr


def resolve_callable(spec: str) -> Callable[..., Any]:
    """The object named by "package.module:attr", imported now; ForeignCodeError naming what is missing."""
    module_name, attr = split_import_path(spec)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        raise ForeignCodeError(
            f"{spec!r}: no module named {missing!r} (install it, or list its folder in the study's `code:`)"
        ) from None
    except Exception as exc:  # the user's module failed while importing
        raise ForeignCodeError(f"{spec!r}: importing {module_name!r} raised {one_line(exc)}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            where = getattr(module, "__file__", None) or module_name
            raise ForeignCodeError(f"{spec!r}: {module_name!r} ({where}) has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ForeignCodeError(f"{spec!r} is {a_type(obj)}, not a callable")
    return obj


def a_type(value: Any) -> str:
    """'an int', 'a dict': the type of `value` with its article, for messages."""
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and its first line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _parameters(obj: Callable[..., Any]) -> Mapping[str, inspect.Parameter] | None:
    try:
        return inspect.signature(obj).parameters
    except (TypeError, ValueError):  # a builtin without a signature: pass what it is given
        return None


def accepts(obj: Callable[..., Any], name: str) -> bool:
    """Whether calling `obj` with keyword `name` is allowed by its signature."""
    params = _parameters(obj)
    if params is None:
        return False
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return True
    p = params.get(name)
    return p is not None and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def check_call_args(spec: str, obj: Callable[..., Any], args: Mapping[str, Any], what: str) -> None:
    """Unknown keyword arguments, or a required one missing, before the call."""
    params = _parameters(obj)
    if params is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    named = {n for n, p in params.items()
             if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)}
    unknown = sorted(set(args) - named)
    if unknown:
        raise ForeignArgumentError(
            f"{spec!r} takes no argument(s) {', '.join(map(repr, unknown))}; "
            f"it accepts: {', '.join(sorted(named)) or 'none'} (set them in {what})"
        )


def _check_not_from_data(spec: str, args: Mapping[str, Any]) -> None:
    for key in _FROM_DATA:
        if key in args:
            raise ForeignArgumentError(f"{spec!r}: {key!r} comes from the dataset and cannot be set in model_args")


def check_foreign_model_args(spec: str, args: Mapping[str, Any]) -> None:
    """Resolve `spec` (importing its module) and check `args` against its signature; builds nothing."""
    _check_not_from_data(spec, args)
    if spec.startswith(TORCHVISION + ":"):
        _torchvision_name(spec, args)
        return
    check_call_args(spec, resolve_callable(spec), args, "model_args")


def _torchvision_name(spec: str, args: Mapping[str, Any]) -> str:
    from torchvision import models

    name = spec.split(":", 1)[1]
    known = models.list_models()
    if name not in known:
        raise ForeignCodeError(f"{spec!r}: torchvision has no model {name!r} (torchvision.models.list_models())")
    for key in _NO_DOWNLOAD:
        if key in args:
            raise ForeignArgumentError(f"{spec!r}: {key!r} cannot be set: silo-oracle never downloads weights")
    return name


def build_foreign_model(spec: str, *, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    """Build the model an import path names, weights drawn from torch's default generator.

    Raises ForeignCodeError (one line) when the code cannot be found, raises, or returns
    something that is not an nn.Module."""
    _check_not_from_data(spec, kwargs)
    if spec.startswith(TORCHVISION + ":"):
        from torchvision import models

        name = _torchvision_name(spec, kwargs)
        make: Callable[..., Any] = models.get_model
        call = dict(name=name, weights=None, num_classes=num_classes, **kwargs)
        if in_channels != 3:
            raise ForeignCodeError(
                f"{spec!r}: torchvision's models take 3 input channels; the data has {in_channels}"
            )
    else:
        make = resolve_callable(spec)
        check_call_args(spec, make, kwargs, "model_args")
        call = dict(kwargs)
        for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
            if accepts(make, key):
                call[key] = value
    try:
        model = make(**call)
    except ForeignCodeError:
        raise
    except Exception as exc:
        raise ForeignCodeError(f"{spec!r} raised {one_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise ForeignCodeError(f"{spec!r} returned {a_type(model)}, not a torch.nn.Module")
    return model


def architecture(model: nn.Module) -> list[list[Any]]:
    """[kind, name, shape, dtype] of every parameter and buffer (non-persistent ones too), in model order."""
    out: list[list[Any]] = [["param", n, list(p.shape), str(p.dtype)] for n, p in model.named_parameters()]
    out += [["buffer", n, list(b.shape), str(b.dtype)] for n, b in model.named_buffers()]
    return out


def architecture_fingerprint(model: nn.Module) -> str:
    """A short hash of `architecture(model)`: equal for the same parameters and buffers."""
    text = json.dumps(architecture(model), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:FINGERPRINT_CHARS]


def check_fingerprint(model: nn.Module, expected: str) -> None:
    """Raise ForeignCodeError if `model` is not the architecture the driver checked: the code
    this process imported differs from the driver's (another version installed on a node)."""
    found = architecture_fingerprint(model)
    if found != expected:
        raise ForeignCodeError(
            f"the model built here has architecture {found}, the driver checked {expected}: this node "
            "imports other code than the driver (ship it with the study's `code:` or install the same version)"
        )
