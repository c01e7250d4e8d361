"""silo-oracle from Python: what the `silo-oracle` command does, one function a step.

    import oracle

    study = oracle.load_study("studies/smoke.yaml")        # or StudyError, one line a problem
    oracle.run_study(study, out="results/smoke")          # the sweep (rerun it to resume): 0 when done
    record = oracle.read_record("results/smoke")          # the Optuna record: rows and settings
    analysis = oracle.analyse(record)                     # tables and numbers, the verdict in words
    oracle.build_report(record, "results/smoke")          # report.html, report.md, the CSVs and PNGs
    table = oracle.compare(["results/smoke", "results/other"], out="cmp")   # studies side by side
    fitted = oracle.calibrate(record, holdout_seeds=1)    # SILO's settings fitted to the Oracle

`oracle/__init__.py` re-exports these names lazily and every function imports what it needs
when it is called, so `import oracle` loads neither ray, optuna, torch nor pandas. The
functions are the CLI's steps, with the same checks and the same one-line errors
(oracle.errors.OracleError, StudyError), returned instead of printed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from oracle.judge.analysis import Analysis
    from oracle.judge.calibrate import Calibration
    from oracle.store.record import Record
    from oracle.study import Study

__all__ = ["analyse", "build_report", "calibrate", "compare", "load_study", "read_record", "run_study"]


def load_study(path: str | os.PathLike) -> Study:
    """Read and validate a study file (`silo-oracle validate`)."""
    from oracle.study import load_study as load

    return load(path)


def run_study(study: Study | str | os.PathLike, *, out: str | os.PathLike | None = None, **options) -> int:
    """Sweep a study (a Study, or the path of its file) into `out` (default results/<name>),
    as `silo-oracle run` does: train what the run store lacks, record it, write the report.
    Returns the exit code (0 done). `options`: those of oracle.sweep.driver.run_study
    (address, max_concurrent, storage, verbose, quiet, stream, ...); `quiet=True` prints
    nothing (errors still go to stderr as one line), unless a `stream` is given for the
    lines. Inside a Ray session the caller already holds, the sweep uses it."""
    from oracle.sweep.driver import run_study as run

    if not hasattr(study, "arm_names"):
        study = load_study(study)
    if options.get("quiet") and options.get("stream") is None:
        with open(os.devnull, "w") as nowhere:
            return run(study, out=out, **{**options, "stream": nowhere})
    return run(study, out=out, **options)


def read_record(folder: str | os.PathLike | None = None, *, storage: str | None = None,
                study: str | None = None) -> Record:
    """A study's Optuna record, from its output folder or from `storage` (a URL) and the
    `study` name in it, as `silo-oracle report` finds it."""
    from oracle.store.record import read_record as read
    from oracle.store.storage import locate

    url, name = locate(None if folder is None else str(folder), storage, study)
    return read(url, name)


def analyse(record: Record) -> Analysis:
    """The record's analysis: verdicts, arms, cost and comparisons as tables, the summary with
    the verdict in words (summary["text"]), as every report is built from."""
    from oracle.report.build import analyse_record

    return analyse_record(record)


def build_report(record: Record, out: str | os.PathLike, *, curves_cycle: int | None = None,
                 calibration_dir: str | os.PathLike | None = None) -> Analysis:
    """Write the record's report files into `out` and return the analysis they show.
    `calibration_dir`: where a calibration.json is looked for (default `out`)."""
    from oracle.report.build import report_from_record

    return report_from_record(record, out, calibration_dir=calibration_dir, curves_cycle=curves_cycle)


def compare(folders: Sequence[str | os.PathLike] = (), *, storages: Sequence[str] = (),
            studies: Sequence[str] = (), out: str | os.PathLike | None = None) -> pd.DataFrame:
    """Studies side by side (`silo-oracle compare`): output folders, and/or (storage URL, study
    name) pairs. The table, one row a study; with `out`, compare.html, .md and .csv there too."""
    from oracle.report.compare import compare_table, read_sources, render_table, write_compare

    df, baselines, notes = compare_table(read_sources([str(f) for f in folders], list(storages), list(studies)))
    if out is not None:
        write_compare(df, render_table(df, baselines, notes), out)
    return df


def calibrate(record: Record, *, holdout_seeds: int = 0, out: str | os.PathLike | None = None) -> Calibration:
    """SILO's settings fitted to the record's Oracle (`silo-oracle calibrate`); with `out`,
    calibration.json and calibrated_silo.yaml written there."""
    from oracle.judge.calibrate import calibrate as fit
    from oracle.judge.calibrate import write_calibration

    c = fit(record.rows, record.attrs, holdout_seeds=holdout_seeds)
    if out is not None:
        write_calibration(c, Path(out), source={"storage": record.storage, "study": record.study})
    return c
