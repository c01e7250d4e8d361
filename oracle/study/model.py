"""The Study: its sections put together, and the checks that need more than one of them.

The task takes the top-level pruning section (and the registry checks of its model and
data), each chain arm's schedule is built against the task's shape, pruning rate and cycles
(so a bad setting fails at load time, not at cycle q of a sweep), fp16 is refused for trials
on a CPU, and a task with its own model or data is built once on the driver (oracle.study.probe).
Then what the sweep asks of a study (cycles, grid, arms, each arm's schedule and task) and
the resolved study written back.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

import yaml
from pydantic import PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator

from oracle.study.owncode import CodePathError as _CodePathError
from oracle.study.problems import FieldProblems, field_problems, shown
from oracle.study.sections import (
    _SECTIONS,
    AnalysisSettings,
    Arms,
    BaselineArm,
    CalibratedSiloArm,
    Execution,
    Resources,
    Seed,
    SiloArm,
    StudyPruning,
    _check_name,
    _known,
    _registry,
    _reject_duplicates,
)
from silo.config import PruningConfig, ShapeConfig, Strict, TaskConfig
from silo.schedules import BASELINES, Schedule, SiloPeak, baseline, silo_schedule

# ----------------------------------------------------------------------------- schedules


def _silo(arm: SiloArm | CalibratedSiloArm, prune_rate: float) -> Schedule:
    return silo_schedule(prune_rate, arm.offset, arm.alpha, arm.beta, arm.delay)


def _baseline(arm: BaselineArm, task_shape: ShapeConfig, prune_rate: float) -> Schedule:
    settings = dict(arm.settings)
    # Baselines whose peak follows the pruned fraction (s_cyc) take the study's prune rate,
    # so that it cannot disagree with the rate the pruning actually uses.
    if "prune_rate" in inspect.signature(BASELINES[arm.name]).parameters:
        if "prune_rate" in settings:
            raise FieldProblems([(("prune_rate",), "not a setting here: it is pruning.rate")])
        settings["prune_rate"] = prune_rate
    if "max_lr" in settings:  # checked here so the message names max_lr, not the peak's field
        v = settings["max_lr"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            raise FieldProblems([(("max_lr",), f"must be a finite number > 0, got {v!r}")])
    try:
        return baseline(arm.name, task_shape, **settings)
    except ValidationError as exc:  # a shape setting (warmup, milestones, base...) is bad
        raise FieldProblems(field_problems(exc, ShapeConfig)) from None
    except (ValueError, TypeError) as exc:
        raise FieldProblems([((), str(exc))]) from None


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
    listed = ", ".join(f"{v!r} at cycle {q}" for q, v in bad[:3]) + (", ..." if len(bad) > 3 else "")
    # A peak that follows SILO's S-curve is positive at every cycle exactly when offset > 0.
    field = ("offset",) if isinstance(schedule.peak, SiloPeak) else ()
    return [(loc + field, f"the planned max_lr is {listed}; it must be a finite number > 0 "
                          "at every cycle" + (" (set offset > 0)" if field else ""))]


# ----------------------------------------------------------------------------- the study


class Study(Strict):
    # code first: the model and data it names are imported when task is validated.
    # pruning is declared before task so that task's validator can fold it into the task.
    name: str
    code: tuple[str, ...] = ()  # folders or .py files of the user's code (oracle.study.owncode)
    pruning: StudyPruning
    task: TaskConfig  # the full task, pruning included (from the top-level `pruning` section)
    arms: Arms
    seeds: tuple[Seed, ...]
    analysis: AnalysisSettings = AnalysisSettings()
    resources: Resources = Resources()
    execution: Execution = Execution()

    # What the driver's build of a task with its own code found (oracle.study.probe); None otherwise.
    _own_code: Any = PrivateAttr(None)
    # The top-level keys in file order, for the error lines (oracle.study.problems).
    FILE_ORDER: ClassVar[tuple[str, ...]] = _SECTIONS

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "the study name (it names the folder results/<name>/)")

    @field_validator("code", mode="before")
    @classmethod
    def _code(cls, v: Any, info: ValidationInfo) -> Any:
        from oracle.study.owncode import resolve_code_paths

        if isinstance(v, str):
            v = [v]
        if not isinstance(v, (list, tuple)) or not all(isinstance(p, str) and p for p in v):
            raise ValueError("must be a list of paths (folders or .py files), relative to the study file")
        base = (info.context or {}).get("base")
        try:
            return resolve_code_paths(v, base)
        except _CodePathError as exc:
            raise FieldProblems([((exc.index,), exc.message)]) from None

    @model_validator(mode="after")
    def _precision_on_device(self) -> Study:
        # Before the probe: no point building a foreign model for a study refused anyway.
        # fp16 runs only on CUDA (silo.accel.check_precision). Trials without a GPU share
        # see none (Ray hides the GPUs from them), so they would all fail mid-sweep.
        device = self.task.device
        on_cpu = device.startswith("cpu") or (device == "auto" and not self.resources.gpu)
        if self.task.precision == "fp16" and on_cpu:
            where = f"task.device is {device}" if device != "auto" else "resources.gpu is 0"
            raise FieldProblems([(("task", "precision"), f"fp16 needs a CUDA GPU, but the trials train on a CPU "
                                                         f"({where}); use bf16 or fp32")])
        return self

    @model_validator(mode="after")
    def _probe_own_code(self) -> Study:
        """A task with its own model or data is built once here, on the driver (oracle.study.probe)."""
        from oracle.study.probe import needs_probe, probe_task

        if not needs_probe(self.task):
            return self
        from oracle.study.probe import ProbeProblem

        try:
            task, found = probe_task(self.task, self.code)
        except ProbeProblem as exc:
            raise FieldProblems([(exc.loc, exc.message)]) from None
        checked = self.model_copy(update={"task": task})
        checked._own_code = found
        return checked

    @property
    def own_code(self):
        """oracle.study.probe.OwnCode of a study with its own model or data, else None."""
        return self._own_code

    @field_validator("task", mode="wrap")
    @classmethod
    def _task(cls, value: Any, handler, info: ValidationInfo) -> TaskConfig:
        problems: list[tuple[tuple, str]] = []
        if isinstance(value, dict) and "pruning" in value:
            problems.append((("pruning",), "not allowed in task: use the top-level `pruning` section"))
            value = {k: v for k, v in value.items() if k != "pruning"}
        task: TaskConfig | None = None
        try:
            task = handler(value)
        except ValidationError as exc:
            problems += field_problems(exc, TaskConfig)
        # Registry checks read the raw values too, so they are reported with the rest.
        raw = value if isinstance(value, dict) else {}
        if "model_fingerprint" in raw:
            problems.append((("model_fingerprint",), "not a setting: silo-oracle computes it from the built model"))
        model = task.model if task else raw.get("model", TaskConfig().model)
        model_args = task.model_args if task else raw.get("model_args", {})
        data: dict = raw["data"] if isinstance(raw.get("data"), dict) else {}
        dataset = task.data.name if task else data.get("name", TaskConfig().data.name)
        if isinstance(dataset, str) and ":" not in dataset:
            problems += [(("data", key), f"only for a dataset by import path or torchvision:CLASS, not {dataset!r}")
                         for key in ("args", "num_classes") if data.get(key) not in (None, {})]
        problems += _registry_problems(model, model_args, dataset)
        from oracle.study.owncode import not_found_words

        code = info.data.get("code") or ()  # where a module not found was looked for
        problems = [(loc, not_found_words(text, code)) for loc, text in problems]
        pruning = info.data.get("pruning")
        if task and pruning and pruning.strategy == "swd" and task.optimizer.weight_decay == 0:
            problems.append((("optimizer", "weight_decay"), "must be > 0 with pruning.strategy swd: SWD's "
                             "penalty is a(t) times the weight decay, so it would be 0"))
        if problems or task is None:  # no task without a problem said: handler raised
            raise FieldProblems(problems)
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
            except FieldProblems as exc:
                problems += [(("baselines", i) + loc, msg) for loc, msg in exc.problems]
        if problems:
            raise FieldProblems(problems)
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
        _reject_duplicates(v, "seed", "list each once")
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

    @property
    def search_setting(self) -> str | dict:
        """The Oracle's `search` as the study file spells it (and the record keeps it)."""
        return "exhaustive" if self.beam is None else {"beam": int(self.beam)}

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
                              "search": self.search_setting}
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
            "analysis": self.analysis.model_dump(mode="json", exclude_none=True),
            "resources": self.resources.model_dump(mode="json"),
            "execution": self.execution.model_dump(mode="json"),
        }

    def resolved_yaml(self) -> str:
        """Every default filled in, the grid expanded and the seeds listed."""
        # default_flow_style=None: short lists ([0.01, 0.03]) on one line, mappings in blocks.
        body = yaml.safe_dump(self.to_mapping(), sort_keys=False, default_flow_style=None)
        return f"# study {self.name}, resolved: every default filled in\n{body}"


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
            problems.append((("model_args", key), f"must be {want} (default {default!r}), got {shown(value)}"))
    return problems
