"""The Optuna record: every run of a study as a trial in an Optuna storage.

The storage (where, which URLs, the driver's errors) and record.json are oracle.store.storage's.

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

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from oracle.errors import OracleError
from oracle.store.arms import ORACLE, SILO
from oracle.store.plain import json_safe
from oracle.store.rows import COLUMNS, CURVE, row_key, row_signature, rows_frame
from oracle.store.settings import SCHEMA, StudySettings
from oracle.store.storage import open_storage, quiet_optuna, redact
from silo.status import RunStatus

if TYPE_CHECKING:
    import optuna
    import pandas as pd
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

SEP = "/"
SETTINGS = "@study"  # the study's settings: `<study name>/@study`; `@` is never in an arm name
LR_LOW, LR_HIGH = 1e-8, 1e3
# The run's columns kept as user attributes (arm is the study, cycle and seed are params).
USER_ATTRS = [c for c in COLUMNS if c not in ("arm", "seed", "cycle")]


def optuna_name(study_name: str, arm: str) -> str:
    """The Optuna study that holds one arm of a study: `<study name>/<arm>`."""
    return f"{study_name}{SEP}{arm}"


def split_name(optuna_study_name: str) -> tuple[str, str] | None:
    """`smoke/silo` -> ("smoke", "silo"); None for a study not named by this scheme."""
    study, sep, arm = optuna_study_name.partition(SEP)
    return (study, arm) if sep and study and arm else None


def study_names(storage: BaseStorage) -> dict[str, list[str]]:
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


def study_settings(study: Any) -> StudySettings:
    """What analysis needs besides the runs, from an oracle.study.Study (duck-typed: the store
    never imports oracle.study)."""
    from oracle.store.provenance import environment

    planned = {
        arm: tuple(float(study.schedule(arm).max_lr(q)) for q in range(study.cycles))
        for arm in study.arm_names() if arm != ORACLE
    }
    return StudySettings(
        study=study.name,
        arms=tuple(study.arm_names()),
        cycles=int(study.cycles),
        seeds=tuple(int(s) for s in study.seeds),
        grid=tuple(float(v) for v in study.grid),
        refine=int(study.refine),
        beam=study.beam,
        tolerance=float(study.analysis.tolerance),
        # the retired rule's setting, kept only when the study still gives it (the report says
        # it is no longer used); null otherwise
        noise_k=study.analysis.noise_k,
        prune_rate=float(study.pruning.rate),
        planned_max_lr=planned,
        silo_max_lr=planned.get(SILO),
        # What each arm's runs hash their task as (oracle.store.identity): a cycle-0 run of another
        # task (a study changed and rerun into the same folder) is then told apart, though
        # it has no parent to tell it by.
        task_identity={arm: study.task_for_arm(arm).identity() for arm in study.arm_names()},
        study_yaml=study.resolved_yaml(),
        recorded_with=environment(),
    )


def study_attrs(study: Any) -> dict[str, Any]:
    """study_settings(study) as the JSON object the record keeps."""
    return study_settings(study).to_attrs()


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

    def __init__(self, storage: str | BaseStorage, study_name: str, attrs: Mapping[str, Any]) -> None:
        if isinstance(storage, str):
            self.url, self.storage = storage, open_storage(storage, must_exist=False)
        else:
            self.url, self.storage = getattr(storage, "url", type(storage).__name__), storage
        self.study_name, self.attrs = study_name, dict(attrs)
        self.settings = StudySettings.from_attrs(self.attrs)
        self._settings_written = False
        self._studies: dict[str, optuna.Study] = {}
        self._latest: dict[str, dict[tuple[int, int, float], Mapping[str, Any]]] = {}

    def _arm(self, arm: str) -> optuna.Study:
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

    def write(self, rows: Iterable[Mapping[str, Any]]) -> RecordResult:
        rows = [_plain_row(r) for r in rows]
        arms = list(dict.fromkeys([*(self.settings.arms or ()), *(r["arm"] for r in rows)]))
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
                    trial = frozen_trial(row, self.settings)
                    new.append(trial)
                    latest[key] = trial.user_attrs
                    superseded += previous is not None
                if new:
                    ostudy.add_trials(new)
                    added += len(new)
        names = [optuna_name(self.study_name, arm) for arm in self._studies]
        return RecordResult(redact(self.url), self.study_name, names, added, unchanged, superseded)


def record_rows(storage: str | BaseStorage, study_name: str, attrs: Mapping[str, Any],
                rows: Iterable[Mapping[str, Any]]) -> RecordResult:
    """Record run rows (dicts with oracle.store.rows.COLUMNS) as trials; idempotent (see module doc).

    `storage`: an Optuna storage object or URL. `attrs`: study_attrs() or the same keys."""
    return RecordWriter(storage, study_name, attrs).write(rows)


def record_study(study: Any, rows: Iterable[Mapping[str, Any]], storage_url: str) -> RecordResult:
    return record_rows(storage_url, study.name, study_attrs(study), rows)


def trial_key(trial: FrozenTrial) -> tuple[int, int, float]:
    max_lr: Any = trial.user_attrs.get("max_lr", trial.params.get("max_lr"))  # a JSON number
    return int(trial.params["seed"]), int(trial.params["cycle"]), float(max_lr)


def frozen_trial(row: Mapping[str, Any], settings: StudySettings) -> FrozenTrial:
    """One run row as a finished Optuna trial (COMPLETE for ok, FAIL otherwise)."""
    from optuna.distributions import FloatDistribution, IntDistribution
    from optuna.trial import TrialState, create_trial

    row = _plain_row(row)
    max_lr, cycle, seed = float(row["max_lr"]), int(row["cycle"]), int(row["seed"])
    param_lr = max_lr if max_lr > 0 else LR_LOW
    cycles = settings.cycles or 1
    seeds = list(settings.seeds or (0,))
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


def _name_the_value(ostudy: optuna.Study) -> None:
    """optuna-dashboard then says val_acc, not "Objective 0" (an experimental Optuna API)."""
    import warnings

    if ostudy.metric_names != ["val_acc"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning
            ostudy.set_metric_names(["val_acc"])


def curve_values(curve: Iterable[Any] | None) -> dict[int, float]:
    """A run's learning curve as Optuna intermediate values: {epoch: val_acc}, the epochs
    whose val accuracy was measured (task.eval_every thins them)."""
    out = {}
    for p in curve or []:
        v = p.get("val_acc") if isinstance(p, Mapping) else None
        if isinstance(v, (int, float)) and math.isfinite(v):
            out[int(p["epoch"])] = float(v)
    return out


def _set_study_attrs(ostudy: optuna.Study, attrs: Mapping[str, Any]) -> None:
    current = ostudy.user_attrs
    for key, value in attrs.items():
        if current.get(key, object()) != value:
            ostudy.set_user_attr(key, value)


def _plain_row(row: Mapping[str, Any]) -> dict[str, Any]:
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
    attrs: dict[str, Any]  # the study's settings as the storage holds them; read them as `settings`
    rows: pd.DataFrame  # ROW_COLUMNS; the latest trial per (arm, seed, cycle, max_lr)
    optuna_studies: list[str]
    superseded: int  # older trials ignored because a later one has the same key
    curves: dict[str, list[Any]] = field(default_factory=dict)  # run_id -> its learning curve (silo.curves)

    @property
    def settings(self) -> StudySettings:
        """The study's settings, read from `attrs` in whichever form the record holds them."""
        return StudySettings.from_attrs(self.attrs)


def load_record(storage: str | BaseStorage, study_name: str | None) -> Record:
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


def _load_studies(storage: BaseStorage, study_name: str, arms: list[str]) -> dict[str, optuna.Study]:
    import optuna

    with quiet_optuna():
        return {arm: optuna.load_study(study_name=optuna_name(study_name, arm), storage=storage)
                for arm in arms}


def _attrs_of(storage: BaseStorage, studies: Mapping[str, optuna.Study], study_name: str) -> dict[str, Any]:
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


def _rows_of(studies: Mapping[str, optuna.Study]) -> tuple[pd.DataFrame, int, dict[str, list[Any]]]:
    latest: dict[tuple[str, int, int, float], dict[str, Any]] = {}
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
