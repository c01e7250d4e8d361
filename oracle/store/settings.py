"""A study's recorded settings: what analysis needs besides the runs, as one typed value.

The record keeps them as the user attrs of `<study name>/@study` (oracle.store.record), a
JSON object; `StudySettings.to_attrs` writes that object and `StudySettings.from_attrs` is the
one place that reads it back, in every form a record has been written in:

- 2026-11 (the first record): no `refine`, `search` or `task_identity`; `noise_k` always a
  number (the rule it belonged to is retired: the report says so whenever a record gives it).
- later: `refine` (int), then `search` (`exhaustive` or {beam: W}), then `task_identity`
  ({arm: the task's identity JSON}), then `noise_k` null unless the study still gives it.
- before `@study` existed, every arm's study carried the settings (plus its `arm`); the
  reader merges those (oracle.store.record) before they reach from_attrs.
- a record without `prune_rate` (hand-built ones) takes it from its `study_yaml`.

Fields a record does not give are None (or empty): the judge then falls back to what the rows
show (oracle.judge.lineage), or, for the tolerance, to the rule's default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from oracle.errors import OracleError, invalid
from oracle.store.arms import SILO

SCHEMA = 1
EXHAUSTIVE = "exhaustive"

# A planned max_lr per cycle; None where json_safe wrote a NaN (a schedule that gave none).
Plan = tuple[float | None, ...]


class StudySettings(BaseModel):
    """The study as its last invocation recorded it (docs/design.md, "Flow of one study")."""

    # Unknown keys are ignored: a record written by newer code still reads.
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    record_schema: int = Field(default=SCHEMA, alias="schema")
    study: str | None = None
    arms: tuple[str, ...] | None = None  # None: not recorded (the rows' arms then)
    cycles: int | None = None  # None (or 0): not recorded
    seeds: tuple[int, ...] | None = None
    grid: tuple[float, ...] | None = None
    refine: int = 0
    beam: int | None = None  # the Oracle's beam width W (`search: {beam: W}`); None: exhaustive
    tolerance: float | None = None  # delta; None: not recorded (the rule's default then)
    noise_k: float | None = None  # the retired rule's setting, only when a study still gives it
    prune_rate: float | None = None
    planned_max_lr: dict[str, Plan] = Field(default_factory=dict)  # {chain arm: max_lr per cycle}
    silo_max_lr: Plan | None = None  # SILO's planned max_lr per cycle
    task_identity: dict[str, dict[str, Any]] | None = None  # {arm: its task's identity JSON}
    study_yaml: str | None = None  # the resolved study file
    recorded_with: dict[str, Any] = Field(default_factory=dict)  # versions and git commit

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any] | StudySettings) -> StudySettings:
        """The settings from a record's attrs, in any form a record was written in (module
        doc); OracleError naming the field when one holds what no writer wrote."""
        if isinstance(attrs, StudySettings):
            return attrs
        data = dict(attrs)
        data["beam"] = _beam(data.pop("search", None))
        for key in ("cycles", "refine"):  # `or`: a 0 or null said "not recorded" as well
            data[key] = data.get(key) or (None if key == "cycles" else 0)
        for key in ("planned_max_lr", "recorded_with"):
            if data.get(key) is None:
                data.pop(key, None)
        if data.get("prune_rate") is None:
            data["prune_rate"] = _yaml_prune_rate(data.get("study_yaml"))
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise invalid("the record's study settings", exc, whole="settings", note="got {input!r}") from None

    def to_attrs(self) -> dict[str, Any]:
        """The JSON object the record keeps (oracle.store.record), in the order it has always
        been written."""
        return {
            "schema": self.record_schema,
            "study": self.study,
            "arms": list(self.arms or []),
            "cycles": self.cycles,
            "seeds": list(self.seeds or []),
            "grid": list(self.grid or []),
            "refine": self.refine,
            "search": EXHAUSTIVE if self.beam is None else {"beam": self.beam},
            "tolerance": self.tolerance,
            "noise_k": self.noise_k,
            "prune_rate": self.prune_rate,
            "planned_max_lr": {arm: list(plan) for arm, plan in self.planned_max_lr.items()},
            "silo_max_lr": None if self.silo_max_lr is None else list(self.silo_max_lr),
            "task_identity": self.task_identity,
            "study_yaml": self.study_yaml,
            "recorded_with": self.recorded_with,
        }

    @property
    def silo_plan(self) -> Plan | None:
        """SILO's planned max_lr per cycle: its chain plan, else the record's `silo_max_lr`."""
        return self.planned_max_lr.get(SILO) or self.silo_max_lr

    @property
    def chain_plans(self) -> dict[str, Plan]:
        """Each chain arm's planned max_lr per cycle, SILO's from `silo_max_lr` when a record
        gives only that."""
        if self.silo_max_lr and SILO not in self.planned_max_lr:
            return {**self.planned_max_lr, SILO: self.silo_max_lr}
        return dict(self.planned_max_lr)


def _beam(search: object) -> int | None:
    """`search` as recorded: absent or `exhaustive` (None), or {beam: W}."""
    if search is None or search == EXHAUSTIVE:
        return None
    if isinstance(search, Mapping) and set(search) == {"beam"}:
        width = search["beam"]
        if width is None or width == 0:  # a beam of 0 was read as exhaustive
            return None
        if isinstance(width, int) and not isinstance(width, bool) and width > 0:
            return width
    raise OracleError(f"the record's study settings: search: neither {EXHAUSTIVE!r} nor {{beam: W}} "
                      f"with W a positive integer (got {search!r})")


def _yaml_prune_rate(study_yaml: object) -> float | None:
    """pruning.rate of a recorded study file, for records without `prune_rate`."""
    if not isinstance(study_yaml, str) or not study_yaml:
        return None
    body = yaml.safe_load(study_yaml) or {}
    rate = (body.get("pruning") or {}).get("rate") if isinstance(body, dict) else None
    return None if rate is None else float(rate)
