"""Study files: one YAML file describing a task, its pruning, the arms to compare and the seeds.

    study = load_study("studies/quickstart.yaml")    # or StudyError(problems), one line each
    study.task                 # silo.config.TaskConfig, pruning included
    study.arm_names()          # ["oracle", "silo", "lr_rewinding", ...]
    study.schedule("silo")     # silo.schedules.Schedule of a chain arm
    study.task_for_arm("cosine_decay")   # the task with that arm's shape

The models reuse silo.config's TaskConfig and PruningConfig; this module adds only what a study
has on top of a task (cycles, arms, seeds, analysis, resources) and turns every validation
failure into `<field path>: <what is wrong and what is allowed>` lines (docs/design.md, bad input).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
import re
import types
from collections.abc import Hashable
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from oracle.errors import StudyError
from oracle.owncode import CodePathError as _CodePathError
from oracle.selection import DEFAULT_NOISE_K, DEFAULT_TOLERANCE
from silo.accel import ExecutionConfig
from silo.config import PruningConfig, ShapeConfig, Strict, TaskConfig
from silo.schedules import BASELINES, Schedule, SiloPeak, baseline, silo_schedule

__all__ = [
    "AnalysisSettings", "Arms", "BaselineArm", "BeamSearch", "LogRange", "OracleArm", "Resources", "SiloArm",
    "Study", "StudyError", "StudyPruning", "load_study", "parse_study",
]

# Names end up in paths (results/<name>/) and in tables, so keep them to safe characters.
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_SECTIONS = ("name", "code", "task", "pruning", "arms", "seeds", "analysis", "resources", "execution")
MAX_STUDY_BYTES = 1_000_000

PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Seed = Annotated[StrictInt, Field(ge=0)]


class _FieldProblems(ValueError):
    """Raised inside a validator to report problems at paths *below* the field it validates
    (pydantic would pin a plain ValueError on the field itself). Paths are loc tuples."""

    def __init__(self, problems: list[tuple[tuple, str]]) -> None:
        super().__init__("; ".join(f"{_path(loc)}: {msg}" if loc else msg for loc, msg in problems))
        self.problems = problems


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value) or set(value) == {"."}:
        raise ValueError(f"{what} may use only letters, digits, '_', '.' and '-', got {value!r}")
    return value


def _registry(module: str, attr: str):
    """A registry of silo's, imported when a study is validated (not when this module is)."""
    return getattr(importlib.import_module(module), attr)


def _settings_of(baseline_name: Any) -> dict[str, inspect.Parameter]:
    """A baseline's settings: its keyword-only parameters, minus prune_rate (pruning.rate)."""
    make = BASELINES.get(baseline_name) if isinstance(baseline_name, str) else None
    if make is None:
        return {}
    return {k: p for k, p in inspect.signature(make).parameters.items()
            if p.kind is p.KEYWORD_ONLY and k != "prune_rate"}


def _known(names) -> str:
    return ", ".join(sorted(names))


# ----------------------------------------------------------------------------- sections


class StudyPruning(PruningConfig):
    """silo's PruningConfig plus the number of cycles Q (which is not part of a run)."""

    cycles: StrictInt = Field(ge=1)

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v: str) -> str:
        strategies = _registry("silo.pruning", "STRATEGY_NAMES")
        if v not in strategies:
            raise ValueError(f"unknown pruning strategy {v!r} (known: {_known(strategies)})")
        return v

    @model_validator(mode="after")
    def _swd_settings_for_swd(self) -> StudyPruning:
        # Settings that would change nothing are a mistake worth naming (they would not even
        # enter the run key: silo.config.TaskConfig.identity).
        if self.strategy != "swd" and self.swd != type(self.swd)():
            raise _FieldProblems([(("swd",), f"only used by strategy swd (strategy is {self.strategy!r}): "
                                             "remove it or set strategy: swd")])
        return self

    def config(self) -> PruningConfig:
        return PruningConfig(**self.model_dump(exclude={"cycles"}))


