"""A study's `code:`: the researcher's own code, on the driver's path and on every Ray worker.

Each entry, relative to the study file, is one of:

- a package folder (it has an `__init__.py`), importable by its folder name like an installed
  package, or a single `.py` module: its parent folder goes on the driver's `sys.path`, and
  the sweep ships it to every worker as Ray's runtime_env `py_modules`;
- a plain folder (no `__init__.py`, e.g. `.`, the folder holding the study file and the
  researcher's packages): the folder itself goes on the driver's `sys.path`, as a working
  directory is, and the sweep ships it to every worker as Ray's runtime_env `working_dir`
  (which Ray puts on each worker's path), without EXCLUDED (version control, virtual
  environments, caches), the top-level `results/` (every study's default output) and the
  study's output folder when it lies inside. At most one plain folder (Ray ships one
  working_dir), and at most WORKING_FOLDER_LIMIT bytes of it, refused before anything runs.

So a multi-node cluster needs no install step. Code already installed in the environment
needs no entry.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import sys
from pathlib import Path

# What a plain folder never ships: names matched at any depth (Ray's working_dir excludes).
EXCLUDED = (".git", ".hg", ".svn", ".venv", "venv", ".tox", "__pycache__", ".pytest_cache", ".mypy_cache",
            ".ruff_cache", ".ipynb_checkpoints", "*.pyc", "mutants")
# Ray zips the working_dir and sends it through its GCS once per job (refused from 512 MiB
# zipped); a folder of code larger than this holds data or results: list packages instead.
WORKING_FOLDER_LIMIT = 100 * 2**20


class CodePathError(ValueError):
    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index, self.message = index, message


def is_plain_folder(entry: str | Path) -> bool:
    """A folder that is not a package: shipped whole, as a working directory."""
    path = Path(entry)
    return path.is_dir() and not (path / "__init__.py").is_file()


def resolve_code_paths(paths, base: str | Path | None) -> tuple[str, ...]:
    """Absolute paths of the entries (relative ones from `base`, else the cwd), each checked;
    each put on the driver's sys.path (put_on_path)."""
    base_dir = Path(base) if base is not None else Path.cwd()
    out: list[str] = []
    plain: int | None = None
    for i, text in enumerate(paths):
        path = (base_dir / Path(text).expanduser()).resolve()
        if not path.exists():
            raise CodePathError(i, f"no such folder or file: {path}")
        if path.is_file() and path.suffix != ".py":
            raise CodePathError(i, f"{path} is neither a folder nor a .py file")
        if is_plain_folder(path):
            if plain is not None:
                raise CodePathError(i, f"{path}: only one plain folder (no __init__.py) can be shipped, as Ray's "
                                       f"working_dir, and code[{plain}] is one; list package folders instead")
            plain = i
            check_size(i, path, None)
        out.append(str(path))
    for entry in out:
        put_on_path(entry)
    return tuple(out)


def put_on_path(entry: str) -> None:
    """The folder an entry is imported from, first on sys.path (once): a plain folder itself,
    a package's or a module's parent."""
    folder = entry if is_plain_folder(entry) else str(Path(entry).parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
        importlib.invalidate_caches()  # a finder cached before the folder was added


def excludes(folder: str | Path, out: str | Path | None) -> list[str]:
    """Ray's working_dir excludes for a plain folder: EXCLUDED, results/, and `out` if inside."""
    found = [*EXCLUDED, "/results/"]
    if out is not None:
        try:
            inside = Path(out).resolve().relative_to(Path(folder).resolve())
        except ValueError:
            inside = None
        if inside is not None and str(inside) != ".":
            found.append(f"/{inside.as_posix()}/")
    return found


def folder_size(folder: str | Path, skip: list[str]) -> int:
    """Bytes a plain folder ships: every file but those `skip` (excludes()) names."""
    root = Path(folder)
    anchored = {p.strip("/") for p in skip if p.startswith("/")}
    names = [p for p in skip if not p.startswith("/")]
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        dirnames[:] = [d for d in dirnames if not any(fnmatch.fnmatch(d, n) for n in names)
                       and (rel / d).as_posix() not in anchored]
        for name in filenames:
            if not any(fnmatch.fnmatch(name, n) for n in names):
                try:
                    total += (Path(dirpath) / name).lstat().st_size
                except OSError:
                    pass
    return total


def check_size(index: int, folder: str | Path, out: str | Path | None) -> None:
    size = folder_size(folder, excludes(folder, out))
    if size > WORKING_FOLDER_LIMIT:
        raise CodePathError(index, f"{folder} holds {size / 2**20:,.1f} MiB to ship to every worker (without "
                                   f"{', '.join(EXCLUDED[:6])}, caches and results/), more than the limit of "
                                   f"{WORKING_FOLDER_LIMIT / 2**20:,.1f} MiB: list its package folders in `code:` "
                                   "instead, or move data and results out of it")


def runtime_env(code: tuple[str, ...], out: str | Path | None = None) -> dict | None:
    """Ray's runtime_env that ships `code` to every worker; None when there is none. A plain
    folder is checked against the limit again, now without the study's output folder `out`."""
    modules = [c for c in code if not is_plain_folder(c)]
    env: dict = {"py_modules": modules} if modules else {}
    for i, entry in enumerate(code):
        if is_plain_folder(entry):
            check_size(i, entry, out)
            env.update(working_dir=entry, excludes=excludes(entry, out))
    return env or None


def not_found_words(text: str, code: tuple[str, ...]) -> str:
    """A "no module named" line says where the module was looked for: the study's `code:`
    entries, and how a package or the folder holding it is listed. Other lines unchanged."""
    if "no module named" not in text or " (install it" not in text:
        return text
    return (text.split(" (install it", 1)[0] + f" (not installed; {searched(code)}; a package folder is listed "
            "itself, e.g. `code: [mynet]`, the folder holding it as `code: [.]`)")


def searched(code: tuple[str, ...]) -> str:
    """The `code:` entries an import looked in, for a module-not-found message."""
    if not code:
        return "the study has no `code:` entries"
    kinds = [f"{c} ({'plain folder' if is_plain_folder(c) else 'module' if c.endswith('.py') else 'package'})"
             for c in code]
    return "searched the study's `code:` entries: " + ", ".join(kinds)
