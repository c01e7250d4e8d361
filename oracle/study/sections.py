"""The sections of a study file, each a pydantic schema: pruning (with the cycles), the
Oracle's grid (a list or a log range) and search, SILO, a calibrated SILO, the baselines, the
analysis settings, resources and execution. Checks that need more than one section are the
Study's (oracle.study.model).

The models reuse silo.config's TaskConfig and PruningConfig; a section adds only what a study
has on top of a task.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StrictInt, field_validator, model_validator

from oracle.judge.selection import DEFAULT_TOLERANCE, retired_rule_line
from oracle.study.problems import FieldProblems, shown, validate_nested
from silo.accel import ExecutionConfig
from silo.config import PruningConfig, Strict
from silo.schedules import BASELINES

# Names end up in paths (results/<name>/) and in tables, so keep them to safe characters.
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
# The top-level sections in file order (error lines are reported in it).
_SECTIONS = ("name", "code", "task", "pruning", "arms", "seeds", "analysis", "resources", "execution")

PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Seed = Annotated[StrictInt, Field(ge=0)]


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


def _reject_duplicates(values, noun: str, hint: str) -> None:
    """One error naming every value listed more than once (a study's seeds, a grid)."""
    dupes = sorted({v for v in values if values.count(v) > 1})
    if dupes:
        raise ValueError(f"duplicate {noun}(s) {', '.join(map(str, dupes))}: {hint}")


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
            raise FieldProblems([(("swd",), f"only used by strategy swd (strategy is {self.strategy!r}): "
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
            raise FieldProblems([(("high",), f"must be > low ({self.low}), got {self.high}")])
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
            return validate_nested(BeamSearch, v)
        raise ValueError(f"must be `exhaustive` or {{beam: W}} with W an int >= 1, got {shown(v)}")

    @property
    def beam(self) -> int | None:
        """The beam's width W, or None for the exhaustive search."""
        return None if self.search == "exhaustive" else self.search.beam

    @field_validator("grid", mode="before")
    @classmethod
    def _expand(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return validate_nested(LogRange, v).values()
        return v

    @field_validator("grid")
    @classmethod
    def _distinct(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v:
            raise ValueError("must not be empty: list max_lr values, or give {low, high, count}")
        _reject_duplicates(v, "value", "list each max_lr once")
        if len(v) < 2:
            raise ValueError("needs at least 2 max_lr values: an optimal interval needs a grid")
        return tuple(sorted(v))

    @model_validator(mode="after")
    def _refinable(self) -> OracleArm:
        if self.refine and len(self.grid) < 3:
            raise FieldProblems([(("refine",), f"needs a grid of at least 3 values, got {len(self.grid)}")])
        if self.beam is not None and len(self.grid) < MIN_BEAM_GRID:
            raise FieldProblems([(("search",), f"a beam needs a grid of at least {MIN_BEAM_GRID} values, "
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
            raise FieldProblems([(("from",), f"must be the path of a calibration.json, got {shown(path)}")])
        from oracle.errors import OracleError
        from oracle.judge.calibration_file import read_calibration

        try:
            settings = read_calibration(path)["settings"]
        except OracleError as exc:
            raise FieldProblems([(("from",), exc.message)]) from None
        keys = ("offset", "alpha", "beta", "delay")
        differ = [((k,), f"{data[k]!r} differs from {settings[k]!r} in {path}: give only `from`")
                  for k in keys if k in data and data[k] != settings[k]]
        if differ:
            raise FieldProblems(differ)
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
            raise FieldProblems(problems)
        return self

    def _named(self) -> tuple:
        return (("oracle", self.oracle), ("silo", self.silo), ("silo_calibrated", self.silo_calibrated))


class AnalysisSettings(Strict):
    """The Oracle's optimal interval (docs/design.md): every max_lr whose expected val accuracy
    is within delta = `tolerance` of the best's, whatever the number of seeds.

    `noise_k` belonged to the previous rule (tol = max(tolerance, noise_k * sd)), which made
    the interval narrow as seeds were added. A study that still gives it is read (its value
    checked as before, so a broken one is still a one-line error) but it changes nothing:
    `changes()` says so, for `validate`, `run` and the report (the record keeps it)."""

    tolerance: float = Field(DEFAULT_TOLERANCE, ge=0, lt=1, allow_inf_nan=False)  # accuracy as a fraction
    noise_k: float | None = Field(None, ge=0, allow_inf_nan=False)  # the previous rule's; ignored

    def changes(self) -> list[str]:
        """One line per setting whose meaning changed since the study was written."""
        if self.noise_k is None:
            return []
        return [retired_rule_line(self.tolerance, self.noise_k)]


class Resources(Strict):
    """Ray resources per trial. Fractional gpu packs several small trials on one GPU."""

    cpu: float = Field(1.0, gt=0, allow_inf_nan=False)
    gpu: float = Field(0.0, ge=0, allow_inf_nan=False)
    max_concurrent: StrictInt | None = Field(None, ge=1)  # None: as many as fit


class Execution(ExecutionConfig):
    """How the Oracle's rounds are executed; never part of a run's identity (docs/design.md).

    fuse: `on` trains each trial's grid values as one fused model (silo.round), `off` one
    after another, `auto` fuses on CUDA and, on a CPU, only the networks bench/fused_round.py
    measured faster fused there (the MNIST-1D models). fuse_seeds: `on` lets one fused trial
    carry the rounds of several seeds of a cycle (each member its own seed's batches, parent
    and mask), `auto` does so on CUDA, where one seed's values are too few to fill the GPU.
    max_members: the most runs one trial carries, values x seeds (a large round is split
    into trials of at most this many, to bound memory). channels_last, compile,
    cudnn_benchmark: how each step runs (silo.accel.ExecutionConfig).
    """

    fuse: Literal["auto", "on", "off"] = "auto"
    fuse_seeds: Literal["auto", "on", "off"] = "auto"
    max_members: StrictInt = Field(16, ge=1, le=256)


