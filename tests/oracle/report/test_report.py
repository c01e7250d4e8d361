"""The report: rebuilt from the storage alone, self-contained, readable in a browser; bad
input gives one line and exit code 2; the dashboard binds 127.0.0.1."""

from __future__ import annotations

import html
import json
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from oracle.cli import main
from oracle.report.build import REPORT_FILES, finish_study, report_from_record
from oracle.store.record import Record
from oracle.store.rows import rows_frame
from tests._fake_record import NAME, ROOT, copy_template, fake_rows, fake_study, reported_folder

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    """A results folder whose record is its own optuna.db, with the report built at the end of `run`."""
    return reported_folder(tmp_path_factory)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_the_end_of_a_run_writes_every_report_file(report_dir):
    for name in REPORT_FILES + ("landscape.png", "accuracy.png", "comparisons.png", "curves.png", "record.json"):
        assert (report_dir / name).stat().st_size > 0, name
    comparisons = pd.read_csv(report_dir / "comparisons.csv")
    last = comparisons[comparisons["last_cycle"]].set_index(["arm", "reference"])
    assert last.loc[("silo", "oracle"), "mean_diff"] == pytest.approx(-0.0321, abs=1e-4)
    assert comparisons.groupby(["arm", "reference"], sort=False)["reading"].apply(list).to_dict() == {
        ("lr_rewinding", "silo"): ["not separated", "worse", "worse"],  # cycle 0: the same runs
        ("silo", "oracle"): ["not separated", "worse", "worse"],
        ("lr_rewinding", "oracle"): ["not separated", "worse", "worse"]}
    verdicts = pd.read_csv(report_dir / "verdicts.csv")
    columns = ["cycle", "oracle_max_lr", "interval_low", "interval_high", "silo_in_interval"]
    assert verdicts[columns].to_dict("records") == [
        {"cycle": 0, "oracle_max_lr": 0.03, "interval_low": 0.03, "interval_high": 0.03, "silo_in_interval": True},
        {"cycle": 1, "oracle_max_lr": 0.1, "interval_low": 0.03, "interval_high": 0.1, "silo_in_interval": True},
        {"cycle": 2, "oracle_max_lr": 0.1, "interval_low": 0.1, "interval_high": 0.1, "silo_in_interval": False},
    ]
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["verdict"]["inside"] == 2 and summary["verdict"]["judged"] == 3
    assert summary["cost_ratio_oracle_to_silo"]["runs"] == 4.0  # 24 grid runs vs 6 chain runs
    assert summary["text"].startswith(
        "The question, per cycle: is SILO's max_lr within 1 point of the best max_lr's expected validation "
        "accuracy? (delta = analysis.tolerance; 2 seed(s)). Of 3 cycles, 3 were decided: SILO's max_lr was "
        "inside the Oracle's optimal interval in 2 and outside in 1")
    assert [summary["verdict"][k] for k in ("inside", "outside", "uncertain")] == [2, 1, 0]
    assert verdicts["verdict"].tolist() == ["inside", "inside", "outside"]
    assert verdicts["p_inside"].tolist() == [1.0, 1.0, 0.0]


