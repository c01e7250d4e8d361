"""The Optuna record: every run of a study as a trial in an Optuna storage.

Where
    Embedded default: the SQLite file `optuna.db` in the study's output folder
    (`sqlite:///<out>/optuna.db`), written by the driver only, in batches while the sweep
    runs (oracle.sweep.live) and once more at its end. `silo-oracle run --storage URL` takes any
    Optuna RDB storage URL instead (e.g. `postgresql://user@host/db` on a cluster; the
    driver must be installed: `pip install 'psycopg[binary]'`, or psycopg2 with a
    `postgresql+psycopg2://` URL). The output folder's `record.json` says which storage and
    study name it used, so `silo-oracle report DIR` and `silo-oracle dashboard DIR` find it.
    A password in the URL is never written there: give it through PGPASSWORD or ~/.pgpass,
    or pass `--storage` again.

Naming
    One Optuna study per (study, arm), named `<study name>/<arm>`, e.g. `smoke/oracle`,
    `smoke/silo`, `smoke/lr_rewinding`. Study and arm names use only [A-Za-z0-9_.-], so the
    first `/` splits them. Direction: maximize (the value is val_acc).

Trials
    One trial per run row (results.csv's columns), created frozen with
    `optuna.trial.create_trial` and added with `Study.add_trials`:
      params      max_lr (FloatDistribution(1e-8, 1e3, log=True), widened for values beyond),
                  cycle (IntDistribution 0..cycles-1), seed (IntDistribution 0..max seed)
      value       val_acc                    (state COMPLETE, only for status `ok`)
      state       COMPLETE for `ok`; FAIL (no value) for `diverged` and `failed`
      user attrs  every other column: max_lr (exact; the param is clipped to 1e-8 when
                  max_lr <= 0, which a log scale cannot hold), val_acc (also for diverged
                  runs: chance), test_acc, sparsity, train_loss, status, run_id,
                  parent_run_id, wall_s, steps, images_per_s, reused, chosen
      curve       the run's learning curve (silo.curves), as a user attr `curve` and its val
                  accuracies as intermediate values {epoch: val_acc}; each arm's study names
                  its value `val_acc` (set_metric_names), so optuna-dashboard draws both
    A diverged run is a FAIL in Optuna (it produced no usable network) but keeps its
    status and its chance accuracies in the user attrs; analysis uses `ok` runs only.

The study's settings: one place, `<study name>/@study`, rewritten by every invocation
    An Optuna study without trials (`@` is not allowed in arm names) whose user attrs are the
    study as it is now: study, arms, cycles, seeds, grid, refine, search (`exhaustive` or
    {beam: W}), tolerance (delta), noise_k (null unless the study gives the retired setting),
    prune_rate, planned_max_lr ({chain arm: [max_lr of cycle 0..Q-1]}), silo_max_lr (SILO's
    planned max_lr per cycle, or null), study_yaml (the resolved study file), recorded_with
    (versions, git commit), schema. Every writer sets them before its first trial, so a
    rerun that dropped an arm, changed the seeds, the grid or SILO is judged as it is now,
    whichever arms it still has. Each arm's study carries only study, arm and schema.
    (Records written before this carried the settings on every arm's study; they are read
    from there when no `@study` exists.) Analysis needs nothing but the storage.

Idempotence
    A run row's key is (arm, seed, cycle, max_lr). Recording a row whose key already has a
    trial with the same oracle.store.rows.row_signature (run_id, status, chosen flag and the run's
    metrics: a run trained again under the same id has new ones) adds nothing, so a rerun never
    duplicates trials. Optuna cannot delete trials, so a changed row (a failed run that now
    succeeded, a new parent after the grid was extended, a new winner) is added as a new
    trial and supersedes the old one: for each key, analysis reads the latest trial
    (highest trial number) only. The superseded trials stay visible in the dashboard.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oracle.errors import OracleError
from oracle.store.arms import ORACLE, SILO
from oracle.store.plain import json_safe
from oracle.store.rows import COLUMNS, CURVE, row_key, row_signature, rows_frame
from silo.atomic import write_atomic
from silo.status import RunStatus

if TYPE_CHECKING:
    import pandas as pd

SEP = "/"
SETTINGS = "@study"  # the study's settings: `<study name>/@study`; `@` is never in an arm name
DEFAULT_DB = "optuna.db"
RECORD_FILE = "record.json"
SCHEMA = 1
LR_LOW, LR_HIGH = 1e-8, 1e3
# The run's columns kept as user attributes (arm is the study, cycle and seed are params).
USER_ATTRS = [c for c in COLUMNS if c not in ("arm", "seed", "cycle")]
# The pip package of each database driver module SQLAlchemy may ask for. `postgresql://` means
# psycopg 3 since SQLAlchemy 2.1 (psycopg2 only as `postgresql+psycopg2://`), so the missing
# module, not the URL's backend, says what to install.
_DRIVERS = {"psycopg": "'psycopg[binary]'", "psycopg2": "psycopg2-binary", "pymysql": "PyMySQL",
            "MySQLdb": "mysqlclient"}


def _missing_module(exc: BaseException) -> str:
    """The module an ImportError could not find; Optuna re-raises SQLAlchemy's with its own."""
    while exc is not None:
        if isinstance(exc, ImportError) and exc.name:
            return exc.name
        exc = exc.__cause__ or exc.__context__
    return ""


