"""`silo-oracle run`: one study as one Ray Tune run, on a local or a remote Ray cluster."""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from oracle.errors import OracleError
from oracle.store.lock import DriverLock
from oracle.sweep.preempt import TERMINATED_EXIT, SigtermGuard, stopped_by
from oracle.sweep.summary import Outcome, SweepSummary
from silo.atomic import write_atomic
from silo.status import RunStatus

if TYPE_CHECKING:
    from ray import tune

    from oracle.study import Study
    from oracle.study.sections import Resources
    from oracle.sweep.searcher import StudySearcher

LOCALHOST = "127.0.0.1"


@contextmanager
def ray_session(address: str | None, verbose: bool, runtime_env: dict | None = None):
    """Connect to `address`, or start a local Ray bound to 127.0.0.1; stop only what we started.
    `runtime_env` (the study's `code:`, oracle.study.owncode) goes to every worker of the job."""
    import ray

    if ray.is_initialized():  # a caller (a test, a notebook) already holds a session
        yield
        return
    quiet: dict[str, Any] = dict(  # ray.init's keywords, of several types
        include_dashboard=False,
        logging_level=logging.INFO if verbose else logging.ERROR,
        log_to_driver=verbose,
        **({"runtime_env": runtime_env} if runtime_env else {}),
    )
    if address:
        try:
            ray.init(address=address, **quiet)
        except ConnectionError as exc:  # the cluster went away after prepare_cluster's check
            raise OracleError(f"--address {address}: {exc}") from None
    else:
        # "local" always starts a fresh Ray of our own: a bare init() would join the latest
        # cluster Ray recorded (a `ray start` left running, or dead), never what we want.
        ray.init(address="local", _node_ip_address=LOCALHOST, **quiet)
    try:
        yield
    finally:
        ray.shutdown()


# Ray rewrites a loopback address to the machine's outward IP when a driver connects, which
# fails against a cluster bound to 127.0.0.1. Ray's switch for loopback-only clusters is this
# variable, read once when ray is first imported.
LOOPBACK_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def keep_ray_on_loopback(address: str | None) -> None:
    """Before ray is imported: a local (None) or 127.0.0.1 cluster stays on loopback."""
    import ipaddress

    if address:
        host = address.rsplit(":", 1)[0].strip("[]")
        try:
            local = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            local = False
        if not local:
            return
    if "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_ONLY_ENV, "0")


def default_out(study: Study) -> Path:
    return Path("results") / study.name


def run_sweep(
    study: Study,
    *,
    out: str | os.PathLike | None = None,
    address: str | None = None,
    max_concurrent: int | None = None,
    storage: str | None = None,
    verbose: bool = False,
    stream: TextIO | None = None,
    max_failures: int = 2,
    reuse_actors: bool = True,
    finish: bool = True,
    quiet: bool = False,
    record_every_s: float = 15.0,
) -> SweepSummary:
    """Run every arm of `study`; return what it did (oracle.sweep.summary). Bad input, found
    before anything is written, raises OracleError.

    `finish=False` skips the Optuna record and the report (benchmarks time the sweep alone).
    `quiet` drops the progress bar (or the line a minute), not the per-cycle lines.
    """
    keep_ray_on_loopback(address)
    if address:
        # Token mode and one call to the cluster, before anything is written: an address
        # where nothing answers, or a rejected token, is one line and exit 2.
        from oracle.sweep.cluster import prepare_cluster

        prepare_cluster(address)
    stream = stream or sys.stdout
    from oracle.study.probe import check_data_present

    check_data_present(study.task)  # a missing dataset: one line, before anything runs
    if storage:
        # A storage that cannot be reached fails now (exit 2), not after hours of training.
        from oracle.store.storage import open_storage

        open_storage(storage, must_exist=False)
    out = Path(out or default_out(study)).resolve()
    env = _runtime_env(study, out)  # a plain `code:` folder too large is refused here (exit 2)
    out.mkdir(parents=True, exist_ok=True)
    from oracle.store.plan import write_plan
    from oracle.store.record import study_attrs

    plan = study_attrs(study)  # what `status` reads the moment the lock is held (oracle.store.plan)
    # Before anything is written: a second driver on the same folder stops here (exit 2).
    # SIGTERM (preemption) from here on raises Terminated, which ends the sweep as Ctrl-C does.
    with SigtermGuard() as guard, DriverLock(out):
        write_plan(out, plan)
        return _sweep(study, out, env, address=address, max_concurrent=max_concurrent, storage=storage,
                      verbose=verbose, stream=stream, max_failures=max_failures,
                      reuse_actors=reuse_actors, finish=finish, quiet=quiet, record_every_s=record_every_s,
                      guard=guard)


def _runtime_env(study: Study, out: Path) -> dict | None:
    from oracle.study.owncode import CodePathError, runtime_env

    try:
        return runtime_env(study.code, out)
    except CodePathError as exc:
        raise OracleError(f"code[{exc.index}]: {exc.message}") from None