def test_the_first_screen_answers_the_question_in_every_file(report_dir):
    # The answer before every detail: the Oracle's best max_lr per cycle with its judged
    # interval, SILO's, the verdict with P(inside) and the interval's width; "flat" words
    # where the interval spans most of the grid (cycle 1: [0.017, 0.17] of a 0.01-0.3 grid).
    summary = json.loads((report_dir / "summary.json").read_text())
    assert next(iter(summary)) == "answer"
    answer = summary["answer"]
    assert answer["headline"].startswith(
        "The Oracle's best max_lr: 0.03 at cycle 0 (0.0% sparsity), then 0.1 at cycles 1-2 (20.0%-36.0% sparsity). "
        "SILO's max_lr: 0.03 at cycle 0, rising to 0.0301 at cycle 2. SILO's max_lr was inside the Oracle's "
        "judged interval at 2 of 3 cycles, outside at 1, uncertain at 0. The judged intervals are a factor of "
        "3.2 to 10.0 wide in max_lr. At cycle(s) 1 the interval spans more than 50% of the grid: the landscape "
        "is flat there")
    verdicts = pd.read_csv(report_dir / "verdicts.csv")
    for c, v in zip(answer["cycles"], verdicts.to_dict("records"), strict=True):  # the analysis' own fields
        assert (c["oracle_max_lr"], c["judged_low"], c["judged_high"], c["p_inside"], c["verdict"]) == (
            v["oracle_max_lr"], v["judged_low"], v["judged_high"], v["p_inside"], v["verdict"])
    assert [round(c["width_steps"], 2) for c in answer["cycles"]] == [1.02, 2.03, 1.02]
    assert [round(c["width_factor"], 2) for c in answer["cycles"]] == [3.16, 10.0, 3.16]
    assert [c["flat"] for c in answer["cycles"]] == [False, True, False]
    md = (report_dir / "report.md").read_text()
    head = md[:md.index("## The verdict in detail")]
    assert f"**{answer['headline']}**" in head and "## The answer, cycle by cycle" in head
    assert "| 1 | 20.0% | 0.1 | [0.01732, 0.1732] | 0.03 | ✔ inside (1.00) | flat: 68% of the grid" in head
    page = (report_dir / "report.html").read_text()
    assert page.index('id="headline"') < page.index('id="answer"') < page.index('id="verdict"')


def test_the_end_of_a_run_says_how_many_runs_the_record_holds(tmp_path):
    # The live record has usually written every run before the end: that is not "0 new".
    import io

    out = tmp_path / NAME
    rows = fake_rows()
    first, again = io.StringIO(), io.StringIO()
    assert finish_study(out, fake_study(), rows[:10], stream=first) == 0
    assert finish_study(out, fake_study(), rows, stream=again) == 0
    url = f"sqlite:///{out / 'optuna.db'}"
    assert first.getvalue().splitlines()[0].startswith(f"record: 10 run(s) in {url}: 10 written now (Optuna")
    assert again.getvalue().splitlines()[0].startswith(
        f"record: {len(rows)} run(s) in {url}: {len(rows) - 10} written now, 10 as they finished (Optuna")
    assert finish_study(out, fake_study(), rows, stream=(third := io.StringIO())) == 0
    assert third.getvalue().splitlines()[0].startswith(
        f"record: all {len(rows)} run(s) already in {url} (written live as they finished, or by an earlier run)")
    assert "0 new" not in third.getvalue()


def test_a_report_is_rebuilt_from_the_storage_alone(tmp_path, tmp_path_factory, capsys):
    url = copy_template(tmp_path_factory, tmp_path / "elsewhere" / "optuna.db")
    results = tmp_path / "results" / NAME
    assert finish_study(results, fake_study(), fake_rows(), storage=url) == 0
    before = pd.read_csv(results / "verdicts.csv")
    summary_before = json.loads((results / "summary.json").read_text())
    shutil.rmtree(tmp_path / "results")

    new = tmp_path / "rebuilt"
    assert main(["report", "--storage", url, "--study", NAME, "--out", str(new)]) == 0
    assert f"report: {new / 'report.html'}" in capsys.readouterr().out
    after = pd.read_csv(new / "verdicts.csv")
    pd.testing.assert_frame_equal(after, before)
    assert after["silo_in_interval"].tolist() == [True, True, False]
    summary_after = json.loads((new / "summary.json").read_text())
    assert summary_after["verdict"] == summary_before["verdict"] and summary_after["gap"] == summary_before["gap"]
    assert (new / "report.html").stat().st_size > 0 and (new / "report.md").stat().st_size > 0


