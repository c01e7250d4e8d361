"""A study's `code:`: the researcher's own packages, on the driver's path and on every Ray worker.

Each entry is a package folder (importable by its folder name, like an installed package)
or a single `.py` module, relative to the study file. On the driver its parent folder goes
on `sys.path` when the study is loaded, so the import paths in `task.model` and
`task.data.name` resolve for the check of oracle.study.probe; the sweep ships the same entries
to every worker as Ray's runtime_env `py_modules` (Ray uploads them once per job and puts
them on each worker's path), so a multi-node cluster needs no install step. Code already
installed in the environment needs no entry.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


class CodePathError(ValueError):
    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index, self.message = index, message


def resolve_code_paths(paths, base: str | Path | None) -> tuple[str, ...]:
    """Absolute paths of the entries (relative ones from `base`, else the cwd), each checked;
    their parent folders are put on the driver's sys.path."""
    base_dir = Path(base) if base is not None else Path.cwd()
    out = []
    for i, text in enumerate(paths):
        path = (base_dir / Path(text).expanduser()).resolve()
        if not path.exists():
            raise CodePathError(i, f"no such folder or file: {path}")
        if path.is_file() and path.suffix != ".py":
            raise CodePathError(i, f"{path} is neither a folder nor a .py file")
        if path.is_dir() and not (path / "__init__.py").is_file() and not any(path.glob("*.py")):
            raise CodePathError(i, f"{path} holds no Python code (a package folder has an __init__.py)")
        out.append(str(path))
    for path in out:
        put_on_path(path)
    return tuple(out)


def put_on_path(entry: str) -> None:
    """The folder an entry is imported from, first on sys.path (once)."""
    parent = str(Path(entry).parent)
    if parent not in sys.path:
        sys.path.insert(0, parent)
        importlib.invalidate_caches()  # a finder cached before the folder was added


def runtime_env(code: tuple[str, ...]) -> dict | None:
    """Ray's runtime_env that ships `code` to every worker; None when there is none."""
    return {"py_modules": list(code)} if code else None

