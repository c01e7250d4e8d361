"""Where a study's Optuna record lives: storage URLs, opening them, and the pointer file.

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

Errors
    Opening a storage, or reading or writing one, fails with one line naming the storage
    (its password removed) and what is wrong: a missing file or folder, a missing database
    driver (and the pip package that provides it), a database that is not Optuna's.

record.json
    The pointer in a study's output folder: which storage and study name its record uses
    (null storage: optuna.db in the folder itself, so the folder stays movable). `locate`
    reads it for `report`, `status`, `calibrate` and `dashboard`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oracle.errors import OracleError
from silo.atomic import write_atomic

if TYPE_CHECKING:  # optuna is imported where used: importing it is slow
    from optuna.storages import BaseStorage
    from optuna.storages.journal import JournalStorage

DEFAULT_DB = "optuna.db"
RECORD_FILE = "record.json"
# The pip package of each database driver module SQLAlchemy may ask for. `postgresql://` means
# psycopg 3 since SQLAlchemy 2.1 (psycopg2 only as `postgresql+psycopg2://`), so the missing
# module, not the URL's backend, says what to install.
_DRIVERS = {"psycopg": "'psycopg[binary]'", "psycopg2": "psycopg2-binary", "pymysql": "PyMySQL",
            "MySQLdb": "mysqlclient"}


def _missing_module(exc: BaseException) -> str:
    """The module an ImportError could not find; Optuna re-raises SQLAlchemy's with its own."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ImportError) and seen.name:
            return seen.name
        seen = seen.__cause__ or seen.__context__
    return ""


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


def default_storage_url(out: str | os.PathLike[str]) -> str:
    return f"sqlite:///{Path(out).resolve() / DEFAULT_DB}"


def open_storage(url: str, *, must_exist: bool = True) -> BaseStorage:
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


def _open_journal(path: Path, shown: str, must_exist: bool) -> JournalStorage:
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
    # how messages and record.json name it; JournalStorage declares no `url` (RDBStorage does)
    storage.url = f"journal:{path}"  # type: ignore[attr-defined]
    return storage


def _lacks_optuna_tables(url: str, engine_kwargs: dict[str, Any]) -> bool:
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
    seen: BaseException | None = exc
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
def quiet_optuna() -> Iterator[None]:
    """Optuna's INFO lines ('A new study created ...') would drown the driver's progress."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


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


def no_record_in(folder: str | os.PathLike[str]) -> bool:
    """`folder` is a folder with neither a record pointer nor the default SQLite record."""
    d = Path(folder)
    return d.is_dir() and not (d / RECORD_FILE).is_file() and not (d / DEFAULT_DB).is_file()


def locate(folder: str | None, storage_url: str | None, study_name: str | None) -> tuple[str, str | None]:
    """(storage URL, study name or None) for `report`/`dashboard` from a folder and/or flags.

    --storage wins; else the folder's record.json; else the folder's optuna.db. The study
    name: --study, else record.json's, else None (the caller takes the storage's only one)."""
    pointer: dict[str, Any] = {}
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
