"""oracle.api, through the README's Python example run as written on the smoke study: the
sweep, the record, the analysis, a report rebuilt elsewhere, calibration and compare."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest

from oracle.report.build import REPORT_FILES
from tests._repo import REPO

pytestmark = pytest.mark.integration  # every test here starts Ray, a server or a driver

ROOT = REPO


def readme_example() -> str:
    """The python block of the README's "The Python API" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## The Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch, local_ray, capsys):
    (tmp_path / "studies").mkdir()
    shutil.copy(ROOT / "studies" / "smoke.yaml", tmp_path / "studies")
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), "README.md (The Python API)", "exec"), {})
    out = capsys.readouterr().out
    smoke, again = tmp_path / "results" / "smoke", tmp_path / "results" / "smoke" / "again"
    summary = json.loads((smoke / "summary.json").read_text())
    # quiet=True printed nothing: the first line is the example's own print. analyse() is the
    # analysis the sweep's report was built from: its verdict in words and its verdicts
    # table, as verdicts.csv holds them
    assert out.startswith(summary["text"] + "\n") and out.count(summary["text"]) == 1, out[:2000]
    columns = ["cycle", "oracle_max_lr", "silo_max_lr", "p_inside", "verdict"]
    assert str(pd.read_csv(smoke / "verdicts.csv")[columns]) in out
    # build_report from the record wrote the very files the sweep's own report did
    for name in REPORT_FILES:
        assert (again / name).read_bytes() == (smoke / name).read_bytes(), name
    assert re.search(r"calibrated SILO: .*inside \d+ of \d+ cycles", out)
    assert re.search(r"^0\s+smoke\b", out, re.M)  # compare's table: one row, the smoke study


def test_version_is_the_installed_distributions(capsys):
    from importlib import metadata

    from oracle.cli import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"silo-oracle {metadata.version('silo-oracle')}\n"
