"""Errors the CLI turns into `error: ...` lines and exit code 2, never a traceback."""

from __future__ import annotations


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