class LogRange(Strict):
    """`count` max_lr values evenly spaced in log from `low` to `high`, both included."""

    low: PositiveFinite
    high: PositiveFinite
    count: StrictInt = Field(ge=2)

    @model_validator(mode="after")
    def _order(self) -> LogRange:
        if not self.low < self.high:
            raise _FieldProblems([(("high",), f"must be > low ({self.low}), got {self.high}")])
        return self

    def values(self) -> tuple[float, ...]:
        ratio = self.high / self.low
        # 6 significant digits: grid values appear in tables, file names and run ids.
        return tuple(
            float(f"{self.low * ratio ** (i / (self.count - 1)):.6g}") for i in range(self.count)
        )


MIN_BEAM_GRID = 4  # a beam round trains at least 3 values: on 3 it would be the whole grid


class BeamSearch(Strict):
    beam: StrictInt = Field(ge=1)  # W grid neighbours each side of the previous round's V


class OracleArm(Strict):
    grid: tuple[PositiveFinite, ...]  # sorted, distinct; a LogRange mapping is expanded on load
    # Refinements per round (docs/design.md, verdict step 5): each adds the geometric midpoints
    # next to the ends of the optimal set, 2 runs per seed instead of a grid twice as dense.
    refine: StrictInt = Field(0, ge=0, le=4)
    # Which grid values each round trains (docs/design.md, "The beam"): `exhaustive`, or
    # {beam: W}: from cycle 1 on, the previous round's V plus W grid neighbours each side.
    search: Literal["exhaustive"] | BeamSearch = "exhaustive"

    @field_validator("search", mode="before")
    @classmethod
    def _search(cls, v: Any) -> Any:
        if v == "exhaustive" or isinstance(v, BeamSearch):
            return v
        if isinstance(v, dict) and set(v) == {"beam"}:
            return _validate_nested(BeamSearch, v)
        raise ValueError(f"must be `exhaustive` or {{beam: W}} with W an int >= 1, got {_show(v)}")

    @property
    def beam(self) -> int | None:
        """The beam's width W, or None for the exhaustive search."""
        return None if self.search == "exhaustive" else self.search.beam

    @field_validator("grid", mode="before")
    @classmethod
    def _expand(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return _validate_nested(LogRange, v).values()
        return v

    @field_validator("grid")
    @classmethod
    def _distinct(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v:
            raise ValueError("must not be empty: list max_lr values, or give {low, high, count}")
        dupes = sorted({x for x in v if v.count(x) > 1})
        if dupes:
            raise ValueError(f"duplicate value(s) {', '.join(map(str, dupes))}: list each max_lr once")
        if len(v) < 2:
            raise ValueError("needs at least 2 max_lr values: an optimal interval needs a grid")
        return tuple(sorted(v))

    @model_validator(mode="after")
    def _refinable(self) -> OracleArm:
        if self.refine and len(self.grid) < 3:
            raise _FieldProblems([(("refine",), f"needs a grid of at least 3 values, got {len(self.grid)}")])
        if self.beam is not None and len(self.grid) < MIN_BEAM_GRID:
            raise _FieldProblems([(("search",), f"a beam needs a grid of at least {MIN_BEAM_GRID} values, "
                                                f"got {len(self.grid)}: use `exhaustive`")])
        return self


class SiloArm(Strict):
    """SILO's S-curve settings; the prune rate is pruning.rate. Defaults: the paper's ResNet-20."""

    offset: float = Field(0.03, ge=0, allow_inf_nan=False)
    alpha: float = Field(0.04, ge=0, allow_inf_nan=False)
    beta: float = Field(5.0, gt=0, allow_inf_nan=False)
    delay: StrictInt = Field(1, ge=0)


class CalibratedSiloArm(Strict):
    """SILO with the settings a `silo-oracle calibrate` wrote: `{from: PATH}` to its
    calibration.json (relative to the working directory, like every path of the CLI). The
    file is read when the study loads; the resolved study lists the settings it read, and a
    setting given next to `from` must equal the file's (so a resolved study replays only
    the calibration it was resolved with). The prune rate is still pruning.rate."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: str = Field(alias="from")
    offset: float
    alpha: float
    beta: float
    delay: int

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "from" not in data:
            return data  # pydantic says what is missing
        path = data["from"]
        if not isinstance(path, str) or not path:
            raise _FieldProblems([(("from",), f"must be the path of a calibration.json, got {_show(path)}")])
        from oracle.calibrate import (
            read_calibration,  # lazily: pandas only for studies that use it
        )
        from oracle.errors import OracleError

        try:
            settings = read_calibration(path)["settings"]
        except OracleError as exc:
            raise _FieldProblems([(("from",), exc.message)]) from None
        keys = ("offset", "alpha", "beta", "delay")
        differ = [((k,), f"{data[k]!r} differs from {settings[k]!r} in {path}: give only `from`")
                  for k in keys if k in data and data[k] != settings[k]]
        if differ:
            raise _FieldProblems(differ)
        return {**{k: v for k, v in data.items() if k not in keys},
                "from": str(Path(path).resolve()), **{k: settings[k] for k in keys}}


class BaselineArm(Strict):
    """A literature baseline of silo.schedules.BASELINES. In the file its settings sit next to
    `name` (e.g. `{name: lr_warmup, max_lr: 0.05, warmup: 1ep}`); here they are `settings`."""

    name: str
    label: str | None = None  # the arm's name when one baseline appears twice
    settings: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _gather(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        own = {k: data[k] for k in ("name", "label") if k in data}
        given = {k: v for k, v in data.items() if k not in own}
        # Fill in the baseline's own defaults (in its parameter order) so the resolved study
        # shows every setting a run uses; unknown keys stay, for baseline() to reject.
        params = _settings_of(own.get("name"))
        settings = {k: given.pop(k, p.default) for k, p in params.items()
                    if k in given or p.default is not p.empty}
        return {**own, "settings": {**settings, **given}}

    @field_validator("name")
    @classmethod
    def _name_known(cls, v: str) -> str:
        if v not in BASELINES:
            raise ValueError(f"unknown baseline {v!r} (known: {_known(BASELINES)})")
        return v

    @field_validator("label")
    @classmethod
    def _label(cls, v: str | None) -> str | None:
        return None if v is None else _check_name(v, "a label")

    @property
    def arm_name(self) -> str:
        return self.label or self.name

    def to_mapping(self) -> dict[str, Any]:
        label = {"label": self.label} if self.label else {}
        return {"name": self.name, **label, **self.settings}


class Arms(Strict):
    oracle: OracleArm | None = None
    silo: SiloArm | None = None
    silo_calibrated: CalibratedSiloArm | None = None
    baselines: tuple[BaselineArm, ...] = ()

    @model_validator(mode="after")
    def _names(self) -> Arms:
        if self.oracle is None and self.silo is None and self.silo_calibrated is None and not self.baselines:
            raise ValueError("no arms: give at least one of oracle, silo, silo_calibrated, baselines")
        seen = {n for n, arm in self._named() if arm}
        problems = []
        for i, b in enumerate(self.baselines):
            if b.arm_name in seen:
                problems.append((("baselines", i),
                                 f"arm name {b.arm_name!r} is already used; add a distinct `label`"))
            seen.add(b.arm_name)
        if problems:
            raise _FieldProblems(problems)
        return self

    def _named(self) -> tuple:
        return (("oracle", self.oracle), ("silo", self.silo), ("silo_calibrated", self.silo_calibrated))


class AnalysisSettings(Strict):
    """The Oracle's optimal interval (docs/design.md): tol = max(tolerance, noise_k * SE)."""

    tolerance: float = Field(DEFAULT_TOLERANCE, ge=0, lt=1, allow_inf_nan=False)  # accuracy as a fraction
    noise_k: float = Field(DEFAULT_NOISE_K, ge=0, allow_inf_nan=False)


class Resources(Strict):
    """Ray resources per trial. Fractional gpu packs several small trials on one GPU."""

    cpu: float = Field(1.0, gt=0, allow_inf_nan=False)
    gpu: float = Field(0.0, ge=0, allow_inf_nan=False)
    max_concurrent: StrictInt | None = Field(None, ge=1)  # None: as many as fit


class Execution(ExecutionConfig):
    """How the Oracle's rounds are executed; never part of a run's identity (docs/design.md).

    fuse: `on` trains each trial's grid values as one fused model (silo.round), `off` one
    after another, `auto` fuses on CUDA and, on a CPU, only the networks bench/fused_round.py
    measured faster fused there (the MNIST-1D models). max_members: the most values one
    trial carries (a large round is split into trials of at most this many, to bound memory).
    channels_last, compile, cudnn_benchmark: how each step runs (silo.accel.ExecutionConfig).
    """

    fuse: Literal["auto", "on", "off"] = "auto"
    max_members: StrictInt = Field(16, ge=1, le=256)


# ----------------------------------------------------------------------------- schedules


def _silo(arm: SiloArm | CalibratedSiloArm, prune_rate: float) -> Schedule:
    return silo_schedule(prune_rate, arm.offset, arm.alpha, arm.beta, arm.delay)


def _baseline(arm: BaselineArm, task_shape: ShapeConfig, prune_rate: float) -> Schedule:
    settings = dict(arm.settings)
    # Baselines whose peak follows the pruned fraction (s_cyc) take the study's prune rate,
    # so that it cannot disagree with the rate the pruning actually uses.
    if "prune_rate" in inspect.signature(BASELINES[arm.name]).parameters:
        if "prune_rate" in settings:
            raise _FieldProblems([(("prune_rate",), "not a setting here: it is pruning.rate")])
        settings["prune_rate"] = prune_rate
    if "max_lr" in settings:  # checked here so the message names max_lr, not the peak's field
        v = settings["max_lr"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            raise _FieldProblems([(("max_lr",), f"must be a finite number > 0, got {v!r}")])
    try:
        return baseline(arm.name, task_shape, **settings)
    except ValidationError as exc:  # a shape setting (warmup, milestones, base...) is bad
        raise _FieldProblems(_problems(exc, ShapeConfig)) from None
    except (ValueError, TypeError) as exc:
        raise _FieldProblems([((), str(exc))]) from None


def _planned_max_lr(schedule: Schedule, cycles: int, loc: tuple) -> list[tuple[tuple, str]]:
    """A problem if the arm's max_lr is not a finite number > 0 at some cycle of the study.

    SILO with offset 0 plans max_lr 0 for every cycle q <= delay (and underflows to 0 for a
    steep S-curve below p = 1/2): each such trial would fail after its retries, mid-sweep.
    """
    bad = []
    for q in range(cycles):
        v = schedule.max_lr(q)
        if not (math.isfinite(v) and v > 0):
            bad.append((q, v))
    if not bad:
        return []
    shown = ", ".join(f"{v!r} at cycle {q}" for q, v in bad[:3]) + (", ..." if len(bad) > 3 else "")
    # A peak that follows SILO's S-curve is positive at every cycle exactly when offset > 0.
    field = ("offset",) if isinstance(schedule.peak, SiloPeak) else ()
    return [(loc + field, f"the planned max_lr is {shown}; it must be a finite number > 0 "
                          "at every cycle" + (" (set offset > 0)" if field else ""))]


# ----------------------------------------------------------------------------- the study


class Study(Strict):
    # code first: the model and data it names are imported when task is validated.
    # pruning is declared before task so that task's validator can fold it into the task.
    name: str
    code: tuple[str, ...] = ()  # folders or .py files of the user's code (oracle.owncode)
    pruning: StudyPruning
    task: TaskConfig  # the full task, pruning included (from the top-level `pruning` section)
    arms: Arms
    seeds: tuple[Seed, ...]
    analysis: AnalysisSettings = AnalysisSettings()
    resources: Resources = Resources()
    execution: Execution = Execution()

    # What the driver's build of a task with its own code found (oracle.probe); None otherwise.
    _own_code: Any = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "the study name (it names the folder results/<name>/)")

    @field_validator("code", mode="before")
    @classmethod
    def _code(cls, v: Any, info: ValidationInfo) -> Any:
        from oracle.owncode import resolve_code_paths

        if isinstance(v, str):
            v = [v]
        if not isinstance(v, (list, tuple)) or not all(isinstance(p, str) and p for p in v):
            raise ValueError("must be a list of paths (folders or .py files), relative to the study file")
        base = (info.context or {}).get("base")
        try:
            return resolve_code_paths(v, base)
        except _CodePathError as exc:
            raise _FieldProblems([((exc.index,), exc.message)]) from None

    @model_validator(mode="after")
    def _precision_on_device(self) -> Study:
        # Before the probe: no point building a foreign model for a study refused anyway.
        # fp16 runs only on CUDA (silo.accel.check_precision). Trials without a GPU share
        # see none (Ray hides the GPUs from them), so they would all fail mid-sweep.
        device = self.task.device
        on_cpu = device.startswith("cpu") or (device == "auto" and not self.resources.gpu)
        if self.task.precision == "fp16" and on_cpu:
            where = f"task.device is {device}" if device != "auto" else "resources.gpu is 0"
            raise _FieldProblems([(("task", "precision"), f"fp16 needs a CUDA GPU, but the trials train on a CPU "
                                                          f"({where}); use bf16 or fp32")])
        return self

    @model_validator(mode="after")
    def _probe_own_code(self) -> Study:
        """A task with its own model or data is built once here, on the driver (oracle.probe)."""
        from oracle.probe import needs_probe, probe_task

        if not needs_probe(self.task):
            return self
        from oracle.probe import ProbeProblem

        try:
            task, found = probe_task(self.task)
        except ProbeProblem as exc:
            raise _FieldProblems([(exc.loc, exc.message)]) from None
        checked = self.model_copy(update={"task": task})
        checked._own_code = found
        return checked

    @property
    def own_code(self):
        """oracle.probe.OwnCode of a study with its own model or data, else None."""
        return self._own_code

    @field_validator("task", mode="wrap")
    @classmethod
    def _task(cls, value: Any, handler, info: ValidationInfo) -> TaskConfig:
        problems: list[tuple[tuple, str]] = []
        if isinstance(value, dict) and "pruning" in value:
            problems.append((("pruning",), "not allowed in task: use the top-level `pruning` section"))
            value = {k: v for k, v in value.items() if k != "pruning"}
        task = None
        try:
            task = handler(value)
        except ValidationError as exc:
            problems += _problems(exc, TaskConfig)
        # Registry checks read the raw values too, so they are reported with the rest.
        raw = value if isinstance(value, dict) else {}
        if "model_fingerprint" in raw:
            problems.append((("model_fingerprint",), "not a setting: silo-oracle computes it from the built model"))
        model = task.model if task else raw.get("model", TaskConfig().model)
        model_args = task.model_args if task else raw.get("model_args", {})
        data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
        dataset = task.data.name if task else data.get("name", TaskConfig().data.name)
        if isinstance(dataset, str) and ":" not in dataset:
            problems += [(("data", key), f"only for a dataset by import path or torchvision:CLASS, not {dataset!r}")
                         for key in ("args", "num_classes") if data.get(key) not in (None, {})]
        problems += _registry_problems(model, model_args, dataset)
        pruning = info.data.get("pruning")
        if task and pruning and pruning.strategy == "swd" and task.optimizer.weight_decay == 0:
            problems.append((("optimizer", "weight_decay"), "must be > 0 with pruning.strategy swd: SWD's "
                             "penalty is a(t) times the weight decay, so it would be 0"))
        if problems:
            raise _FieldProblems(problems)
        return task.model_copy(update={"pruning": pruning.config()}) if pruning else task

    @field_validator("arms")
    @classmethod
    def _schedules(cls, arms: Arms, info: ValidationInfo) -> Arms:
        # Build every chain arm's schedule now, so a bad setting fails at load time, not at
        # cycle q of a sweep. With task or pruning invalid (already reported), use defaults.
        task = info.data.get("task") or TaskConfig()
        rate = info.data["pruning"].rate if "pruning" in info.data else PruningConfig().rate
        cycles = info.data["pruning"].cycles if "pruning" in info.data else 0
        problems = []
        for name, arm in (("silo", arms.silo), ("silo_calibrated", arms.silo_calibrated)):
            try:
                if arm is not None:
                    problems += _planned_max_lr(_silo(arm, rate), cycles, (name,))
            except ValueError as exc:
                problems.append(((name,), str(exc)))
        for i, b in enumerate(arms.baselines):
            try:
                problems += _planned_max_lr(_baseline(b, task.shape, rate), cycles, ("baselines", i))
            except _FieldProblems as exc:
                problems += [(("baselines", i) + loc, msg) for loc, msg in exc.problems]
        if problems:
            raise _FieldProblems(problems)
        return arms

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_count(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):  # N means seeds 0..N-1
            if v < 1:
                raise ValueError(f"an int N means seeds 0..N-1 and must be >= 1, got {v}")
            return tuple(range(v))
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("must not be empty: a list of distinct ints >= 0, or an int N")
        dupes = sorted({s for s in v if v.count(s) > 1})
        if dupes:
            raise ValueError(f"duplicate seed(s) {', '.join(map(str, dupes))}: list each once")
        return tuple(sorted(v))

    # -- what the sweep asks

    @property
    def cycles(self) -> int:
        return self.pruning.cycles

    @property
    def grid(self) -> tuple[float, ...]:
        return self.arms.oracle.grid if self.arms.oracle else ()

    @property
    def refine(self) -> int:
        return self.arms.oracle.refine if self.arms.oracle else 0

    @property
    def beam(self) -> int | None:
        """The Oracle's beam width W, or None for the exhaustive search (and no Oracle)."""
        return self.arms.oracle.beam if self.arms.oracle else None

    def arm_names(self) -> list[str]:
        names = [n for n, arm in self.arms._named() if arm]
        return names + [b.arm_name for b in self.arms.baselines]

    def schedule(self, arm: str) -> Schedule:
        """The schedule of a chain arm (silo or a baseline)."""
        if arm == "oracle" and self.arms.oracle:
            raise ValueError("the oracle has no fixed schedule: it grid-searches max_lr every cycle")
        if arm == "silo" and self.arms.silo:
            return _silo(self.arms.silo, self.pruning.rate)
        if arm == "silo_calibrated" and self.arms.silo_calibrated:
            return _silo(self.arms.silo_calibrated, self.pruning.rate)
        for b in self.arms.baselines:
            if b.arm_name == arm:
                return _baseline(b, self.task.shape, self.pruning.rate)
        raise ValueError(f"study {self.name!r} has no arm {arm!r} (arms: {', '.join(self.arm_names())})")

    def task_for_arm(self, arm: str) -> TaskConfig:
        """The task an arm's runs train: its shape is part of what a run trains (and of its
        run id). The oracle trains with the task's own shape."""
        if arm == "oracle" and self.arms.oracle:
            return self.task
        shape = self.schedule(arm).shape_for(self.task.shape)
        return self.task if shape == self.task.shape else self.task.model_copy(update={"shape": shape})

    # -- writing it back

    def to_mapping(self) -> dict[str, Any]:
        """The resolved study as plain data, in file order; parse_study() of it equals self."""
        arms: dict[str, Any] = {}
        if self.arms.oracle:
            arms["oracle"] = {"grid": list(self.arms.oracle.grid), "refine": self.arms.oracle.refine,
                              "search": search_setting(self.beam)}
        if self.arms.silo:
            arms["silo"] = self.arms.silo.model_dump(mode="json")
        if self.arms.silo_calibrated:
            arms["silo_calibrated"] = self.arms.silo_calibrated.model_dump(mode="json", by_alias=True)
        if self.arms.baselines:
            arms["baselines"] = [b.to_mapping() for b in self.arms.baselines]
        code = {"code": list(self.code)} if self.code else {}
        return {
            "name": self.name,
            **code,
            # The fingerprint is the driver's build of the model, computed again on load.
            "task": self.task.model_dump(mode="json", exclude={"pruning", "model_fingerprint"}),
            # SWD's settings only where they are used (strategy swd), as in the run key.
            "pruning": self.pruning.model_dump(mode="json", exclude=None if self.pruning.strategy == "swd"
                                               else {"swd"}),
            "arms": arms,
            "seeds": list(self.seeds),
            "analysis": self.analysis.model_dump(mode="json"),
            "resources": self.resources.model_dump(mode="json"),
            "execution": self.execution.model_dump(mode="json"),
        }

    def resolved_yaml(self) -> str:
        """Every default filled in, the grid expanded and the seeds listed."""
        # default_flow_style=None: short lists ([0.01, 0.03]) on one line, mappings in blocks.
        body = yaml.safe_dump(self.to_mapping(), sort_keys=False, default_flow_style=None)
        return f"# study {self.name}, resolved: every default filled in\n{body}"


def search_setting(beam: int | None) -> str | dict:
    """The Oracle's `search` as the study file spells it (and the record keeps it)."""
    return "exhaustive" if beam is None else {"beam": int(beam)}


def _registry_problems(model: Any, model_args: Any, dataset: Any) -> list[tuple[tuple, str]]:
    problems: list[tuple[tuple, str]] = []
    models = _registry("silo.models", "MODELS")
    if isinstance(model, str) and ":" in model:  # an import path: imported and checked now
        from silo.models.foreign import ForeignArgumentError

        try:
            _registry("silo.models", "check_model_args")(model, model_args if isinstance(model_args, dict) else {})
        except ForeignArgumentError as exc:
            problems.append((("model_args",), str(exc)))
        except ValueError as exc:
            problems.append((("model",), str(exc)))
    elif isinstance(model, str):
        if model not in models:
            problems.append((("model",), f"unknown model {model!r} (known: {_known(models)})"))
        elif isinstance(model_args, dict):
            check = _registry("silo.models", "check_model_args")
            try:
                check(model, model_args)
            except ValueError as exc:
                problems.append((("model_args",), str(exc)))
            else:
                problems += _model_arg_values(model, model_args)
    datasets = _registry("silo.data", "DATASETS")
    if isinstance(dataset, str) and ":" in dataset:
        problems += _data_import_path(dataset)
    elif isinstance(dataset, str) and dataset not in datasets:
        problems.append((("data", "name"), f"unknown dataset {dataset!r} (known: {_known(datasets)})"))
    return problems


def _data_import_path(dataset: str) -> list[tuple[tuple, str]]:
    """A dataset by import path must name something importable (the probe checks the rest)."""
    if dataset.startswith("torchvision:"):
        return []
    from silo.models.foreign import ForeignCodeError, resolve_callable

    try:
        resolve_callable(dataset)
    except ForeignCodeError as exc:
        return [(("data", "name"), str(exc))]
    return []


def _model_arg_values(model: str, model_args: dict) -> list[tuple[tuple, str]]:
    """Each model option's value against its default: a flag must be a bool, a size or
    multiplier a number > 0 of its default's type (every numeric option of every model in
    silo.models is one), so `dim: -1` fails here rather than when a trial builds the model."""
    kwargs = _registry("silo.models", "model_kwargs")
    defaults = kwargs(model)
    problems = []
    for key, value in model_args.items():
        default = defaults.get(key)
        if isinstance(default, bool):
            ok, want = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, want = isinstance(value, int) and not isinstance(value, bool) and value >= 1, "an int >= 1"
        elif isinstance(default, float):
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
                  and math.isfinite(value) and value > 0)
            want = "a finite number > 0"
        else:
            continue
        if not ok:
            problems.append((("model_args", key), f"must be {want} (default {default!r}), got {_show(value)}"))
    return problems


# ----------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader (same safety) with two fixes that matter for study files:
    `1e-3` is a float (YAML 1.1 reads it as a string), and a repeated key is an error
    (YAML silently keeps the last one, e.g. a second `arms:` replacing the first)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # SafeLoader itself rejects unhashable keys
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark,
                    f"found duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 reads on/off/yes/no as booleans; study files mean the words (`compile: on`,
# `fuse: off`), so, as in YAML 1.2, only true/false are booleans.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def parse_study(data: Any, source: str = "<study>", base: str | Path | None = None) -> Study:
    """Validate already-loaded data (a mapping) into a Study, or raise StudyError.
    `base`: the folder relative `code:` paths start from (the study file's; default the cwd)."""
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise StudyError([f"{source}: the top level must be a mapping with keys "
                          f"{', '.join(_SECTIONS)}; got {got}"])
    try:
        return Study.model_validate(data, context={"base": base})
    except ValidationError as exc:
        problems = _problems(exc, Study)
    order = {k: i for i, k in enumerate(_SECTIONS)}  # report in file order, not field order
    problems.sort(key=lambda p: order.get(p[0][0] if p[0] else "", -1))
    raise StudyError([f"{_path(loc) or source}: {msg}" for loc, msg in problems])


def load_study(path: str | Path) -> Study:
    """Read and validate a study file; StudyError lists every problem, one line each."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.is_file() and size > MAX_STUDY_BYTES:
            # A study is a few KB; parsing megabytes of YAML in pure Python takes minutes.
            raise StudyError([f"{path}: {size / 1e6:.1f} MB is too large for a study file "
                              f"(at most {MAX_STUDY_BYTES // 1_000_000} MB)"])
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyError([f"{path}: no such file"]) from None
    except IsADirectoryError:
        raise StudyError([f"{path}: is a directory, not a study file"]) from None
    except UnicodeDecodeError:
        raise StudyError([f"{path}: not UTF-8 text"]) from None
    except OSError as exc:
        raise StudyError([f"{path}: cannot read ({exc.strerror})"]) from None
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None)
        raise StudyError([f"{path}: not valid YAML{where}" + (f": {problem}" if problem else "")]) from None
    return parse_study(data, str(path), base=path.resolve().parent)


# ----------------------------------------------------------------------------- error lines


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _validate_nested(model: type[BaseModel], data: Any) -> BaseModel:
    """Validate a sub-model inside a validator, keeping its field paths in the report."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _FieldProblems(_problems(exc, model)) from None


def _problems(exc: ValidationError, root: type) -> list[tuple[tuple, str]]:
    out = []
    for e in exc.errors():
        loc, err = tuple(e["loc"]), e.get("ctx", {}).get("error")
        if isinstance(err, _FieldProblems):
            out += [(loc + sub, msg) for sub, msg in err.problems]
        else:
            out.append((loc, _message(e, root)))
    return out


def _unwrap(ann: Any) -> Any:
    """Optional[X] and Annotated[X, ...] -> X."""
    while True:
        origin = get_origin(ann)
        if origin is Annotated:
            ann = get_args(ann)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(ann) if a is not type(None)]
            if len(args) != 1:
                return ann
            ann = args[0]
        else:
            return ann