def optuna_name(study_name: str, arm: str) -> str:
    """The Optuna study that holds one arm of a study: `<study name>/<arm>`."""
    return f"{study_name}{SEP}{arm}"


def split_name(optuna_study_name: str) -> tuple[str, str] | None:
    """`smoke/silo` -> ("smoke", "silo"); None for a study not named by this scheme."""
    study, sep, arm = optuna_study_name.partition(SEP)
    return (study, arm) if sep and study and arm else None


# ----------------------------------------------------------------------------- storages


def redact(url: str) -> str:
    """The URL without its password (for messages and for record.json)."""
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:  # not a URL: show it as given
        return url
    if not parsed.password:
        return url
    return parsed._replace(password=None).render_as_string(hide_password=False)  # URL is a NamedTuple


def sqlite_path(url: str) -> Path | None:
    """The file of a `sqlite:///...` URL, None for other URLs or an in-memory database."""
    if not url.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    try:
        database = make_url(url).database
    except Exception:  # reported when the storage is opened
        return None
    return Path(database) if database and database != ":memory:" else None


def default_storage_url(out: str | os.PathLike) -> str:
    return f"sqlite:///{Path(out).resolve() / DEFAULT_DB}"


def open_storage(url: str, *, must_exist: bool = True):
    """An Optuna RDBStorage for `url`, or OracleError naming the storage and what is wrong.

    must_exist (reading: report, dashboard): the storage must already hold Optuna's tables,
    and a SQLite file must exist; nothing is created. must_exist=False (recording) creates
    the tables (and the SQLite file) when missing.
    """
    import optuna
    from sqlalchemy.engine import make_url

    shown = redact(url)
    journal = journal_path(url)
    if journal is not None:
        return _open_journal(journal, shown, must_exist)
    try:
        parsed = make_url(url)
    except Exception:
        raise OracleError(
            f"not a storage URL: {shown!r} (e.g. sqlite:///path/to/optuna.db or postgresql://user@host/db)"
        ) from None
    backend = parsed.get_backend_name()
    path = sqlite_path(url)
    if backend == "sqlite":
        if path is None:
            raise OracleError(f"storage {shown}: an in-memory SQLite database holds no record; give a file")
        if must_exist and not path.is_file():
            raise OracleError(f"storage {shown}: no such file {path}")
        if not path.parent.is_dir():
            raise OracleError(f"storage {shown}: the folder {path.parent} does not exist")
    engine_kwargs: dict[str, Any] = {}
    if backend in ("postgresql", "mysql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}  # an unreachable host fails fast
    try:
        with quiet_optuna():
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                                 skip_table_creation=must_exist)
            optuna.get_all_study_names(storage)  # proves the tables are there and readable
    except ImportError as exc:
        driver = _DRIVERS.get(_missing_module(exc), f"a SQLAlchemy driver for {parsed.drivername!r}")
        raise OracleError(f"storage {shown}: its database driver is not installed (pip install {driver})") from None
    except Exception as exc:  # SQLAlchemy, Optuna and driver errors alike
        why = _first_line(exc)
        if must_exist and _lacks_optuna_tables(url, engine_kwargs):
            why = "not an Optuna storage (it has no Optuna tables)"
        raise OracleError(f"cannot open storage {shown}: {why}") from None
    return storage


