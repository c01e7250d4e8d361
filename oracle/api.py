"""silo-oracle from Python: what the `silo-oracle` command does, one function a step.

    import oracle

    study = oracle.load_study("studies/smoke.yaml")        # or StudyError, one line a problem
    swept = oracle.run_study(study, out="results/smoke")  # the sweep (rerun it to resume): a SweepSummary
    record = oracle.read_record("results/smoke")          # the Optuna record: rows and settings
    analysis = oracle.analyse(record)                     # tables and numbers, the verdict in words
    oracle.build_report(record, "results/smoke")          # report.html, report.md, the CSVs and PNGs
    side = oracle.compare(["results/smoke", "results/other"], out="cmp")   # studies side by side
    fitted = oracle.calibrate(record, holdout_seeds=1)    # SILO's settings fitted to the Oracle

`oracle/__init__.py` re-exports these names lazily and every function imports what it needs
when it is called, so `import oracle` loads neither ray, optuna, torch nor pandas. The CLI
(oracle.cli) is these functions with arguments parsed and results printed: they return
result objects and raise the one-line errors (oracle.errors.OracleError, StudyError); a
file that cannot be written is such an error too, the same in every function.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from oracle.errors import writing

if TYPE_CHECKING:
    from oracle.judge.analysis import Analysis
    from oracle.judge.calibrate import Calibration
    from oracle.report.build import Report
    from oracle.report.compare import Comparison
    from oracle.report.dashboard import Dashboard
    from oracle.store.record import Record
    from oracle.study import Study
    from oracle.sweep.summary import SweepSummary

__all__ = ["analyse", "build_report", "calibrate", "compare", "dashboard", "load_study", "read_record",
           "run_study", "status", "validate"]


def load_study(path: str | os.PathLike) -> Study:
    """Read and validate a study file (oracle.study.load_study itself, imported when called):
    StudyError lists every problem, one line each."""
    from oracle.study import load_study as load

    return load(path)


def validate(study: Study | str | os.PathLike) -> Study:
    """A study (or its file, read and validated by load_study) whose dataset's files are
    present (not loaded): what `silo-oracle validate` and `run` check before anything is
    written. A missing dataset is one OracleError saying where the files are expected."""
    from oracle.study.probe import check_data_present

    if isinstance(study, (str, os.PathLike)):
        study = load_study(study)
    check_data_present(study.task)
    return study


def run_study(study: Study | str | os.PathLike, *, out: str | os.PathLike | None = None,
              address: str | None = None, max_concurrent: int | None = None, storage: str | None = None,
              verbose: bool = False, quiet: bool = False, record_every_s: float = 15.0,
              stream: TextIO | None = None) -> SweepSummary:
    """Sweep a study (a Study, or the path of its file) into `out` (default results/<name>),
    as `silo-oracle run` does: train what the run store lacks, record it, write the report.

    `address`: a Ray cluster (default: a local Ray on 127.0.0.1; inside a Ray session the
    caller already holds, that one). `max_concurrent`: most trials at once (default: the
    study's, else what the cluster fits). `storage`: an Optuna storage URL (default: a file in
    `out`). `verbose`: Ray Tune's own output. `record_every_s`: seconds between live writes of
    finished runs to the record. The progress lines go to `stream` (default stdout);
    `quiet=True` drops the progress bar and, with no `stream`, prints nothing (errors still
    go to stderr as one line)."""
    from oracle.sweep.driver import run_sweep

    if isinstance(study, (str, os.PathLike)):
        study = load_study(study)
    options: dict[str, Any] = dict(out=out, address=address, max_concurrent=max_concurrent, storage=storage,
                                   verbose=verbose, quiet=quiet, record_every_s=record_every_s)
    if quiet and stream is None:
        with open(os.devnull, "w") as nowhere:
            return run_sweep(study, stream=nowhere, **options)
    return run_sweep(study, stream=stream, **options)


def read_record(folder: str | os.PathLike | None = None, *, storage: str | None = None,
                study: str | None = None) -> Record:
    """A study's Optuna record, from its output folder or from `storage` (a URL) and the
    `study` name in it, as `silo-oracle report` finds it."""
    from oracle.store.record import load_record
    from oracle.store.storage import locate

    url, name = locate(None if folder is None else str(folder), storage, study)
    return load_record(url, name)


def analyse(record: Record) -> Analysis:
    """The record's analysis: verdicts, arms, cost and comparisons as tables, the summary with
    the verdict in words (summary["text"]), as every report is built from."""
    from oracle.report.build import analyse_record

    return analyse_record(record)


def build_report(record: Record, out: str | os.PathLike, *, curves_cycle: int | None = None,
                 calibration_dir: str | os.PathLike | None = None) -> Report:
    """Write the record's report files into `out`: the report, with the analysis it shows.
    `calibration_dir`: where a calibration.json is looked for (default `out`)."""
    from oracle.report.build import Report, report_from_record

    with writing("the report", out):
        analysis = report_from_record(record, out, calibration_dir=calibration_dir, curves_cycle=curves_cycle)
    return Report(Path(out), analysis)


def compare(folders: Sequence[str | os.PathLike] = (), *, storages: Sequence[str] = (),
            studies: Sequence[str] = (), out: str | os.PathLike | None = None) -> Comparison:
    """Studies side by side (`silo-oracle compare`): output folders, and/or (storage URL, study
    name) pairs. The table, one row a study, and its notes; with `out`, compare.html, .md and
    .csv written there."""
    from oracle.report.compare import Comparison, compare_table, read_sources, render_table, write_compare

    df, baselines, notes = compare_table(read_sources([str(f) for f in folders], list(storages), list(studies)))
    files = [] if out is None else write_compare(df, render_table(df, baselines, notes), out)
    return Comparison(df, notes, files)


def calibrate(record: Record, *, holdout_seeds: int = 0, out: str | os.PathLike | None = None) -> Calibration:
    """SILO's settings fitted to the record's Oracle (`silo-oracle calibrate`); with `out`,
    calibration.json and calibrated_silo.yaml written there."""
    from oracle.judge.calibrate import calibrate_rows
    from oracle.judge.calibration_file import write_calibration

    c = calibrate_rows(record.rows, record.attrs, holdout_seeds=holdout_seeds)
    if out is not None:
        write_calibration(c, Path(out), source={"storage": record.storage, "study": record.study})
    return c


def status(folder: str | os.PathLike | None = None, *, storage: str | None = None,
           study: str | None = None) -> dict:
    """Where a study stands (`silo-oracle status`), running or not: runs done and planned per
    arm, failures, the Oracle's cycle, elapsed time and ETA, whether a driver is alive."""
    from oracle.report.status import rows_and_settings, study_status

    where = None if folder is None else str(folder)
    return study_status(*rows_and_settings(where, storage, study), folder=where)


def dashboard(folder: str | os.PathLike | None = None, *, storage: str | None = None, host: str = "127.0.0.1",
              port: int = 8080) -> Dashboard:
    """The study's record opened for optuna-dashboard on host:port; `.serve()` serves it
    until Ctrl-C (`silo-oracle dashboard`)."""
    from oracle.report.dashboard import open_dashboard
    from oracle.store.storage import locate

    url, _ = locate(None if folder is None else str(folder), storage, None)
    return open_dashboard(url, host=host, port=port)
