"""The driver's check of a study that names its own code (docs/design.md, "A researcher's own task").

Before anything is written, a task whose model or data is an import path (or torchvision:...)
is built once on the driver, on the CPU: the data through silo.data (every check of the
contract in silo.data.foreign), the model with the run seed 0, one batch through it. What can
go wrong is then a `field: message` problem of the study (exit 2), never a trial failing an
hour in. The check also gives what the run identity needs (the architecture fingerprint) and
what `validate` prints: which weights will be pruned, whether the rounds can be fused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from oracle.errors import OracleError
from silo.config import TaskConfig
from silo.models.foreign import ForeignArgumentError, ForeignCodeError, architecture_fingerprint, is_import_path


class ProbeProblem(ValueError):
    """One problem at a study field: `loc` below the study's top level, e.g. ("task", "model")."""

    def __init__(self, loc: tuple, message: str) -> None:
        super().__init__(message)
        self.loc, self.message = loc, message


@dataclass(frozen=True)
class OwnCode:
    """What the driver's build of the task found."""

    model: str
    fingerprint: str | None  # of a model by import path; None for a registered one
    num_classes: int
    input_shape: tuple[int, ...]
    num_train: int
    prunable: tuple[tuple[str, int], ...]  # (parameter, weights) in model order
    total_params: int
    cannot_fuse: str | None  # why torch.func cannot fuse the model; None: it can

    @property
    def prunable_weights(self) -> int:
        return sum(n for _, n in self.prunable)

    def summary(self) -> str:
        share = self.prunable_weights / max(1, self.total_params)
        fp = f", architecture {self.fingerprint}" if self.fingerprint else ""
        return (f"own code: {self.model}{fp}, input {self.input_shape}, {self.num_classes} classes, "
                f"{self.num_train} training examples; {len(self.prunable)} prunable layers, "
                f"{self.prunable_weights:,} of {self.total_params:,} parameters ({share:.1%})")

    def lines(self) -> list[str]:
        """The summary, then the weights pruning will see, layer by layer."""
        width = max(len(n) for n, _ in self.prunable)
        return [self.summary(), "pruned layers (weights):"] + [f"  {n:<{width}}  {k:>10,}" for n, k in self.prunable]


def check_data_present(task: TaskConfig) -> None:
    """A missing dataset is one line naming task.data, with where its files are expected and
    how to get them, before anything runs (`validate` and `run`); nothing is loaded."""
    from silo.data import DatasetNotFoundError, check_data

    try:
        check_data(task.data)
    except DatasetNotFoundError as exc:
        raise OracleError(f"task.data: {exc}") from None


def needs_probe(task: TaskConfig) -> bool:
    return is_import_path(task.model) or is_import_path(task.data.name)


def _not_found(exc: ForeignCodeError, code: tuple[str, ...]) -> str:
    from oracle.study.owncode import not_found_words

    return not_found_words(str(exc), code)


def probe_task(task: TaskConfig, code: tuple[str, ...] = ()) -> tuple[TaskConfig, OwnCode]:
    """(the task with its architecture fingerprint set, what the check found); ProbeProblem.
    `code`: the study's `code:` entries, named when a module is not found."""
    from silo.data import DatasetNotFoundError, load_data
    from silo.models import build_model
    from silo.pruning import prunable_parameters
    from silo.pruning.mask import name_matches
    from silo.round import FusionUnsupported, check_fusable_on

    try:
        data = load_data(task.data, seed=0, device="cpu")
    except DatasetNotFoundError as exc:
        raise ProbeProblem(("task", "data"), str(exc)) from None
    except ForeignArgumentError as exc:
        raise ProbeProblem(("task", "data", "args"), str(exc)) from None
    except ForeignCodeError as exc:
        raise ProbeProblem(("task", "data", "name"), _not_found(exc, code)) from None
    except ValueError as exc:  # the validation split (val_fraction of too few examples)
        raise ProbeProblem(("task", "data", "val_fraction"), str(exc)) from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            model = build_model(task.model, num_classes=data.num_classes, in_channels=data.in_channels,
                                **task.model_args)
        except ForeignArgumentError as exc:
            raise ProbeProblem(("task", "model_args"), str(exc)) from None
        except ForeignCodeError as exc:
            raise ProbeProblem(("task", "model"), _not_found(exc, code)) from None
    xb, yb = next(iter(data.eval_batches("test", min(task.batch_size, 64))))
    expected = (len(xb), data.num_classes)
    model.train()  # as a training step calls it
    try:
        with torch.no_grad():
            out = model(xb)
    except Exception as exc:
        raise ProbeProblem(("task", "model"), f"{task.model!r} failed on one batch of shape {tuple(xb.shape)}: "
                                              f"{_one_line(exc)}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
        raise ProbeProblem(("task", "model"), f"{task.model!r} gives {got} on a batch of shape {tuple(xb.shape)}; "
                                              f"it must give (batch, num_classes) = {expected}")
    pruning = task.pruning
    for field in ("include", "exclude"):
        unmatched = [p for p in getattr(pruning, field)
                     if not any(name_matches(n, p) for n in prunable_parameters(model))]
        if unmatched:
            raise ProbeProblem(("pruning", field), f"{', '.join(map(repr, unmatched))} names no Conv or Linear "
                                                   f"weight of {task.model!r}")
    prunable = prunable_parameters(model, pruning.exclude, pruning.include)
    if not prunable:
        raise ProbeProblem(("pruning",), f"{task.model!r} has no prunable weight: pruning takes the weights of "
                                         "Conv and Linear layers (after pruning.include / exclude)")
    try:
        check_fusable_on(model, task, xb, yb)
        cannot_fuse = None
    except FusionUnsupported as exc:
        cannot_fuse = str(exc)
    fingerprint = architecture_fingerprint(model) if is_import_path(task.model) else None
    found = OwnCode(
        model=task.model, fingerprint=fingerprint, num_classes=data.num_classes,
        input_shape=tuple(data.input_shape), num_train=data.num_train,
        prunable=tuple((n, p.numel()) for n, p in prunable.items()),
        total_params=sum(p.numel() for p in model.parameters()), cannot_fuse=cannot_fuse,
    )
    return task.model_copy(update={"model_fingerprint": fingerprint}), found


def _one_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text[:300]}"
