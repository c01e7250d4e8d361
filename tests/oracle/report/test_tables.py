"""The report's tables (oracle.report.tables) and how a page writes one (oracle.report.render):
both pages show the same tables in the same order, cells carry the verdict's class."""

from __future__ import annotations

import pytest

from oracle.judge.analysis import Analysis
from oracle.report.build import analyse_record
from oracle.report.render import html_table, md_table
from oracle.report.tables import Table, sections
from oracle.store.record import Record
from oracle.store.rows import rows_frame
from tests._fake_record import GRID, SEEDS, fake_rows, fake_study


@pytest.fixture(scope="module")
def analysis() -> Analysis:
    study = fake_study()
    attrs = {"study": "fake", "arms": study.arm_names(), "cycles": 3, "seeds": SEEDS, "grid": GRID,
             "tolerance": 0.01, "study_yaml": "name: fake\n",
             "silo_max_lr": [study.schedule("silo").max_lr(q) for q in range(3)]}
    return analyse_record(Record("fake", "sqlite:///nowhere.db", attrs, rows_frame(fake_rows(study)), [], 0))


def test_the_sections_in_order_with_the_calibration_before_the_arms(analysis):
    titles = ["Summary", "Verdict per cycle", "Paired differences at the last cycle",
              "Test accuracy per arm and cycle", "Compute per arm"]
    assert [t.title for t in sections(analysis)] == titles
    calibration = {"settings": {"offset": 0.03, "alpha": 0.1, "beta": 5.0, "delay": 1}, "fit": {"seeds": [0, 1]}}
    assert [t.title for t in sections(analysis, calibration)] == [*titles[:3], "Calibrated SILO", *titles[3:]]


def test_the_verdict_table_marks_each_cycle_and_says_where_silo_fell(analysis):
    table = sections(analysis)[1]
    verdict = table.headers.index("verdict")
    assert [r[verdict] for r in table.rows] == ["✔ inside", "✔ inside", "✘ outside (below)"]
    assert [c[verdict] for c in table.classes] == ["in", "in", "out"]
    assert "note" not in table.headers  # no cycle has a note: no note column


def test_two_seeds_have_no_bootstrap_interval(analysis):
    table = sections(analysis)[2]
    assert {r[table.headers.index("bootstrap")] for r in table.rows} == {"– (< 4 seeds)"}


def test_a_table_is_written_alike_in_html_and_markdown():
    t = Table("T", ["a", "b|c"], [["1 < 2", "x|y"]], "a note", "tid", [["", "in"]])
    assert html_table(t) == ('<h2>T</h2>\n<div class="tablewrap"><table id="tid"><thead><tr><th>a</th><th>b|c</th>'
                             '</tr></thead><tbody><tr><td>1 &lt; 2</td><td class="in">x|y</td></tr></tbody></table>'
                             '</div><p class="note">a note</p>')
    assert md_table(t) == "## T\n\n| a | b\\|c |\n|---|---:|\n| 1 < 2 | x\\|y |\n\n_a note_"
