"""The README as a front page, run as written: every command of its `sh` blocks (on the
smoke study where it names the quickstart), its size and contents, the links of every page
under docs/, and the licence and citation files."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests._repo import REPO

ROOT = REPO
BIN = Path(sys.executable).parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def commands(text: str) -> list[str]:
    """Each command line of the ```sh blocks, its comment dropped, continuations joined."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #", 1)[0].strip()
            if line:
                out.append(line)
    return out


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_the_readme_is_a_front_page_with_its_contents():
    assert len(README.encode()) <= 15_000
    headings = re.findall(r"^## (.+)$", README, re.M)
    contents = README[README.index("## Contents"):].split("\n## ", 2)[0]
    listed = re.findall(r"\]\(#([^)]+)\)", contents)
    assert listed == [_anchor(h) for h in headings if h != "Contents"]
    for word in ("make demo", "make test", "## Reading the verdict on the demo", "## Your own network and data",
                 "## A cluster in ten lines", "## The Python API"):
        assert word in README, word


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_of_the_docs_leads_somewhere(page):
    text = page.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: {target}"
        if anchor and dest.suffix == ".md":
            anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", dest.read_text(encoding="utf-8"), re.M)}
            assert anchor in anchors, f"{page.name}: {target}"


def test_licence_and_citation_match_the_package():
    project = (ROOT / "pyproject.toml").read_text()  # tomllib is Python 3.11+
    meta = dict(re.findall(r'^(license|version) = "([^"]+)"', project, re.M))
    assert meta["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT"
    assert str(cff["version"]) == meta["version"] and cff["title"].startswith("silo-oracle")


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_every_command_of_the_readme_runs_as_written(tmp_path):
    # In a folder of its own, as a user's checkout: the quickstart's commands on the smoke
    # study (seconds instead of minutes), in the README's order.
    (tmp_path / "studies").mkdir()
    shutil.copy(ROOT / "studies" / "smoke.yaml", tmp_path / "studies")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONUNBUFFERED": "1"}
    listed = commands(README)
    assert listed[:2] == ["make demo", "make test"]
    ran = []
    for line in listed:
        argv = shlex.split(line.replace("quickstart", "smoke"))
        if argv[0] == "make":  # the targets exist and do what the README says (a dry run)
            dry = subprocess.run(["make", "-n", *argv[1:]], cwd=ROOT, capture_output=True, text=True)
            assert dry.returncode == 0, dry.stderr
            said = {"demo": "silo-oracle run studies/quickstart.yaml", "test": "pytest"}[argv[1]]
            assert said in dry.stdout, dry.stdout
            continue
        assert argv[0] == ".venv/bin/silo-oracle", line
        if argv[1:3] == ["run", "examples/own_model/study.yaml"]:
            # trained end to end, from outside the repository, by tests/test_own_code.py
            continue
        proc = subprocess.run([str(BIN / "silo-oracle"), *argv[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{line}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        ran.append(argv[1])
    assert ran == ["validate", "run", "status", "report", "compare", "calibrate", "validate"]
    assert (tmp_path / "results" / "smoke" / "report.html").is_file()
    assert (tmp_path / "results" / "compare" / "compare.html").is_file()
