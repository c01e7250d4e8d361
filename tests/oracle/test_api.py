"""oracle.api, through the README's Python example run as written on the smoke study: the
sweep, the record, the analysis, a report rebuilt elsewhere, calibration and compare."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from oracle.report.build import REPORT_FILES
from oracle.report.compare import COMPARE_FILES
from tests._fake_record import NAME, fake_rows, reported_folder
from tests._repo import REPO

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


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A results folder with the fake study's record and report (tests/_fake_record.py)."""
    return reported_folder(tmp_path_factory)


def test_a_folder_that_cannot_be_written_is_the_same_one_line_from_the_cli_and_the_api(recorded, tmp_path, capsys):
    import oracle
    from oracle.cli import main
    from oracle.errors import OracleError

    blocked = tmp_path / "a-file"  # a file where a folder should be made
    blocked.write_text("")
    taken = tmp_path / "taken"  # calibrate writes into DIR itself: its calibration.json is a folder there
    (taken / "calibration.json").mkdir(parents=True)
    record = oracle.read_record(recorded)
    url = f"sqlite:///{recorded / 'optuna.db'}"
    cases = [
        ("the report", blocked / "r", ["report", str(recorded), "--out", str(blocked / "r")],
         lambda: oracle.build_report(record, blocked / "r")),
        ("the comparison", blocked / "c", ["compare", str(recorded), "--out", str(blocked / "c")],
         lambda: oracle.compare([recorded], out=blocked / "c")),
        ("the calibration", taken, ["calibrate", str(taken), "--storage", url, "--study", NAME],
         lambda: oracle.calibrate(record, out=taken)),
    ]
    for what, where, argv, call in cases:
        with pytest.raises(OracleError) as caught:
            call()
        said = caught.value.message
        assert said.startswith(f"cannot write {what} in {where}: ") and "\n" not in said, said
        assert main(argv) == 2, argv
        assert capsys.readouterr().err == f"error: {said}\n"


def test_the_api_returns_what_the_cli_prints(recorded, tmp_path, capsys):
    import oracle
    from oracle.cli import main

    record = oracle.read_record(recorded)
    report = oracle.build_report(record, tmp_path / "again")
    assert report.html == tmp_path / "again" / "report.html" and report.html.is_file()
    assert {f.name for f in report.files} >= set(REPORT_FILES) and all(f.is_file() for f in report.files)
    assert report.analysis.summary == json.loads((tmp_path / "again" / "summary.json").read_text())
    assert main(["report", str(recorded), "--out", str(tmp_path / "cli")]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == report.analysis.summary["text"].splitlines()

    side = oracle.compare([recorded], out=tmp_path / "cmp")
    assert list(side.table["study"]) == [NAME] and [f.name for f in side.files] == list(COMPARE_FILES)
    assert main(["compare", str(recorded), "--out", str(tmp_path / "cmp2")]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == side.notes

    s = oracle.status(recorded)
    assert (s["study"], s["state"], s["runs_done"]) == (NAME, "finished", len(fake_rows()))
    assert main(["status", str(recorded), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {k: v for k, v in printed.items() if k != "elapsed_s"} == {k: v for k, v in s.items() if k != "elapsed_s"}


def test_no_library_module_takes_the_command_lines_arguments():
    """One entry path: only oracle/cli.py reads an argparse Namespace; the rest is oracle.api's."""
    import ast

    for path in sorted((ROOT / "oracle").rglob("*.py")):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef):
                assert not node.name.startswith("main"), f"{path}: {node.name}"
                assert all(a.arg != "args" for a in node.args.args), f"{path}: {node.name}(args)"
