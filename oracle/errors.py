"""Errors the CLI turns into `error: ...` lines and exit code 2, never a traceback."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol


class OracleError(Exception):
    """A mistake the user can fix (bad input, missing files, wrong flags): one message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StudyError(OracleError):
    """A study file that cannot be used. Each problem is one line: `<field path>: <what is
    wrong and what is allowed>`, so a user fixes them all in one pass."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class Invalid(Protocol):
    """What `invalid` reads of a pydantic ValidationError (duck-typed: this module imports
    nothing but the standard library): its problems, each with loc, msg and input."""

    def errors(self) -> Sequence[Mapping[str, Any]]: ...


def invalid(what: str, exc: Invalid, *, whole: str, note: str) -> OracleError:
    """A validation error as the one line `what: where: msg (note)`, for its first problem:
    `where` is the field's dotted path, or `whole` when the object as a whole does not fit;
    `note` may show the value that did not fit as `{input!r}`. Raise it `from None`."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or whole
    return OracleError(f"{what}: {where}: {first['msg']} ({note.format(input=first.get('input'))})")


@contextmanager
def writing(what: str, folder: str | os.PathLike) -> Iterator[None]:
    """`with writing("the report", out): ...`: an OSError inside (a folder that cannot be
    made, a full disk) becomes the one line `cannot write the report in OUT: why`, the same
    for every command and API function that writes."""
    try:
        yield
    except OSError as exc:
        raise OracleError(f"cannot write {what} in {folder}: {exc.strerror or exc}") from None
