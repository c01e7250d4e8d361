"""Every third-party module that oracle/ and silo/ import, at the top or lazily inside a
function, comes from a distribution pyproject.toml declares: an install from the package
alone never meets an ImportError that only a dependency's dependency happened to satisfy."""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

from tests._repo import REPO

ROOT = REPO
OWN = {"oracle", "silo"}


def imported_top_names(folder: Path, root: Path = ROOT) -> dict[str, str]:
    """{top-level module: the first file importing it (relative to `root`)} over every absolute
    import in `folder`, lazy ones inside functions too."""
    found: dict[str, str] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(root)))
    return found


def declared() -> dict[str, set[str]]:
    """{'dependencies' or an extra's name: the distribution names it lists, normalized}."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lists = {"dependencies": project["dependencies"], **project.get("optional-dependencies", {})}
    return {group: {_normal(re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0]) for spec in specs}
            for group, specs in lists.items()}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def undeclared(imports: dict[str, str], runtime: set[str]) -> list[str]:
    """The third-party imports whose distribution `runtime` does not list, one line each."""
    providers = metadata.packages_distributions()
    out = []
    for module, where in sorted(imports.items()):
        if module in OWN or module in sys.stdlib_module_names or module == "__future__":
            continue
        dists = {_normal(d) for d in providers.get(module, [])}
        assert dists, f"{where}: imports {module}, which no installed distribution provides"
        if not dists & runtime:
            out.append(f"{where}: {module} (from {', '.join(sorted(dists))})")
    return out


def test_every_direct_import_is_a_declared_dependency():
    groups = declared()
    runtime = groups["dependencies"] | groups.get("postgres", set())  # postgres: the optional storage
    found = {}
    for folder in sorted(OWN):
        found.update(imported_top_names(ROOT / folder))
    missing = undeclared(found, runtime)
    assert not missing, "imported but not declared in pyproject.toml: " + "; ".join(missing)


def test_a_lazy_import_of_an_undeclared_distribution_is_found(tmp_path):
    (tmp_path / "m.py").write_text("import os\n\ndef f():\n    import tqdm.auto\n    from yaml import safe_load\n")
    found = imported_top_names(tmp_path, tmp_path)
    assert found == {"os": "m.py", "tqdm": "m.py", "yaml": "m.py"}
    assert undeclared(found, {"pyyaml"}) == ["m.py: tqdm (from tqdm)"]
