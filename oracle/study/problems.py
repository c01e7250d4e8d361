"""The error lines every problem of a study file becomes: `<field path>: <what is wrong and
what is allowed>` (docs/design.md, bad input), from pydantic's errors and our own checks.

A validator that finds problems *below* the field it validates raises FieldProblems, whose
paths are loc tuples relative to that field; field_problems turns a ValidationError into
(path, message) pairs with those paths joined on.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from silo.config import TaskConfig

M = TypeVar("M", bound=BaseModel)


class FieldProblems(ValueError):
    """Raised inside a validator to report problems at paths *below* the field it validates
    (pydantic would pin a plain ValueError on the field itself). Paths are loc tuples."""

    def __init__(self, problems: list[tuple[tuple, str]]) -> None:
        super().__init__("; ".join(f"{field_path(loc)}: {msg}" if loc else msg for loc, msg in problems))
        self.problems = problems


def field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validate_nested(model: type[M], data: Any) -> M:
    """Validate a sub-model inside a validator, keeping its field paths in the report."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise FieldProblems(field_problems(exc, model)) from None


def field_problems(exc: ValidationError, root: type) -> list[tuple[tuple, str]]:
    out = []
    for e in exc.errors():
        loc, err = tuple(e["loc"]), e.get("ctx", {}).get("error")
        if isinstance(err, FieldProblems):
            out += [(loc + sub, msg) for sub, msg in err.problems]
        else:
            out.append((loc, _message(e, root)))
    return out


def _unwrap(ann: Any) -> Any:
    """Optional[X] and Annotated[X, ...] -> X."""
    while True:
        origin = get_origin(ann)
        if origin is Annotated:
            ann = get_args(ann)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(ann) if a is not type(None)]
            if len(args) != 1:
                return ann
            ann = args[0]
        else:
            return ann


def _field_at(root: type, loc: tuple) -> tuple[Any, list]:
    """The annotation and constraint metadata (Ge, Lt, ...) of the field at `loc`."""
    ann: Any = root  # a type, then whatever annotation the path leads to
    meta: list = []
    for part in loc:
        ann = _unwrap(ann)
        if isinstance(part, int):  # an item of tuple[X, ...] / list[X]
            args = get_args(ann)
            if not args:
                return None, []
            ann = args[0]
            meta = list(get_args(ann)[1:]) if get_origin(ann) is Annotated else []
            meta = [m for x in meta for m in getattr(x, "metadata", [x])]
        elif isinstance(ann, type) and issubclass(ann, BaseModel) and part in ann.model_fields:
            info = ann.model_fields[part]
            ann, meta = info.annotation, list(info.metadata)
        else:
            return None, []
    return ann, meta


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _message(e: Mapping[str, Any], root: type) -> str:
    kind, loc, value = e["type"], tuple(e["loc"]), e.get("input")
    if kind == "extra_forbidden":
        model = _unwrap(_field_at(root, loc[:-1])[0])
        allowed = list(getattr(model, "model_fields", {}))
        if getattr(model, "FILE_ORDER", None):  # the Study: file order, not field order
            allowed = list(model.FILE_ORDER)
        if model is TaskConfig:  # a study sets pruning in its own section; the fingerprint is computed
            allowed = [k for k in allowed if k not in ("pruning", "model_fingerprint")]
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        mean = f"; did you mean {hint[0]!r}?" if hint else ""
        return f"unknown key {loc[-1]!r} (allowed: {', '.join(allowed)}){mean}"
    if kind == "missing":
        return "required, but missing"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"must be a mapping of keys to values, got {shown(value)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        ops = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
        bounds = [f"{op} {getattr(m, k)}" for m in _field_at(root, loc)[1]
                  for k, op in ops.items() if getattr(m, k, None) is not None]
        if bounds:
            return f"must be {' and '.join(bounds)}, got {shown(value)}"
    if kind == "value_error":
        msg = str(e["ctx"]["error"])
    else:  # pydantic's own wording, made to read like ours
        msg = re.sub(r"^Input should be", "must be", e["msg"]).split(", unable to")[0]
    scalar = value is None or isinstance(value, (str, int, float, bool))
    return f"{msg}, got {shown(value)}" if scalar and repr(value) not in msg else msg
