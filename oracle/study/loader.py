"""Reading a study file: YAML (safely, with the fixes study files need) into a Study, or a
StudyError listing every problem, one line each, in file order.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from oracle.errors import StudyError
from oracle.study.model import Study
from oracle.study.problems import field_path, field_problems
from oracle.study.sections import _SECTIONS

MAX_STUDY_BYTES = 1_000_000


# ----------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader (same safety) with two fixes that matter for study files:
    `1e-3` is a float (YAML 1.1 reads it as a string), and a repeated key is an error
    (YAML silently keeps the last one, e.g. a second `arms:` replacing the first)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # SafeLoader itself rejects unhashable keys
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark,
                    f"found duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 reads on/off/yes/no as booleans; study files mean the words (`compile: on`,
# `fuse: off`), so, as in YAML 1.2, only true/false are booleans.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def parse_study(data: Any, source: str = "<study>", base: str | Path | None = None) -> Study:
    """Validate already-loaded data (a mapping) into a Study, or raise StudyError.
    `base`: the folder relative `code:` paths start from (the study file's; default the cwd)."""
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise StudyError([f"{source}: the top level must be a mapping with keys "
                          f"{', '.join(_SECTIONS)}; got {got}"])
    try:
        return Study.model_validate(data, context={"base": base})
    except ValidationError as exc:
        problems = field_problems(exc, Study)
    order = {k: i for i, k in enumerate(_SECTIONS)}  # report in file order, not field order
    problems.sort(key=lambda p: order.get(p[0][0] if p[0] else "", -1))
    raise StudyError([f"{field_path(loc) or source}: {msg}" for loc, msg in problems])


def load_study(path: str | os.PathLike) -> Study:
    """Read and validate a study file; StudyError lists every problem, one line each."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.is_file() and size > MAX_STUDY_BYTES:
            # A study is a few KB; parsing megabytes of YAML in pure Python takes minutes.
            raise StudyError([f"{path}: {size / 1e6:.1f} MB is too large for a study file "
                              f"(at most {MAX_STUDY_BYTES // 1_000_000} MB)"])
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyError([f"{path}: no such file"]) from None
    except IsADirectoryError:
        raise StudyError([f"{path}: is a directory, not a study file"]) from None
    except UnicodeDecodeError:
        raise StudyError([f"{path}: not UTF-8 text"]) from None
    except OSError as exc:
        raise StudyError([f"{path}: cannot read ({exc.strerror})"]) from None
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None)
        raise StudyError([f"{path}: not valid YAML{where}" + (f": {problem}" if problem else "")]) from None
    return parse_study(data, str(path), base=path.resolve().parent)