def _field_at(root: type, loc: tuple) -> tuple[Any, list]:
    """The annotation and constraint metadata (Ge, Lt, ...) of the field at `loc`."""
    ann, meta = root, []
    for part in loc:
        ann = _unwrap(ann)
        if isinstance(part, int):  # an item of tuple[X, ...] / list[X]
            args = get_args(ann)
            if not args:
                return None, []
            ann = args[0]
            meta = list(get_args(ann)[1:]) if get_origin(ann) is Annotated else []
            meta = [m for x in meta for m in getattr(x, "metadata", [x])]
        elif isinstance(ann, type) and issubclass(ann, BaseModel) and part in ann.model_fields:
            info = ann.model_fields[part]
            ann, meta = info.annotation, list(info.metadata)
        else:
            return None, []
    return ann, meta


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _message(e: dict, root: type) -> str:
    kind, loc, value = e["type"], tuple(e["loc"]), e.get("input")
    if kind == "extra_forbidden":
        model = _unwrap(_field_at(root, loc[:-1])[0])
        allowed = list(getattr(model, "model_fields", {}))
        if model is Study:  # file order, not field order
            allowed = list(_SECTIONS)
        if model is TaskConfig:  # a study sets pruning in its own section
            allowed.remove("pruning")
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        mean = f"; did you mean {hint[0]!r}?" if hint else ""
        return f"unknown key {loc[-1]!r} (allowed: {', '.join(allowed)}){mean}"
    if kind == "missing":
        return "required, but missing"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"must be a mapping of keys to values, got {_show(value)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        ops = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
        bounds = [f"{op} {getattr(m, k)}" for m in _field_at(root, loc)[1]
                  for k, op in ops.items() if getattr(m, k, None) is not None]
        if bounds:
            return f"must be {' and '.join(bounds)}, got {_show(value)}"
    if kind == "value_error":
        msg = str(e["ctx"]["error"])
    else:  # pydantic's own wording, made to read like ours
        msg = re.sub(r"^Input should be", "must be", e["msg"]).split(", unable to")[0]
    scalar = value is None or isinstance(value, (str, int, float, bool))
    return f"{msg}, got {_show(value)}" if scalar and repr(value) not in msg else msg