def journal_path(url: str) -> Path | None:
    """The file of a journal storage (`journal:PATH`, or a path ending in .log), else None.

    Optuna's journal file storage is an append-only log with a file lock: several processes
    on one host can write it at once, which one SQLite file does not take well."""
    if url.startswith("journal:"):
        return Path(url[len("journal:"):]).expanduser()
    if url.endswith(".log") and "://" not in url:
        return Path(url).expanduser()
    return None


def _open_journal(path: Path, shown: str, must_exist: bool):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if must_exist and not path.is_file():
        raise OracleError(f"storage {shown}: no such file {path}")
    if not path.parent.is_dir():
        raise OracleError(f"storage {shown}: the folder {path.parent} does not exist")
    try:
        with quiet_optuna():
            storage = JournalStorage(JournalFileBackend(str(path)))
            optuna.get_all_study_names(storage)  # replays the log: a garbled one fails here
    except Exception as exc:  # a log that is not Optuna's
        raise OracleError(f"cannot open storage {shown}: not an Optuna journal ({_first_line(exc)})") from None
    storage.url = f"journal:{path}"  # how messages and record.json name it
    return storage


def _lacks_optuna_tables(url: str, engine_kwargs: dict) -> bool:
    """True when the database answers and holds no Optuna `studies` table."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, **engine_kwargs)
        try:
            return not sqlalchemy.inspect(engine).has_table("studies")
        finally:
            engine.dispose()
    except Exception:  # unreachable: the original error says more
        return False


def _first_line(exc: BaseException) -> str:
    seen = exc
    while seen is not None and getattr(seen, "orig", None) is None:  # Optuna wraps SQLAlchemy's error
        seen = seen.__cause__ or seen.__context__
    exc = seen if seen is not None else exc
    orig = getattr(exc, "orig", None)  # SQLAlchemy wraps the driver's error
    text = str(orig if orig is not None else exc).strip() or type(exc).__name__
    text = text.splitlines()[0]
    if "no such table" in text or ("relation" in text and "does not exist" in text):
        return f"not an Optuna storage ({text})"
    return text


def storage_error(exc: BaseException) -> str:
    """One line for a failed read or write of a record: ours, or the database driver's."""
    return exc.message if isinstance(exc, OracleError) else _first_line(exc)


@contextmanager
def quiet_optuna():
    """Optuna's INFO lines ('A new study created ...') would drown the driver's progress."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def study_names(storage) -> dict[str, list[str]]:
    """{study name: [arm, ...]} for every study named by this module's scheme."""
    import optuna

    with quiet_optuna():
        names = optuna.get_all_study_names(storage)
    out: dict[str, list[str]] = {}
    for name in sorted(names):
        split = split_name(name)
        if split and split[1] != SETTINGS:
            out.setdefault(split[0], []).append(split[1])
    return out


def unknown_study(name: str, storage_url: str, known: Iterable[str]) -> OracleError:
    known = sorted(known)
    there = f"studies there: {', '.join(known)}" if known else "it holds no silo-oracle study"
    return OracleError(f"no study {name!r} in storage {redact(storage_url)} ({there})")


# ----------------------------------------------------------------------------- recording


def study_attrs(study) -> dict[str, Any]:
    """What analysis needs besides the runs, from an oracle.study.Study."""
    from oracle.store.provenance import environment

    planned = {
        arm: [float(study.schedule(arm).max_lr(q)) for q in range(study.cycles)]
        for arm in study.arm_names() if arm != ORACLE
    }
    return {
        "schema": SCHEMA,
        "study": study.name,
        "arms": list(study.arm_names()),
        "cycles": int(study.cycles),
        "seeds": [int(s) for s in study.seeds],
        "grid": [float(v) for v in study.grid],
        "refine": int(study.refine),
        "search": study.search_setting,
        "tolerance": float(study.analysis.tolerance),
        # the retired rule's setting, kept only when the study still gives it (the report says
        # it is no longer used); null otherwise
        "noise_k": study.analysis.noise_k,
        "prune_rate": float(study.pruning.rate),
        "planned_max_lr": planned,
        "silo_max_lr": planned.get(SILO),
        # What each arm's runs hash their task as (oracle.store.identity): a cycle-0 run of another
        # task (a study changed and rerun into the same folder) is then told apart, though
        # it has no parent to tell it by.
        "task_identity": {arm: study.task_for_arm(arm).identity() for arm in study.arm_names()},
        "study_yaml": study.resolved_yaml(),
        "recorded_with": environment(),
    }


