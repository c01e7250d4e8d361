"""What produced a result: versions of the libraries that matter and the project's git commit.

Recorded with the Optuna record (so a report rebuilt elsewhere still says what ran the study)
and again when a report is built. Never imports torch or ray just to ask their version.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("silo-oracle", "torch", "ray", "optuna", "optuna-dashboard", "pandas", "matplotlib")
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # oracle/store/provenance.py -> the checkout


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_commit(root: Path = PROJECT_ROOT) -> str:
    """`git rev-parse HEAD` of the project's checkout, '+dirty' if tracked files changed;
    'unknown' outside a git checkout or without git."""
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    try:
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        dirty = False
    return commit + ("+dirty" if dirty else "")


def environment() -> dict[str, str]:
    """{'python': ..., 'silo-oracle': ..., 'torch': ..., ..., 'git commit': ...}"""
    out = {"python": platform.python_version()}
    out.update({name: package_version(name) for name in PACKAGES})
    out["git commit"] = git_commit()
    return out