def test_report_dir_finds_the_folders_own_record(report_dir, tmp_path, capsys):
    assert json.loads((report_dir / "record.json").read_text())["storage"] is None  # the folder's optuna.db
    assert main(["report", str(report_dir), "--out", str(tmp_path)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "verdicts.csv"), pd.read_csv(report_dir / "verdicts.csv"))


def test_the_html_report_is_self_contained_and_the_markdown_links_its_figures(report_dir):
    page = (report_dir / "report.html").read_text()
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs)
    assert "<script" not in page and "<link" not in page and "url(" not in page and "@import" not in page
    assert 'id="verdicts"' in page and "inside in 2 of 3 cycles" not in page  # sentence reads naturally:
    assert "optimal interval in 2 and outside in 1" in page
    md = (report_dir / "report.md").read_text()
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert figures == ["landscape.png", "accuracy.png", "comparisons.png", "curves.png"]
    assert all((report_dir / f).is_file() for f in figures)
    for needle in ("## Verdict per cycle", "## Paired differences at the last cycle",
                   "| lr_rewinding − silo | 2 (36.0%) |", "## Compute per arm", "## Study file", "| git commit |",
                   "name: fake"):
        assert needle in md, needle


@pytest.mark.parametrize("arms", [["oracle", "lr_rewinding"], ["silo", "lr_rewinding"]])
def test_a_study_without_silo_or_without_oracle_still_gets_a_report(arms, tmp_path):
    study = fake_study()
    rows = [r for r in fake_rows(study) if r["arm"] in arms]
    attrs = {"study": "part", "arms": arms, "cycles": 3, "seeds": [0, 1], "grid": [0.01, 0.03, 0.1, 0.3],
             "tolerance": 0.005, "study_yaml": "name: part\n",
             "silo_max_lr": [study.schedule("silo").max_lr(q) for q in range(3)] if "silo" in arms else None}
    record = Record("part", "sqlite:///nowhere.db", attrs, rows_frame(rows), [], 0)
    a = report_from_record(record, tmp_path)
    verdicts = pd.read_csv(tmp_path / "verdicts.csv")
    page = (tmp_path / "report.html").read_text()
    if "silo" not in arms:
        assert verdicts["silo_in_interval"].isna().all() and verdicts["oracle_max_lr"].notna().all()
        assert "no silo arm" in a.summary["text"] and (tmp_path / "landscape.png").is_file()
    else:
        assert verdicts["interval_low"].isna().all() and verdicts["silo_test_acc"].notna().all()
        assert "no oracle arm" in a.summary["text"] and not (tmp_path / "landscape.png").exists()
        assert "No Oracle runs recorded" in page
    assert html.escape(a.summary["text"]) in page


def test_an_unknown_study_names_the_known_ones(report_dir, capsys):
    url = f"sqlite:///{report_dir / 'optuna.db'}"
    assert main(["report", "--storage", url, "--study", "nope"]) == 2
    line = one_error_line(capsys)
    assert "'nope'" in line and "studies there: fake" in line and url in line


@pytest.mark.parametrize("url, says", [
    ("postgresql://u:secret@127.0.0.1:1/x", "postgresql://u@127.0.0.1:1/x"),  # never the password
    ("sqlite:////nonexistent-dir-of-silo-oracle/optuna.db", "no such file"),
    ("not a url", "not a storage URL"),
])
def test_an_unreachable_or_invalid_storage_is_one_line_and_exit_2(url, says, tmp_path, capsys):
    t0 = time.perf_counter()
    assert main(["report", "--storage", url, "--study", NAME, "--out", str(tmp_path / "o")]) == 2
    assert time.perf_counter() - t0 < 20
    line = one_error_line(capsys)
    assert says in line and "secret" not in line
    assert not (tmp_path / "o").exists()


