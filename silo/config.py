"""Typed configuration of a task: what one run trains.

These models are the single source of truth for task settings. `oracle` builds its study
files on top of them, and the run identity is a hash of `TaskConfig.identity()`.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

# A duration within a cycle: an int is a number of optimizer steps, a string "<x>ep" is a
# (possibly fractional) number of epochs. Warmups in the SILO paper are given in steps and
# milestones in epochs, so both must be expressible.
Duration = int | str
_EPOCHS = re.compile(r"^\s*(\d+(\.\d*)?|\.\d+)\s*ep(ochs?)?\s*$")


def duration_steps(value: Duration, steps_per_epoch: int) -> int:
    """Resolve a Duration to optimizer steps."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int):
        return value
    match = _EPOCHS.match(value)
    if not match:
        raise ValueError(f"invalid duration {value!r}: use an int (steps) or '<x>ep' (epochs)")
    return int(round(float(match.group(1)) * steps_per_epoch))


def _check_duration(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be an int (steps) or a string '<x>ep' (epochs)")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must be >= 0")
        return value
    if isinstance(value, str) and _EPOCHS.match(value):
        return value.strip()
    raise ValueError("must be an int (steps) or a string '<x>ep' (epochs), e.g. 2000 or '25ep'")


class Strict(BaseModel):
    """Base of the config models: unknown keys are errors and instances are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# fp32 trains as before; bf16 and fp16 autocast the forward pass and loss (silo.accel).
Precision = Literal["fp32", "bf16", "fp16"]

ShapeName = Literal[
    "warmup_step", "warmup_cosine", "cosine", "step", "cyclical", "one_cycle", "constant"
]


class ShapeConfig(Strict):
    """The within-cycle LR curve, scaled by max_lr (docs/design.md: lr = max_lr * shape(t/T))."""

    name: ShapeName = "warmup_step"
    warmup: Duration = 0  # linear warmup length (warmup_step, warmup_cosine)
    milestones: tuple[Duration, ...] = ()  # x gamma at each (warmup_step, step)
    gamma: float = Field(0.1, gt=0, le=1)
    floor: float = Field(0.0, ge=0, le=1)  # cosine shapes end at max_lr * floor
    base: float = Field(0.1, ge=0, le=1)  # cyclical: lowest lr as a fraction of max_lr
    waves: int = Field(1, ge=1)  # cyclical: triangles per cycle
    pct_start: float = Field(0.3, gt=0, lt=1)  # one_cycle: fraction of steps rising

    @field_validator("warmup", mode="before")
    @classmethod
    def _warmup(cls, v: Any) -> Any:
        return _check_duration(v)

    @field_validator("milestones", mode="before")
    @classmethod
    def _milestones(cls, v: Any) -> Any:
        if not isinstance(v, (list, tuple)):
            raise ValueError("must be a list of durations")
        return tuple(_check_duration(x) for x in v)


Beta = Annotated[float, Field(ge=0, lt=1)]  # Adam's moment decay rates (torch: 0 <= beta < 1)


class OptimizerConfig(Strict):
    name: Literal["sgd", "adam", "rmsprop"] = "sgd"
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd, rmsprop
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)
    betas: tuple[Beta, Beta] = (0.9, 0.999)  # adam
    alpha: float = Field(0.99, gt=0, lt=1)  # rmsprop smoothing
    eps: float = Field(1e-8, gt=0)


_REWIND = re.compile(r"^(keep|init|reinit|early:\d+)$")


class SwdConfig(Strict):
    """Selective Weight Decay (strategy `swd`, silo.pruning.swd): the weights the cycle's cut
    will remove get an extra decay a(t) times the optimizer's weight decay, a(t) rising
    geometrically from a_min at the cycle's first step towards a_max. The defaults are the
    authors' (Tessier et al. 2022, arXiv 2011.10520; their code's --a_min 0.1, --a_max 1e5)."""

    a_min: float = Field(0.1, gt=0, allow_inf_nan=False)
    a_max: float = Field(1e5, gt=0, allow_inf_nan=False)
    # How the weights to remove are ranked: by |w| across all prunable layers, or within each.
    criterion: Literal["global_magnitude", "layerwise_magnitude"] = "global_magnitude"

    @field_validator("a_max")
    @classmethod
    def _rising(cls, v: float, info: ValidationInfo) -> float:
        a_min = info.data.get("a_min")  # absent when a_min itself is invalid (reported already)
        if a_min is not None and v < a_min:
            raise ValueError(f"must be >= a_min ({a_min}): a(t) rises from a_min to a_max")
        return v


class PruningConfig(Strict):
    """How each cycle q >= 1 prunes: its parent at the start (every strategy but `swd`), or
    its own weights at the end (`swd`). The number of cycles is not here: a run's result does
    not depend on how many cycles follow it."""

    strategy: str = "global_magnitude"
    rate: float = Field(0.2, gt=0, lt=1)  # fraction of the surviving prunable weights removed per cycle
    rewind: str = "keep"  # keep | init | reinit | early:K
    # Which Conv/Linear weights are prunable (silo.pruning.mask.name_matches): module-name
    # prefixes or globs. include empty: all of them; exclude: never pruned (e.g. the classifier).
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    score_batches: int = Field(4, ge=1)  # data-driven strategies (gradient) score on this many batches
    swd: SwdConfig = SwdConfig()  # strategy `swd` only

    @field_validator("rewind")
    @classmethod
    def _rewind(cls, v: str) -> str:
        if not _REWIND.match(v):
            raise ValueError("must be one of keep, init, reinit, early:K (K a step number)")
        return v

    @property
    def rewind_step(self) -> int | None:
        return int(self.rewind.split(":")[1]) if self.rewind.startswith("early:") else None


class DataConfig(Strict):
    # A built-in name, `torchvision:CLASS` or `package.module:callable` (silo.data.foreign).
    name: str = "mnist1d"
    # Where torchvision datasets live; None falls back to $SILO_DATA_ROOT. Not part of the
    # run identity: moving the files does not change results.
    root: str | None = None
    val_fraction: float = Field(0.1, gt=0, lt=1)
    augment: bool = True
    num_samples: int | None = Field(None, ge=100)  # mnist1d only: total generated samples
    # torchvision:CLASS and import-path datasets only: keyword arguments of the class or
    # factory, and the number of classes when the training labels do not show them all.
    args: dict[str, Any] = Field(default_factory=dict)
    num_classes: int | None = Field(None, ge=2)

    @property
    def is_foreign(self) -> bool:
        """`torchvision:CLASS` or `package.module:callable`: data silo does not augment."""
        return ":" in self.name

    @field_validator("augment")
    @classmethod
    def _augment(cls, v: bool, info: ValidationInfo) -> bool:
        if v and ":" in str(info.data.get("name", "")):
            raise ValueError("applies to the built-in datasets only: silo applies no augmentation to your own "
                             "data (augment in your factory or Dataset, and leave augment out)")
        return v

    @model_validator(mode="after")
    def _no_augmentation_of_foreign_data(self) -> DataConfig:
        # What it does, shown as it is: silo never augments a dataset by import path (frozen:
        # set in place while the instance is being built, as a default would be).
        if self.is_foreign and self.augment:
            self.__dict__["augment"] = False
        return self


class TaskConfig(Strict):
    data: DataConfig = DataConfig()
    model: str = "mnist1d_cnn"
    model_args: dict[str, Any] = Field(default_factory=dict)
    # Of a model given by import path (torchvision:NAME, package.module:callable): the names,
    # shapes and dtypes of its parameters and buffers as built (silo.models.foreign), set
    # by the driver's check of the study, so an edited architecture gets new run ids.
    model_fingerprint: str | None = None
    epochs: float = Field(4.0, gt=0)  # per cycle
    batch_size: int = Field(64, ge=1)
    optimizer: OptimizerConfig = OptimizerConfig()
    shape: ShapeConfig = ShapeConfig()
    pruning: PruningConfig = PruningConfig()
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # The forward pass's and loss's float format (silo.accel); weights stay float32.
    precision: Precision = "fp32"
    # Fields below cannot change results and stay out of the run identity.
    device: str = "auto"
    eval_batch_size: int = Field(1024, ge=1)
    # The learning curve's val evaluation every this many epochs (silo.curves; 0: only the
    # final one; auto: as often as costs at most 3 % of training). Never changes a result.
    eval_every: int | Literal["auto"] = "auto"

    @field_validator("eval_every", mode="before")
    @classmethod
    def _eval_every(cls, v: Any) -> Any:
        # One message for the two forms, not one per member of the union.
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            return v
        raise ValueError("must be a whole number of epochs >= 0 (0: only the final evaluation) or 'auto'")

    @model_validator(mode="after")
    def _finite(self) -> TaskConfig:
        if not math.isfinite(self.epochs):
            raise ValueError("epochs must be finite")
        return self

    def identity(self) -> dict[str, Any]:
        """The fields that determine a run's result and differ from their defaults (docs/design.md,
        run identity). Leaving defaults out is what lets the code grow: a new setting with a
        default renames no stored run. So a default must never change its value: that would
        silently give old run ids to new results."""
        skip = _NOT_IDENTITY
        if self.pruning.strategy != "swd":  # SWD's settings change only SWD's results
            skip = {**skip, "pruning": {"swd": True}}
        if self.data.is_foreign:  # never augmented (DataConfig): its flag changes nothing
            skip = {**skip, "data": {**skip["data"], "augment": True}}
        return _non_default(self, skip)


# Fields that cannot change a run's result: paths, device, batch size and cadence of evaluation.
_NOT_IDENTITY: dict[str, Any] = {"device": True, "eval_batch_size": True, "eval_every": True,
                                 "data": {"root": True}}


def _non_default(model: BaseModel, skip: dict[str, Any]) -> dict[str, Any]:
    """`model`'s fields that differ from their defaults, as JSON data, nested configs
    recursively (a nested config whose fields are all at their defaults is left out).
    Assumes a nested config's default is its class's own default instance, as in TaskConfig."""
    out: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        if skip.get(name) is True:
            continue
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            nested = _non_default(value, skip.get(name, {}))
            if nested:
                out[name] = nested
        elif value != info.get_default(call_default_factory=True):
            out[name] = model.model_dump(mode="json", include={name})[name]
    return out
