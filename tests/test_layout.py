"""The layout: oracle's subpackages import only down the flow (docs/design.md, "Packages").

Reads every module's imports with ast (at the top, inside functions, under TYPE_CHECKING,
relative ones resolved), so a lazy import back up the flow is caught like any other.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests._repo import REPO

# What each subpackage may import of oracle besides itself and oracle.errors (the one module
# every package shares). The report and the judge never import the sweep; the store imports
# none of the others; nothing imports oracle.cli or oracle.api (the top, which import anything).
MAY_IMPORT = {
    "store": set(),
    "judge": {"store"},
    "study": {"judge"},
    "report": {"store", "judge"},
    "sweep": {"store", "judge", "study", "report"},
}
SHARED = {"oracle.errors"}
TOP = {"oracle.cli", "oracle.api"}


def imported_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file, `from x import y` giving x and x.y
    (y may be a module), relative imports resolved against `package`."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            out.append((node.lineno, module))
            out += [(node.lineno, f"{module}.{a.name}") for a in node.names]
    return out


def module_name(path: Path, root: Path = REPO) -> tuple[str, str]:
    """('oracle.report.build', 'oracle.report') for oracle/report/build.py."""
    parts = path.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def unit(module: str) -> str | None:
    """The layout unit a module of oracle belongs to: a subpackage, a top module, or None."""
    parts = module.split(".")
    if parts[0] != "oracle":
        return None
    if len(parts) == 1:
        return "oracle"  # `from oracle import ...`: the public API, the top
    if parts[1] in MAY_IMPORT:
        return parts[1]
    return "oracle." + parts[1]


def backward_imports(root: Path = REPO) -> list[str]:
    problems = []
    for path in sorted((root / "oracle").rglob("*.py")):
        name, package = module_name(path, root)
        here = unit(name)
        if here in TOP or here == "oracle":
            continue
        for line, module in imported_modules(path, package):
            there = unit(module)
            if there is None or there == here:
                continue
            # oracle.errors is shared by every package, and itself imports nothing of oracle
            ok = (there in SHARED and here not in SHARED) or there in MAY_IMPORT.get(here, set())
            where = f"{path.relative_to(root)}:{line}:"
            if not ok and not any(p.startswith(where) for p in problems):  # one line per import
                problems.append(f"{where} {name} imports {module}")
    for path in sorted((root / "silo").rglob("*.py")):
        name, package = module_name(path, root)
        for line, module in imported_modules(path, package):
            where = f"{path.relative_to(root)}:{line}:"
            if unit(module) is not None and not any(p.startswith(where) for p in problems):
                problems.append(f"{where} {name} imports {module} (silo never imports oracle)")
    return problems


def test_no_import_runs_back_up_the_flow():
    assert backward_imports() == []


def test_every_subpackage_says_what_it_owns_and_may_import():
    for package, allowed in MAY_IMPORT.items():
        doc = ast.get_docstring(ast.parse((REPO / "oracle" / package / "__init__.py").read_text()))
        assert doc, f"oracle/{package}/__init__.py has no docstring"
        match = re.search(r"May import: (.*?);", doc, re.S)
        assert match, f"oracle/{package}/__init__.py: no 'May import: ...;' line"
        said = set(re.findall(r"oracle\.(\w+)", match.group(1))) - {"errors"}
        assert said == allowed, f"oracle/{package}: its docstring allows {sorted(said)}, the layout {sorted(allowed)}"
    # every folder under oracle/ is a subpackage the layout knows
    folders = {p.name for p in (REPO / "oracle").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(MAY_IMPORT)


@pytest.mark.parametrize("where, planted", [
    ("report/status.py", "from oracle.sweep.driver import run_sweep"),  # lazily, inside a function
    ("judge/analysis.py", "import oracle.sweep.ledger"),
    ("store/rows.py", "from oracle.judge.analysis import tabulate"),
    ("store/record.py", "from oracle.study import load_study"),
    ("report/render.py", "from ..sweep import driver"),  # relative
    ("study/probe.py", "from oracle.report import build"),
    ("judge/selection.py", "from oracle import api"),
    ("errors.py", "from oracle.store import plain"),
    ("../silo/train.py", "from oracle.store.runs import RunStore"),
])
def test_a_planted_backward_import_is_caught(tmp_path, where, planted):
    for folder in ("oracle", "silo"):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    assert backward_imports(tmp_path) == []
    target = tmp_path / "oracle" / where
    target.write_text(target.read_text() + f"\n\ndef _planted():\n    {planted}\n")
    found = backward_imports(tmp_path)
    assert len(found) == 1 and found[0].startswith(str(target.resolve().relative_to(tmp_path))), found


def test_relative_imports_resolve(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from ..sweep import driver\nfrom . import render\nfrom .plots import x\n")
    got = {m for _, m in imported_modules(source, "oracle.report")}
    assert {"oracle.sweep", "oracle.sweep.driver", "oracle.report.render", "oracle.report.plots.x"} <= got


@pytest.mark.integration
def test_importing_oracle_imports_nothing_heavy():
    """`import oracle` (and its lazy API) pulls in neither ray, optuna nor torch."""
    code = ("import sys, oracle; assert callable(oracle.load_study); "
            "print(sorted(m for m in ('ray', 'optuna', 'torch', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_provenance_finds_the_checkout_from_its_new_place():
    """oracle/store/provenance.py asks git about the folder two levels up: the checkout."""
    from oracle.store import provenance

    assert (provenance.PROJECT_ROOT / "pyproject.toml").is_file()
    assert (provenance.PROJECT_ROOT / "oracle" / "store" / "provenance.py").is_file()


# Tests of the repository as a whole (README and docs, this layout, declared dependencies,
# bench/gpu_check.py):
# the only test files that sit in tests/ itself.
WHOLE_REPOSITORY_TESTS = {"test_docs.py", "test_layout.py", "test_gpu.py", "test_dependencies.py"}


def misplaced_tests(tests: Path, repo: Path) -> list[str]:
    """Test folders mirror the packages: tests/silo/data tests silo/data, tests/oracle/store
    tests oracle/store. A folder with no such package, or a test file at the top that is not
    about the repository as a whole, is named."""
    wrong = []
    for folder in sorted(p for p in tests.rglob("*") if p.is_dir() and p.name != "__pycache__"):
        package = repo / folder.relative_to(tests)
        if not (package / "__init__.py").is_file():
            wrong.append(f"{folder.relative_to(repo)}/ mirrors no package")
    for path in sorted(tests.glob("test_*.py")):
        if path.name not in WHOLE_REPOSITORY_TESTS:
            wrong.append(f"{path.relative_to(repo)} belongs in the folder of the package it tests")
    return wrong


def test_tests_are_laid_out_like_the_packages():
    assert misplaced_tests(REPO / "tests", REPO) == []


def test_a_misplaced_test_is_named(tmp_path):
    shutil.copytree(REPO / "silo", tmp_path / "silo", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "tests" / "silo" / "nowhere").mkdir(parents=True)
    (tmp_path / "tests" / "test_schedules.py").write_text("")
    (tmp_path / "tests" / "test_docs.py").write_text("")
    assert misplaced_tests(tmp_path / "tests", tmp_path) == [
        "tests/silo/nowhere/ mirrors no package",
        "tests/test_schedules.py belongs in the folder of the package it tests",
    ]