@dataclass(frozen=True)
class RecordResult:
    storage: str  # the URL, password removed
    study: str
    optuna_studies: list[str]
    added: int  # new trials
    unchanged: int  # rows already recorded: nothing added
    superseded: int  # rows whose new trial replaces an older one of the same key


class RecordWriter:
    """Writes run rows as trials into one study's record; idempotent (see module doc).

    It reads each arm's trials once, when the arm is first written, and then keeps what it
    wrote in memory, so a driver recording in batches during the sweep (oracle.sweep.live) pays
    for one storage read per arm, not one per batch. Only one writer per record at a time.
    """

    def __init__(self, storage, study_name: str, attrs: Mapping[str, Any]):
        if isinstance(storage, str):
            self.url, self.storage = storage, open_storage(storage, must_exist=False)
        else:
            self.url, self.storage = getattr(storage, "url", type(storage).__name__), storage
        self.study_name, self.attrs = study_name, dict(attrs)
        self._settings_written = False
        self._studies: dict[str, Any] = {}
        self._latest: dict[str, dict[tuple, Mapping]] = {}

    def _arm(self, arm: str):
        import optuna

        if arm not in self._studies:
            ostudy = optuna.create_study(storage=self.storage, study_name=optuna_name(self.study_name, arm),
                                         direction="maximize", load_if_exists=True)
            _set_study_attrs(ostudy, {"schema": SCHEMA, "study": self.study_name, "arm": arm})
            _name_the_value(ostudy)
            self._latest[arm] = {trial_key(t): t.user_attrs
                                 for t in sorted(ostudy.get_trials(deepcopy=False), key=lambda t: t.number)}
            self._studies[arm] = ostudy
        return self._studies[arm]

    def _write_settings(self) -> None:
        """The study's settings, once per writer (per invocation), before any trial."""
        import optuna

        if self._settings_written:
            return
        ostudy = optuna.create_study(storage=self.storage, study_name=optuna_name(self.study_name, SETTINGS),
                                     direction="maximize", load_if_exists=True)
        _set_study_attrs(ostudy, {**json_safe(self.attrs), "study": self.study_name})
        self._settings_written = True

    def write(self, rows: Iterable[Mapping]) -> RecordResult:
        rows = [_plain_row(r) for r in rows]
        arms = list(dict.fromkeys([*self.attrs.get("arms", []), *(r["arm"] for r in rows)]))
        added = unchanged = superseded = 0
        with quiet_optuna():
            self._write_settings()
            for arm in arms:
                ostudy, latest = self._arm(arm), self._latest.setdefault(arm, {})
                new = []
                for row in rows:
                    if row["arm"] != arm:
                        continue
                    key = row_key(row)[1:]  # within the arm's own Optuna study
                    previous = latest.get(key)
                    if previous is not None and row_signature(previous) == row_signature(row):
                        unchanged += 1
                        continue
                    trial = frozen_trial(row, self.attrs)
                    new.append(trial)
                    latest[key] = trial.user_attrs
                    superseded += previous is not None
                if new:
                    ostudy.add_trials(new)
                    added += len(new)
        names = [optuna_name(self.study_name, arm) for arm in self._studies]
        return RecordResult(redact(self.url), self.study_name, names, added, unchanged, superseded)


def record_rows(storage, study_name: str, attrs: Mapping[str, Any], rows: Iterable[Mapping]) -> RecordResult:
    """Record run rows (dicts with oracle.store.rows.COLUMNS) as trials; idempotent (see module doc).

    `storage`: an Optuna storage object or URL. `attrs`: study_attrs() or the same keys."""
    return RecordWriter(storage, study_name, attrs).write(rows)


def record_study(study, rows: Iterable[Mapping], storage_url: str) -> RecordResult:
    return record_rows(storage_url, study.name, study_attrs(study), rows)


def trial_key(trial) -> tuple[int, int, float]:
    max_lr = trial.user_attrs.get("max_lr", trial.params.get("max_lr"))
    return int(trial.params["seed"]), int(trial.params["cycle"]), float(max_lr)