def test_a_file_that_is_not_an_optuna_storage_is_one_line_and_exit_2(tmp_path, capsys):
    junk = tmp_path / "junk.db"
    junk.write_text("not a database\n" * 100)
    assert main(["report", "--storage", f"sqlite:///{junk}", "--study", NAME]) == 2
    assert "file is not a database" in one_error_line(capsys)
    assert junk.read_text() == "not a database\n" * 100  # never written to
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert main(["report", "--storage", f"sqlite:///{empty}", "--study", NAME]) == 2
    assert "not an Optuna storage" in one_error_line(capsys)
    assert empty.stat().st_size == 0  # no tables were created in it


def test_a_folder_without_a_record_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no Optuna record here" in one_error_line(capsys)
    assert main(["report"]) == 2
    assert "--storage" in one_error_line(capsys)


def test_a_failed_record_keeps_results_csv_and_returns_1(tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "results.csv").write_text("arm,seed\n")
    code = finish_study(out, fake_study(), fake_rows(), storage="sqlite:////nonexistent-dir-of-silo-oracle/x.db")
    assert code == 1
    line = one_error_line(capsys)
    # Every row is counted as not recorded (none reached the storage), the cause is named, and
    # the line says what keeps the runs and how to record them.
    assert f"{len(fake_rows())} of {len(fake_rows())} runs are not recorded" in line, line
    assert "does not exist" in line and "results.csv and the run store keep them all" in line, line
    assert "rerun the same command" in line, line
    assert (out / "results.csv").read_text() == "arm,seed\n"
    # The live record had written every run: the line says the record is not final, not "0 of N".
    assert finish_study(out, fake_study(), fake_rows(), storage="sqlite:////nonexistent-dir-of-silo-oracle/x.db",
                        unrecorded=0) == 1
    line = one_error_line(capsys)
    assert "not recorded" not in line and f"holds all {len(fake_rows())} runs" in line, line
    assert "is not final" in line and "rerun the same command" in line, line


def test_the_dashboard_serves_the_record_on_localhost(report_dir, monkeypatch, capsys):
    import optuna_dashboard

    served = {}
    monkeypatch.setattr(optuna_dashboard, "run_server",
                        lambda storage, host, port: served.update(storage=storage, host=host, port=port))
    assert main(["dashboard", str(report_dir)]) == 0
    assert (served["host"], served["port"]) == ("127.0.0.1", 8080)
    assert served["storage"].url == f"sqlite:///{report_dir / 'optuna.db'}"
    assert "http://127.0.0.1:8080/" in capsys.readouterr().out

    url = f"sqlite:///{report_dir / 'optuna.db'}"
    assert main(["dashboard", "--storage", url, "--host", "0.0.0.0", "--port", "9000"]) == 0
    assert (served["host"], served["port"], served["storage"].url) == ("0.0.0.0", 9000, url)
    printed = capsys.readouterr()
    assert "http://0.0.0.0:9000/" in printed.out and printed.err.startswith("warning: bound to 0.0.0.0")


