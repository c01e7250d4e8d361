"""What one trial trains: the config the searcher writes and the trainable reads.

Ray Tune carries a trial's config as a plain dict (it deep-copies and merges it into the
trial's spec), so the searcher hands Tune `TrialConfig(...).to_tune()` and the trainable
rebuilds the model with `TrialConfig.from_tune(config)` when the trial starts. A config that
does not fit (written by a driver of another version: a key missing, unknown, or of the
wrong type) is refused there in one line naming the key, before anything is trained.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from oracle.errors import invalid
from silo.accel import ExecutionConfig
from silo.config import TaskConfig

# A trial's result status when it was released early and ends without training (the Oracle
# stopped, or its slot was withdrawn): the searcher frees its slot, the ledger counts nothing.
# A run's own statuses are silo.status.RunStatus.
SKIPPED = "skipped"


class TrialConfig(BaseModel):
    """A chain arm's cycles first_cycle.. at max_lrs (one seed, from `parent_run_id`), or
    (`round`) an Oracle trial: round first_cycle's values max_lrs for each of `seeds`, each
    from its parent in `parent_run_ids` (None: released early, it waits at
    `wait_for_winners` for the previous round's winners). `seed` and `parent_run_id` are
    the first seed's, what a one-seed trial shows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    arm: str
    seed: int
    first_cycle: int
    max_lrs: tuple[float, ...]
    parent_run_id: str | None
    wait_for_winners: str | None
    task: TaskConfig
    store: str  # the run store's folder, as every worker sees it
    threads: int  # torch threads: the CPUs the trial holds
    round: bool  # an Oracle round (the values of one cycle), else a chain arm
    fuse: Literal["auto", "on", "off"]
    execution: ExecutionConfig
    seeds: tuple[int, ...]
    parent_run_ids: tuple[str | None, ...]

    @model_validator(mode="after")
    def _one_parent_a_seed(self) -> TrialConfig:
        if len(self.seeds) != len(self.parent_run_ids):
            raise ValueError(f"{len(self.seeds)} seeds but {len(self.parent_run_ids)} parent_run_ids")
        return self

    @property
    def shares(self) -> list[tuple[int, str | None]]:
        """The trial's (seed, parent run id) pairs: one, or several with seeds fused."""
        return list(zip(self.seeds, self.parent_run_ids))

    def to_tune(self) -> dict[str, Any]:
        """The config as Tune carries it: plain JSON values."""
        return self.model_dump(mode="json")

    @classmethod
    def from_tune(cls, config: dict[str, Any]) -> TrialConfig:
        """The trial's config from Tune's dict; OracleError naming the first key that does
        not fit (a config written by another version's driver)."""
        try:
            return cls.model_validate(config)
        except ValidationError as exc:
            raise invalid("trial config", exc, whole="config", note="written by a driver of another silo-oracle "
                          "version? rerun the study with this one") from None
