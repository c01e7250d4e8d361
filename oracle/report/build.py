"""A study's report, built from its Optuna record alone.

    silo-oracle report DIR                                   # DIR's record, written into DIR
    silo-oracle report --storage URL --study NAME [--out D]  # from any reachable storage

writes verdicts.csv, arms.csv, cost.csv, comparisons.csv (oracle.judge.comparisons: each arm
against SILO and the Oracle, paired by seed), summary.json, report.html (self-contained),
report.md and the PNGs it references (landscape.png, accuracy.png, comparisons.png, and
curves.png: the Oracle round's learning curves at one cycle, `--curves-cycle Q`). When the folder holds a
calibration.json of the same study (`silo-oracle calibrate`), the landscape draws the
calibrated SILO beside the study's own and the report compares the two. `finish_study` is what
`silo-oracle run` calls at the end of a sweep: record the runs, then build the report.

Here the analysis (oracle.judge.analysis: tables and numbers) and the words (oracle.report.words) meet:
`analyse_record` is the analysis every report is built from, its summary carrying the verdict
in words as "text".
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from oracle.errors import OracleError
from oracle.judge.analysis import Analysis, tabulate
from oracle.judge.answer import answer_cycles
from oracle.judge.calibration_file import CALIBRATION_FILE, read_calibration
from oracle.report.notes import worded
from oracle.report.render import html_report, markdown_report
from oracle.report.words import headline, verdict_text
from oracle.store.provenance import environment
from oracle.store.record import Record, load_record, record_study
from oracle.store.settings import StudySettings
from oracle.store.storage import default_storage_url, redact, storage_error, write_pointer
from silo.atomic import write_atomic

REPORT_FILES = ("verdicts.csv", "arms.csv", "cost.csv", "comparisons.csv", "summary.json", "report.html", "report.md")
FIGURE_FILES = {"landscape": "landscape.png", "accuracy": "accuracy.png", "comparisons": "comparisons.png",
                "curves": "curves.png"}


@dataclass(frozen=True)
class Report:
    """A report written into `out`, and the analysis it shows."""

    out: Path
    analysis: Analysis

    @property
    def html(self) -> Path:
        return self.out / "report.html"

    @property
    def files(self) -> list[Path]:
        """Every file of the report in `out`: the tables, the pages and the figures drawn."""
        figures = [self.out / f for f in FIGURE_FILES.values() if (self.out / f).is_file()]
        return [self.out / f for f in REPORT_FILES] + figures


def report_from_storage(storage: str, study_name: str | None, out: str | os.PathLike) -> Analysis:
    """Read the record from `storage` (a URL), write every report file in `out`."""
    return report_from_record(load_record(storage, study_name), out)


def report_from_record(record: Record, out: str | os.PathLike, *, calibration_dir: str | os.PathLike | None = None,
                       curves_cycle: int | None = None) -> Analysis:
    """`calibration_dir`: where to look for calibration.json (default: `out`). `curves_cycle`:
    the cycle whose Oracle round's learning curves are drawn (default: the last judged one)."""
    # here: matplotlib only when figures are drawn
    from oracle.report.landscape import landscape_png
    from oracle.report.plots import accuracy_png, comparisons_png, curves_png

    a = analyse_record(record)
    curves_cycle = _curves_cycle(a, curves_cycle)  # before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_tables(a, out)
    calibration, curve = _calibration(a, Path(calibration_dir or out))
    images = {"landscape": landscape_png(a, curve), "accuracy": accuracy_png(a), "comparisons": comparisons_png(a),
              "curves": curves_png(a, record.curves, curves_cycle)}
    files: dict[str, str | None] = {}
    for name, png in images.items():
        path = out / FIGURE_FILES[name]
        if png is None:
            path.unlink(missing_ok=True)  # a stale figure must not outlive its data
            files[name] = None
        else:
            write_atomic(path, png)
            files[name] = path.name
    source = {
        "storage": record.storage,
        "optuna_studies": record.optuna_studies,
        "rebuild": f"silo-oracle report --storage {record.storage} --study {record.study}",
        "dashboard": f"silo-oracle dashboard --storage {record.storage}",
    }
    write_atomic(out / "report.md", markdown_report(a, files, source, calibration).encode("utf-8"))
    write_atomic(out / "report.html", html_report(a, images, source, calibration).encode("utf-8"))
    return a


def _curves_cycle(a: Analysis, cycle: int | None) -> int | None:
    """The cycle whose Oracle round's curves the report draws: the one asked for, else the
    last judged cycle; an asked-for cycle the study does not have is a one-line error."""
    cycles = [int(q) for q in a.verdicts["cycle"]]
    if cycle is None:
        judged = (a.summary.get("progress") or {}).get("judged_cycles") or []
        return int(judged[-1]) if judged else None
    if cycle not in cycles:
        have = f"{cycles[0]}-{cycles[-1]}" if cycles else "none"
        raise OracleError(f"--curves-cycle {cycle}: study {a.study} has no such cycle (its cycles: {have})")
    return cycle


def analysis_of(rows: pd.DataFrame | list[Mapping[str, Any]], attrs: StudySettings | Mapping[str, Any], *,
                superseded: int = 0) -> Analysis:
    """The judge's tables with its findings in words (oracle.report.notes.worded): the analysis
    every report, table file and summary.json is made of."""
    return worded(tabulate(rows, attrs, superseded=superseded))