def frozen_trial(row: Mapping, attrs: Mapping):
    """One run row as a finished Optuna trial (COMPLETE for ok, FAIL otherwise)."""
    from optuna.distributions import FloatDistribution, IntDistribution
    from optuna.trial import TrialState, create_trial

    row = _plain_row(row)
    max_lr, cycle, seed = float(row["max_lr"]), int(row["cycle"]), int(row["seed"])
    param_lr = max_lr if max_lr > 0 else LR_LOW
    cycles = int(attrs.get("cycles") or 1)
    seeds = [int(s) for s in attrs.get("seeds") or [0]]
    params = {"max_lr": param_lr, "cycle": cycle, "seed": seed}
    distributions = {
        "max_lr": FloatDistribution(min(LR_LOW, param_lr), max(LR_HIGH, param_lr), log=True),
        "cycle": IntDistribution(0, max(cycles - 1, cycle)),
        "seed": IntDistribution(0, max(max(seeds), seed)),
    }
    val = row.get("val_acc")
    ok = row.get("status") == RunStatus.OK and isinstance(val, float) and math.isfinite(val)
    return create_trial(
        state=TrialState.COMPLETE if ok else TrialState.FAIL,
        value=val if ok else None,
        params=params,
        distributions=distributions,
        user_attrs={k: row.get(k) for k in USER_ATTRS} | ({CURVE: row[CURVE]} if row.get(CURVE) else {}),
        intermediate_values=curve_values(row.get(CURVE)),
    )