_CHECK = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const table = document.getElementById("verdicts");
  document.body.setAttribute("data-check", JSON.stringify({
    images: imgs.length,
    loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    verdict_rows: table ? table.tBodies[0].rows.length : -1,
    headers: table ? Array.from(table.tHead.rows[0].cells).slice(3, 7).map(c => c.textContent) : [],
    verdicts: table ? Array.from(table.tBodies[0].rows).map(r => [r.cells[5].className, r.cells[6].textContent]) : [],
    comparisons: Array.from(document.getElementById("comparisons").tBodies[0].rows).map(
      r => [r.cells[0].textContent, r.cells[6].textContent, r.cells[6].className]),
    answer: Array.from(document.getElementById("answer").tBodies[0].rows).map(
      r => Array.from(r.cells).map(c => c.textContent)),
    answer_classes: Array.from(document.getElementById("answer").tBodies[0].rows).map(r => r.cells[5].className),
    headline: document.getElementById("headline").textContent.slice(0, 60),
    // the first screen (1280 x 800): the headline and the whole answer table, above the details
    first_screen: document.getElementById("answer").getBoundingClientRect().bottom <= 800
      && document.getElementById("headline").getBoundingClientRect().top >= 0,
    answer_before_verdict: document.getElementById("answer").compareDocumentPosition(
      document.getElementById("verdict")) === Node.DOCUMENT_POSITION_FOLLOWING,
  }));
});
</script>"""


def _chromium(*args: str) -> str:
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
         "--no-first-run", "--disable-extensions", *args],
        capture_output=True, text=True, timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.integration  # starts headless Chromium
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed: apt-get install chromium")
def test_the_report_opens_in_a_browser_with_its_images_and_verdict_table(report_dir, tmp_path):
    page = (report_dir / "report.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", _CHECK + "</body>"))
    profile = f"--user-data-dir={tmp_path / 'profile'}"
    dom = _chromium(profile, "--window-size=1280,800", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    found = re.search(r'data-check="([^"]*)"', dom)
    assert found, "the check script did not run"
    check = json.loads(html.unescape(found.group(1)))
    assert check.pop("answer") == [
        ["0", "0.0%", "0.03", "[0.01732, 0.05477]", "0.03", "✔ inside (1.00)", "×3.2, 1.0 grid steps"],
        ["1", "20.0%", "0.1", "[0.01732, 0.1732]", "0.03", "✔ inside (1.00)",
         "flat: 68% of the grid (×10.0, 2.0 grid steps)"],
        ["2", "36.0%", "0.1", "[0.05477, 0.1732]", "0.0301", "✘ outside (0.00)", "×3.2, 1.0 grid steps"]]
    assert check.pop("answer_classes") == ["in", "in", "out"]
    assert check.pop("headline") == "The Oracle's best max_lr: 0.03 at cycle 0 (0.0% sparsity), t"
    assert check.pop("first_screen") is True and check.pop("answer_before_verdict") is True
    assert check == {"images": 4, "loaded": 4, "verdict_rows": 3,
                     "comparisons": [["lr_rewinding − silo", "worse", "neg"], ["silo − oracle", "worse", "neg"],
                                     ["lr_rewinding − oracle", "worse", "neg"]],
                     "headers": ["judged interval", "SILO max_lr", "verdict", "P(inside)"],
                     "verdicts": [["in", "1.00"], ["in", "1.00"], ["out", "0.00"]]}

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    _chromium(profile, "--window-size=1280,3600", f"--screenshot={shot}", (report_dir / "report.html").as_uri())
    assert shot.stat().st_size > 10_000
    first = ARTIFACTS / "report-first-screen.png"  # what a reader sees on opening it
    first.unlink(missing_ok=True)
    _chromium(profile, "--window-size=1280,800", f"--screenshot={first}", (report_dir / "report.html").as_uri())
    assert first.stat().st_size > 10_000


def test_learning_curves_are_recorded_as_intermediate_values_and_drawn_for_a_chosen_cycle(report_dir, tmp_path,
                                                                                           capsys):
    import optuna

    from oracle.report.build import analyse_record
    from oracle.report.plots import oracle_round_curves
    from oracle.store.record import load_record

    url = f"sqlite:///{report_dir / 'optuna.db'}"
    ostudy = optuna.load_study(study_name=f"{NAME}/oracle", storage=url)
    assert ostudy.metric_names == ["val_acc"]  # what optuna-dashboard names the value
    trial = next(t for t in ostudy.get_trials() if t.user_attrs["run_id"] == "oracle-1-1-0.1")
    val = trial.user_attrs["val_acc"]
    assert trial.intermediate_values == pytest.approx({1: val - 0.04, 3: val}, abs=1e-12)  # epoch 2: not measured

    record = load_record(url, NAME)
    assert record.curves["oracle-1-1-0.1"][1] == {"epoch": 2, "step": 66, "train_loss": pytest.approx(0.6),
                                                  "val_acc": None}
    a = analyse_record(record)
    mean = oracle_round_curves(a, record.curves, 1)
    assert sorted(mean) == [0.01, 0.03, 0.1, 0.3]
    both = [r["val_acc"] for r in fake_rows() if r["arm"] == "oracle" and r["cycle"] == 1 and r["max_lr"] == 0.1]
    assert [p["val_acc"] for p in mean[0.1]][::2] == pytest.approx([sum(both) / 2 - 0.04, sum(both) / 2])

    out = tmp_path / "c1"
    assert main(["report", str(report_dir), "--out", str(out), "--curves-cycle", "1"]) == 0
    assert (out / "curves.png").stat().st_size > 5_000
    capsys.readouterr()
    assert main(["report", str(report_dir), "--out", str(tmp_path / "bad"), "--curves-cycle", "7"]) == 2
    assert one_error_line(capsys) == "error: --curves-cycle 7: study fake has no such cycle (its cycles: 0-2)"
    assert not (tmp_path / "bad").exists()


def test_every_file_the_report_writes_respects_the_umask(tmp_path, tmp_path_factory):
    # The atomic writer's temporary file is private (0600); the files it leaves must get the
    # mode open() would give them, so colleagues on a shared file system can read a report.
    import os

    old = os.umask(0o022)
    try:
        out = reported_folder(tmp_path_factory, tmp_path / NAME)
    finally:
        os.umask(old)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in out.iterdir() if p.is_file() and p.name != "optuna.db"}
    assert set(REPORT_FILES) <= set(modes)
    assert set(modes.values()) == {"0o644"}, modes


def _fake_analysis(study=None):
    from oracle.report.build import analyse_record
    from oracle.store.record import study_attrs

    study = study or fake_study()
    return analyse_record(type("R", (), {"rows": rows_frame(fake_rows(study)), "attrs": study_attrs(study),
                                         "superseded": 0}))


def test_silos_marker_never_covers_a_cells_number():
    # SILO's max_lr 0.034 lies in the upper half of the winner's cell (0.03) at cycle 0, where
    # the number is written: it moves to the other half and aside.
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from oracle.report.landscape import landscape_figure

    a = _fake_analysis(fake_study(silo_offset=0.034))
    assert a.verdicts["silo_max_lr"].iloc[0] == pytest.approx(0.034)
    fig = landscape_figure(a)
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    numbers = [t for t in ax.texts if re.match(r"(★ )?\d+\.\d$", t.get_text())]
    assert any(t.get_text() == "★ 92.0" for t in numbers)
    markers = [line for line in ax.lines if line.get_zorder() == 8]  # SILO's verdict marks
    assert len(markers) == 3
    for t in numbers:
        box = t.get_window_extent(renderer)
        for m in markers:
            assert not box.overlaps(m.get_window_extent(renderer)), (t.get_text(), m.get_xydata())


def test_learning_curves_have_whole_epochs_and_every_figure_writes_max_lr_alike(monkeypatch):
    from oracle.report import landscape, plots, words

    a = _fake_analysis()
    curves = {r["run_id"]: r["curve"] for r in fake_rows()}
    fig = plots.curves_figure(a, curves, 1)
    for ax in fig.axes:  # val points at epochs 1 and 3 only: the ticks are still whole epochs
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    # One formatter for max_lr (oracle.report.words.lr, as in every table): the landscape's
    # grid and the curves' legend cannot round the same value two ways.
    monkeypatch.setattr(words, "lr", lambda v: f"<{v}>")
    grid = [0.01, 0.03, 0.1, 0.3]
    assert [t.get_text() for t in landscape.landscape_figure(a).axes[0].get_yticklabels()] == [f"<{v}>" for v in grid]
    legend = [t.get_text() for t in plots.curves_figure(a, curves, 1).axes[0].get_legend().get_texts()]
    assert legend == [f"max_lr <{v}>" + (" ★ winner" if v == 0.1 else "") for v in grid if v != 0.3] or legend == [
        f"max_lr <{v}>" + (" ★ winner" if v == 0.1 else "") for v in grid], legend
