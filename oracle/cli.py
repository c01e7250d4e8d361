"""The `silo-oracle` command line.

    silo-oracle validate studies/quickstart.yaml      # print the resolved study
    silo-oracle run studies/quickstart.yaml           # sweep it (rerun the same to resume)
    silo-oracle report results/quickstart             # verdicts.csv, summary.json, report.html/.md
    silo-oracle report --storage URL --study NAME     # the same from any Optuna storage
    silo-oracle compare results/quickstart results/smoke --out cmp   # studies side by side
    silo-oracle status results/quickstart             # runs done / planned, ETA, driver alive
    silo-oracle calibrate results/quickstart --holdout-seeds 1   # SILO fitted to the Oracle
    silo-oracle dashboard results/quickstart          # optuna-dashboard on 127.0.0.1

Exit codes: 0 done, 2 bad input (each problem on its own `error: ` line, nothing written),
130 interrupted (Ctrl-C), 143 terminated (SIGTERM: a preempted job), 1 a sweep whose record
or report was not written. Each handler takes the parsed arguments to oracle.api (imported
lazily, so `validate` needs neither ray nor optuna and a bad study file is reported before the
heavy imports), prints what it returns and maps it to the exit code.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from oracle.errors import OracleError, StudyError

if TYPE_CHECKING:
    from oracle.study import Study


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number, got {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"must be a port number 1..65535, got {value}")
    return value


def _record_source(p: argparse.ArgumentParser, *, dir_help: str = "a study's output folder",
                   dir_required: bool = False, study: bool = True) -> None:
    """DIR, --storage and --study: where a command reading a study's record finds it."""
    p.add_argument("dir", metavar="DIR", nargs=None if dir_required else "?", help=dir_help)
    p.add_argument("--storage", metavar="URL", help="Optuna storage URL to read instead of DIR's")
    if study:
        p.add_argument("--study", metavar="NAME", help="study name inside --storage")


def _version() -> str:
    """The installed distribution's version (pyproject.toml's, through the package metadata)."""
    from importlib import metadata

    try:
        return metadata.version("silo-oracle")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="silo-oracle",
        description="Compare SILO's max_lr per pruning cycle with the Oracle's grid search.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check a study file and print it resolved")
    p.add_argument("file", metavar="FILE", help="study YAML file")
    p.set_defaults(handler=_validate)

    p = sub.add_parser("run", help="run (or resume) a study's sweep")
    p.add_argument("file", metavar="FILE", help="study YAML file")
    p.add_argument("--out", metavar="DIR", help="output folder (default: results/<study name>)")
    p.add_argument("--address", metavar="ADDR",
                   help="Ray cluster address (default: start a local Ray on 127.0.0.1)")
    p.add_argument("--max-concurrent", metavar="N", type=_positive_int,
                   help="most trials at once (overrides the study's resources.max_concurrent)")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage URL, e.g. postgresql://... (default: a file in the output folder)")
    p.add_argument("--verbose", action="store_true", help="show Ray Tune's progress output")
    p.add_argument("--quiet", action="store_true", help="no progress bar (or line a minute)")
    p.add_argument("--record-every", metavar="S", type=_positive_int, default=15,
                   help="seconds between live writes of finished runs to the Optuna record (default 15)")
    p.set_defaults(handler=_run)

    p = sub.add_parser("report", help="analyse a study's runs and write its report")
    _record_source(p)
    p.add_argument("--out", metavar="DIR", help="where to write the report (default: DIR)")
    p.add_argument("--curves-cycle", metavar="Q", type=int,
                   help="draw the learning curves of the Oracle's round at cycle Q (default: the last judged)")
    p.set_defaults(handler=_report)

    p = sub.add_parser("compare", help="studies side by side: SILO against its baselines and the Oracle")
    p.add_argument("dirs", metavar="DIR", nargs="*", help="study output folders")
    p.add_argument("--storage", metavar="URL", action="append", help="an Optuna storage (pair each with --study)")
    p.add_argument("--study", metavar="NAME", action="append", help="a study inside the --storage of the same rank")
    p.add_argument("--out", metavar="DIR", help="where to write compare.html, .md, .csv (default: ./compare)")
    p.set_defaults(handler=_compare)

    p = sub.add_parser("status", help="where a study stands: runs done, failures, ETA, driver alive")
    _record_source(p)
    p.add_argument("--json", action="store_true", help="the same as JSON, for scripts")
    p.set_defaults(handler=_status)

    p = sub.add_parser("calibrate", help="fit SILO's settings to a study's Oracle (calibration.json)")
    _record_source(p, dir_help="a study's output folder (calibration.json is written there)", dir_required=True)
    # A plain int: a negative N is then told apart from a typo by calibrate's own message.
    p.add_argument("--holdout-seeds", metavar="N", type=int, default=0,
                   help="fit on all but the last N seeds, judge the fit on those N alone (default 0)")
    p.set_defaults(handler=_calibrate)

    p = sub.add_parser("dashboard", help="browse a study's Optuna record in optuna-dashboard")
    _record_source(p, study=False)
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=8080, help="port (default 8080)")
    p.set_defaults(handler=_dashboard)
    return parser


