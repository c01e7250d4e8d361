"""Errors the CLI turns into `error: ...` lines and exit code 2, never a traceback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


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


@contextmanager
def writing(what: str, folder: str | os.PathLike) -> Iterator[None]:
    """`with writing("the report", out): ...`: an OSError inside (a folder that cannot be
    made, a full disk) becomes the one line `cannot write the report in OUT: why`, the same
    for every command and API function that writes."""
    try:
        yield
    except OSError as exc:
        raise OracleError(f"cannot write {what} in {folder}: {exc.strerror or exc}") from None