def _name_the_value(ostudy) -> None:
    """optuna-dashboard then says val_acc, not "Objective 0" (an experimental Optuna API)."""
    import warnings

    if ostudy.metric_names != ["val_acc"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning
            ostudy.set_metric_names(["val_acc"])


def curve_values(curve) -> dict[int, float]:
    """A run's learning curve as Optuna intermediate values: {epoch: val_acc}, the epochs
    whose val accuracy was measured (task.eval_every thins them)."""
    out = {}
    for p in curve or []:
        v = p.get("val_acc") if isinstance(p, Mapping) else None
        if isinstance(v, (int, float)) and math.isfinite(v):
            out[int(p["epoch"])] = float(v)
    return out


def _set_study_attrs(ostudy, attrs: Mapping[str, Any]) -> None:
    current = ostudy.user_attrs
    for key, value in attrs.items():
        if current.get(key, object()) != value:
            ostudy.set_user_attr(key, value)


def _plain_row(row: Mapping) -> dict:
    out = {k: json_safe(row.get(k)) for k in COLUMNS}
    if row.get(CURVE):
        out[CURVE] = json_safe(list(row[CURVE]))
    out["reused"] = bool(out["reused"])
    out["chosen"] = bool(out["chosen"])
    out["refined"] = bool(out["refined"])
    return out




# ----------------------------------------------------------------------------- reading a record


@dataclass
class Record:
    study: str
    storage: str  # URL without password
    attrs: dict
    rows: pd.DataFrame  # ROW_COLUMNS; the latest trial per (arm, seed, cycle, max_lr)
    optuna_studies: list[str]
    superseded: int  # older trials ignored because a later one has the same key
    curves: dict[str, list] = field(default_factory=dict)  # run_id -> its learning curve (silo.curves)


def read_record(storage, study_name: str | None) -> Record:
    """Everything analysis needs, from the storage (a URL or an Optuna storage object).

    study_name None: the storage's only study (an error naming them if there are several)."""
    url = storage if isinstance(storage, str) else getattr(storage, "url", "<storage>")
    if isinstance(storage, str):
        storage = open_storage(storage, must_exist=True)
    known = study_names(storage)
    if study_name is None:
        if len(known) != 1:
            there = ", ".join(sorted(known)) or "none"
            raise OracleError(f"storage {redact(url)}: say which study with --study NAME (studies there: {there})")
        study_name = next(iter(known))
    if study_name not in known:
        raise unknown_study(study_name, url, known)
    studies = _load_studies(storage, study_name, known[study_name])
    rows, superseded, curves = _rows_of(studies)
    return Record(study_name, redact(url), _attrs_of(storage, studies, study_name), rows,
                  [s.study_name for s in studies.values()], superseded, curves)


def _load_studies(storage, study_name: str, arms: list[str]) -> dict:
    import optuna

    with quiet_optuna():
        return {arm: optuna.load_study(study_name=optuna_name(study_name, arm), storage=storage)
                for arm in arms}


def _attrs_of(storage, studies: Mapping[str, Any], study_name: str) -> dict:
    """The study's settings as its last invocation wrote them (`<study>/@study`); for a record
    written before that study existed, the union of the arms' own copies."""
    import optuna

    try:
        with quiet_optuna():
            attrs = dict(optuna.load_study(study_name=optuna_name(study_name, SETTINGS), storage=storage).user_attrs)
    except KeyError:  # Optuna's "no such study": an older record
        attrs = {}
        for s in studies.values():
            for k, v in s.user_attrs.items():
                attrs.setdefault(k, v)
        arms = list(attrs.get("arms") or [])
        attrs["arms"] = arms + [a for a in studies if a not in arms]
    attrs.pop("arm", None)
    attrs["study"] = study_name
    return attrs


def _rows_of(studies: Mapping[str, Any]) -> tuple[pd.DataFrame, int, dict[str, list]]:
    latest: dict[tuple, dict] = {}
    seen = 0
    for arm, s in studies.items():
        for t in s.get_trials(deepcopy=False):
            if not {"seed", "cycle", "max_lr"} <= set(t.params) or "status" not in t.user_attrs:
                continue  # not a run recorded by oracle.store.record
            seen += 1
            seed, cycle, max_lr = trial_key(t)
            key = (arm, seed, cycle, max_lr)
            if key in latest and latest[key]["trial"] > t.number:
                continue
            latest[key] = {**{c: t.user_attrs.get(c) for c in COLUMNS}, "arm": arm, "seed": seed,
                           "cycle": cycle, "max_lr": max_lr, "trial": t.number, CURVE: t.user_attrs.get(CURVE)}
    curves = {r["run_id"]: r[CURVE] for r in latest.values() if r[CURVE] and r["run_id"]}
    return rows_frame(latest.values()), seen - len(latest), curves


# ----------------------------------------------------------------------------- record.json


def write_pointer(out: Path, study_name: str, storage_url: str | None, names: list[str]) -> None:
    """record.json: where this folder's record lives. storage null: optuna.db in the folder."""
    url = None
    journal = journal_path(storage_url) if storage_url is not None else None
    if journal is not None:
        url = f"journal:{journal.resolve()}"
    elif storage_url is not None:
        path = sqlite_path(storage_url)
        if path is not None and path.resolve() == (Path(out) / DEFAULT_DB).resolve():
            url = None  # the folder's own file: keep the folder movable
        elif path is not None and not path.is_absolute():
            url = f"sqlite:///{path.resolve()}"
        else:
            url = redact(storage_url)
    body = {"study": study_name, "storage": url, "optuna_studies": names,
            "naming": "<study name>/<arm>, one Optuna study per arm"}
    write_atomic(Path(out) / RECORD_FILE, json.dumps(body, indent=2) + "\n")


def no_record_in(folder: str | os.PathLike) -> bool:
    """`folder` is a folder with neither a record pointer nor the default SQLite record."""
    d = Path(folder)
    return d.is_dir() and not (d / RECORD_FILE).is_file() and not (d / DEFAULT_DB).is_file()


def locate(folder: str | None, storage_url: str | None, study_name: str | None) -> tuple[str, str | None]:
    """(storage URL, study name or None) for `report`/`dashboard` from a folder and/or flags.

    --storage wins; else the folder's record.json; else the folder's optuna.db. The study
    name: --study, else record.json's, else None (the caller takes the storage's only one)."""
    pointer: dict = {}
    if folder is not None:
        d = Path(folder)
        if not d.is_dir():
            raise OracleError(f"{folder}: no such folder (give a study's output folder, or --storage URL --study NAME)")
        p = d / RECORD_FILE
        if p.is_file():
            try:
                pointer = json.loads(p.read_text())
            except (OSError, ValueError) as exc:
                raise OracleError(f"{p}: unreadable ({exc}); pass --storage URL --study NAME") from None
    if storage_url is None and folder is not None:
        if pointer.get("storage"):
            storage_url = pointer["storage"]
        elif (Path(folder) / DEFAULT_DB).is_file():
            storage_url = default_storage_url(folder)
        else:
            raise OracleError(
                f"{folder}: no Optuna record here (expected {Path(folder) / DEFAULT_DB} or {RECORD_FILE}); "
                "pass --storage URL"
            )
    if storage_url is None:
        raise OracleError("give a study's output folder DIR, or --storage URL (with --study NAME)")
    return storage_url, study_name or pointer.get("study")