def _validate(args: argparse.Namespace) -> int:
    from oracle import api

    study = api.load_study(args.file)
    _warn_changes(study)
    api.validate(study)  # the dataset's files there (not loaded): what `run` checks first
    sys.stdout.write(study.resolved_yaml())
    if study.own_code is not None:  # what the driver's build of the model found, as YAML comments
        from oracle.sweep.execute import round_mode_line

        lines = study.own_code.lines() + [round_mode_line(study)]
        sys.stdout.write("".join(f"# {line}\n" for line in lines))
    return 0


def _warn_changes(study: Study) -> None:
    """A setting the study gives whose meaning changed: one `warning:` line each, on stderr
    (the study still runs; the report repeats it)."""
    for line in study.analysis.changes():
        print(f"warning: {line}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    from oracle import api
    from oracle.sweep.preempt import TERMINATED_EXIT

    study = api.load_study(args.file)  # before anything is imported or written
    _warn_changes(study)
    swept = api.run_study(study, out=args.out, address=args.address, max_concurrent=args.max_concurrent,
                          storage=args.storage, verbose=args.verbose, quiet=args.quiet,
                          record_every_s=args.record_every, stream=sys.stdout)
    # The sweep printed its own lines (and an `error:` line when the record or report failed).
    return {"done": 0, "unfinished": 1, "interrupted": 130, "terminated": TERMINATED_EXIT}[swept.outcome]


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from oracle import api
    from oracle.report.build import REPORT_FILES

    record = api.read_record(args.dir, storage=args.storage, study=args.study)
    out = Path(args.out or args.dir or Path("results") / record.study)
    report = api.build_report(record, out, calibration_dir=args.dir, curves_cycle=args.curves_cycle)
    print(f"report: {report.html} (also {', '.join(f for f in REPORT_FILES if f != report.html.name)})")
    print(report.analysis.summary["text"])
    return 0


def _compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from oracle import api

    out = Path(args.out or "compare")
    side = api.compare(args.dirs or [], storages=args.storage or [], studies=args.study or [], out=out)
    print(f"compare: {out / 'compare.html'} (also compare.md, compare.csv): {len(side.table)} studies")
    for note in side.notes:
        print(note)
    return 0


def _status(args: argparse.Namespace) -> int:
    import json

    from oracle import api
    from oracle.report.status import render

    s = api.status(args.dir, storage=args.storage, study=args.study)
    print(json.dumps(s, indent=2) if args.json else render(s))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from oracle import api

    record = api.read_record(args.dir, storage=args.storage, study=args.study)
    print(api.calibrate(record, holdout_seeds=args.holdout_seeds, out=args.dir).line())
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from oracle import api

    board = api.dashboard(args.dir, storage=args.storage, host=args.host, port=args.port)
    print(f"optuna-dashboard on {board.shown}: {board.url}  (Ctrl-C to stop)", flush=True)
    if not board.local:
        print(f"warning: bound to {args.host}: anyone who can reach this machine can read the record",
              file=sys.stderr, flush=True)
    board.serve()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (never raises for a user's mistake)."""
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except StudyError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except OracleError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (oracle.sweep.preempt) outside the sweep's own handling
        from oracle.sweep.preempt import stopped_by

        said, code = stopped_by(exc)
        print(f"{said}: rerun the same command to finish", file=sys.stderr)
        return code


def run() -> None:
    """Console-script entry point (pyproject.toml): exit with main()'s code."""
    sys.exit(main())


if __name__ == "__main__":
    run()