def _sweep(study: Study, out: Path, env: dict | None, *, address: str | None, max_concurrent: int | None,
           storage: str | None, verbose: bool, stream: TextIO, max_failures: int, reuse_actors: bool, finish: bool,
           quiet: bool, record_every_s: float, guard: SigtermGuard) -> SweepSummary:
    from oracle.store.storage import default_storage_url
    from oracle.sweep.ledger import Ledger
    from oracle.sweep.live import LiveRecord, Progress
    from oracle.sweep.searcher import RetryWatch, StudySearcher

    write_atomic(out / "study.yaml", study.resolved_yaml())
    ledger = Ledger(study, stream=stream)
    live = (LiveRecord(study, ledger, storage or default_storage_url(out), out, every_s=record_every_s,
                       stream=stream) if finish else None)
    # The ledger first: the progress bar and the live record read its rows.
    callbacks = [ledger, Progress(study, ledger, stream=stream, quiet=quiet)] + ([live] if live else [])
    ledger.print(
        f"study {study.name}: {len(study.arm_names())} arms x {len(study.seeds)} seeds x "
        f"{study.cycles} cycles, oracle grid of {len(study.grid)} -> {out}"
    )
    t0 = time.perf_counter()
    interrupted: KeyboardInterrupt | None = None
    if study.own_code is not None:
        ledger.print(study.own_code.summary())
    with ray_session(address, verbose, env):
        guard.rearm()  # ray.init replaced the SIGTERM handler with Ray's, which aborts
        limit = max_concurrent or study.resources.max_concurrent or _slots(study.resources)
        ledger.print(f"ray: {_cluster_size()}: {limit} trial(s) at once")
        searcher = StudySearcher(study, store=str(out / "runs"), threads=max(1, int(study.resources.cpu)),
                                 on_round_closed=ledger.round_closed)
        tuner = _tuner(study, out, searcher, callbacks + [RetryWatch(searcher)], limit=limit, max_failures=max_failures,
                       reuse_actors=reuse_actors, verbose=verbose)
        try:
            with _tune_environment(verbose), searcher.handoff.beating():
                tuner.fit()
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM as Terminated
            interrupted = exc
        finally:
            ledger.write_csv(out / "results.csv")
            searcher.handoff.discard()
    elapsed = time.perf_counter() - t0
    recording = (f", live record {live.spent_s:.1f}s in {live.flushes} writes"
                 + (f" ({live.failures} refused: the storage did not answer)" if live.failures else "")
                 if live else "")
    ledger.print(
        f"done in {elapsed:.0f}s: trained: {ledger.count('trained')}, "
        f"reused: {ledger.count('reused')}, failed: {ledger.count(RunStatus.FAILED)}{recording}"
    )
    ledger.print(f"results: {out / 'results.csv'}")
    # The Optuna record and the report; on failure one `error:` line and exit code 1, and
    # results.csv (written above) is kept. finish_study never raises.
    def summary(outcome: Outcome, report: Path | None = None) -> SweepSummary:
        return SweepSummary(study.name, out, outcome, trained=ledger.count("trained"), reused=ledger.count("reused"),
                            failed=ledger.count("failed"), report=report)

    if interrupted is not None:  # no record nor report of half a sweep: the rerun writes both
        said, code = stopped_by(interrupted, guard)
        ledger.print(f"{said}: rerun the same command to finish; finished runs are kept")
        return summary("terminated" if code == TERMINATED_EXIT else "interrupted")
    from oracle.report.build import finish_study

    if live is None:  # finish=False: no record, no report
        return summary("done")
    rows = ledger.rows
    if finish_study(out, study, rows, storage=storage, stream=stream, unrecorded=live.unrecorded(rows)) != 0:
        return summary("unfinished")
    return summary("done", out / "report.html")


def _tuner(study: Study, out: Path, searcher: StudySearcher, callbacks: list, *, limit: int, max_failures: int,
           reuse_actors: bool, verbose: bool) -> tune.Tuner:
    """The study's one Ray Tune run: the searcher's trials on RunTrainable, in a live Ray session."""
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from oracle.sweep.trainable import RunTrainable

    res = study.resources
    return tune.Tuner(
        tune.with_resources(RunTrainable, {"cpu": res.cpu, "gpu": res.gpu}),
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=-1, max_concurrent_trials=limit, reuse_actors=reuse_actors,
        ),
        run_config=tune.RunConfig(
            name=f"{study.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(out / "ray"),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            # Chain trials ask for a checkpoint after each cycle (should_checkpoint);
            # a one-run Oracle trial has nothing to resume, so it writes none.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            # result.json per trial only: the CSV and TensorBoard loggers cost the driver
            # time per result and nobody reads them (results.csv is what is kept).
            callbacks=[JsonLoggerCallback(), *callbacks],
            verbose=2 if verbose else 0,
        ),
    )


def _cluster_size() -> str:
    """The connected cluster in a few words, so a driver that sized its concurrency before a
    node joined says so at once."""
    import ray

    total = ray.cluster_resources()
    nodes = sum(bool(n.get("Alive")) for n in ray.nodes())
    return f"{nodes} node(s), {total.get('CPU', 0):g} CPU, {total.get('GPU', 0):g} GPU"


def _slots(res: Resources) -> int:
    """How many trials the cluster can run at once with the study's per-trial resources.

    Tune keeps only one trial pending for a custom searcher unless told the concurrency,
    which would run a study one trial at a time.
    """
    import ray

    total = ray.cluster_resources()
    slots = int(total.get("CPU", 1) // res.cpu) if res.cpu else 1
    if res.gpu:
        slots = min(slots, int(total.get("GPU", 0) // res.gpu))
    return max(1, slots)


@contextmanager
def _tune_environment(verbose: bool):
    """Tune's switches that exist only as environment variables, set for one fit().

    - Without --verbose Tune prints nothing: our ledger lines are the progress. Tune's newer
      console output prints an experiment banner even when silent; the legacy reporter at
      verbosity 0 does not (RAY_AIR_NEW_OUTPUT=0).
    - No automatic CSV/TensorBoard loggers; run_sweep passes the JSON one explicitly.
    - Ctrl-C raises KeyboardInterrupt in the driver: Tune's own handler would end fit()
      "gracefully" and return as if the sweep had finished (exit 0). The run store already
      holds every finished run, so there is nothing for Tune to save.
    """
    changes = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "TUNE_DISABLE_SIGINT_HANDLER": "1"}
    if not verbose:
        changes["RAY_AIR_NEW_OUTPUT"] = "0"
    before = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