def analyse_record(record: Record) -> Analysis:
    """The record's analysis with the verdict in words (oracle.report.words.verdict_text) in its
    summary as "text", where summary.json has always had it: just before "progress"; and what
    built the report (oracle.store.provenance.environment: versions, git commit) as
    summary["versions"]["report_built_with"], after "recorded_with". The answer comes first
    (summary["answer"]: the headline in words and oracle.judge.answer's numbers per cycle),
    as on the report's first screen."""
    a = analysis_of(record.rows, record.attrs, superseded=record.superseded)
    summary = dict(a.summary)
    summary["versions"] = {**summary["versions"], "report_built_with": environment()}
    progress = summary.pop("progress")
    cycles = answer_cycles(a.verdicts, summary.get("grid"))
    answer = {"headline": headline(summary, cycles), "cycles": cycles}
    return replace(a, summary={"answer": answer, **summary, "text": verdict_text(summary), "progress": progress})


def _calibration(a: Analysis, folder: Path) -> tuple[dict | None, dict[int, float] | None]:
    """The folder's calibration.json and its max_lr per cycle, if it is of this study; a
    calibration that cannot be used is said in the report, never a reason to fail it."""
    # here, not at the top: oracle.judge.calibrate imports torch (silo.schedules, seconds), which
    # `import oracle.report.build` (analyse_record, write_tables) does not need
    from oracle.judge.calibrate import calibrated_curve

    path = folder / CALIBRATION_FILE
    if not path.is_file():
        return None, None
    try:
        body = read_calibration(path)
        if body.get("study") != a.study:
            raise OracleError(f"{path}: is a calibration of study {body.get('study')!r}, not {a.study!r}")
        return body, calibrated_curve(body, a.verdicts["cycle"].tolist())
    except (OracleError, KeyError, TypeError, ValueError) as exc:
        a.messages.append(f"The calibration was not drawn: {_one_line(exc)}")
        return None, None


def finish_study(out, study, rows: Iterable[Mapping], *, storage: str | None = None,
                 stream: TextIO | None = None, unrecorded: int | None = None) -> int:
    """Record a finished sweep's rows and write its report; 0, or 1 with one `error:` line.

    `unrecorded`: how many of `rows` no earlier write (the live record) holds; None: all.
    Never raises (but for KeyboardInterrupt): results.csv, already written, is never lost."""
    stream = stream or sys.stdout
    out = Path(out)
    url = storage or default_storage_url(out)
    rows = list(rows)
    try:
        out.mkdir(parents=True, exist_ok=True)
        result = record_study(study, rows, url)
        write_pointer(out, study.name, url, result.optuna_studies)
    except Exception as exc:  # any failure: one line, results.csv and the run store kept
        missing = len(rows) if unrecorded is None else unrecorded
        if missing:
            said = (f"{missing} of {len(rows)} runs are not recorded in {redact(url)} ({storage_error(exc)}); "
                    f"results.csv and the run store keep them all: rerun the same command to record them")
        else:  # the live record wrote every run; the final write (settings, winners) did not land
            said = (f"the record in {redact(url)} is not final ({storage_error(exc)}): it holds all {len(rows)} "
                    f"runs but not the study's settings and winners; rerun the same command to finish it")
        print(f"error: {said} (finished runs are reused, none is trained again)", file=sys.stderr, flush=True)
        return 1
    print(f"record: {record_words(result, len(rows))} "
          f"(Optuna studies {study.name}/<arm>: {', '.join(n.split('/', 1)[1] for n in result.optuna_studies)})",
          file=stream, flush=True)
    try:
        a = report_from_storage(url, study.name, out)
    except Exception as exc:
        print(f"error: the report could not be written: {_one_line(exc)}; the record is complete: "
              f"retry with `silo-oracle report {out}`", file=sys.stderr, flush=True)
        return 1
    print(f"report: {out / 'report.html'}", file=stream, flush=True)
    print(a.summary["text"], file=stream, flush=True)
    return 0


def record_words(result, runs: int) -> str:
    """What the end of a run wrote into the record, said of the runs it holds: the live record
    (oracle.sweep.live) has usually written every run already, which is not "0 new"."""
    if result.added == 0:
        return f"all {runs} run(s) already in {result.storage} (written live as they finished, or by an earlier run)"
    before = runs - result.added
    return (f"{runs} run(s) in {result.storage}: {result.added} written now"
            + (f", {before} as they finished" if before > 0 else ""))


def _one_line(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, OracleError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def write_tables(analysis: Analysis, out: str | os.PathLike) -> list[Path]:
    """verdicts.csv, arms.csv, cost.csv and summary.json in `out` (each written atomically).
    `analysis`: as `analyse_record` gives it, so that summary.json holds the verdict's text."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, df in (("verdicts.csv", analysis.verdicts), ("arms.csv", analysis.arms), ("cost.csv", analysis.cost),
                     ("comparisons.csv", analysis.comparisons)):
        written.append(write_atomic(out / name, df.to_csv(index=False)))
    written.append(write_atomic(out / "summary.json", json.dumps(analysis.summary, indent=2, allow_nan=False) + "\n"))
    return written
