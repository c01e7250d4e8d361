"""How a run's steps execute on its device: precision, memory format, torch.compile, cuDNN.

Two kinds of settings, kept apart because one changes results and the other does not:

- `task.precision` (fp32 | bf16 | fp16) is part of the task and, off its default, of the
  run key: autocast runs the forward pass and the loss in bfloat16 or float16, the weights
  (the master copy), gradients and optimizer state stay float32, and fp16 scales the loss
  (a GradScaler). Masks are applied as in
  float32 after each step, so pruned weights stay exactly zero. fp32 runs no autocast at all:
  its computation is the one before precision existed.
- `ExecutionConfig` (channels_last, compile, cudnn_benchmark) changes float rounding only and
  is never part of a run's identity (like `execution.fuse`). `auto` picks only what was
  measured to pay on one H200 (docs/results.md): cuDNN autotuning for 2-D conv nets on CUDA;
  channels_last for a lone run of a conv net on CUDA in bf16/fp16 only (bf16 14.8k img/s with
  it, 12.6k without; fp32 was not measured faster with it); compile for fused rounds on CUDA
  only (a compiled torch.func round of ResNet-20 trained 75k img/s, eager 37-40k, while a
  compiled lone run was 0.73x of eager: launch-bound). `compile` wraps a lone run's forward
  pass and loss (their backward comes compiled with them), or a fused round's whole step
  (silo.round), in torch.compile, once per process through a `CompileCache` the caller keeps,
  like its DataCache.

channels_last is a lone-run setting: under vmap, CUDA's BatchNorm cannot take a channels_last
input ("NYI: querying is_contiguous inside of vmap for memory_format other than
torch.contiguous_format"), so a fused round always runs contiguous (`for_run(fused=True)`).

`Accel.for_run` resolves both for one run's (or round's) model and device. Evaluation stays float32.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from silo.config import Precision

PRECISIONS: tuple[str, ...] = get_args(Precision)
_AUTOCAST_DTYPE = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class ExecutionConfig(BaseModel):
    """How steps execute; never part of a run's identity (they change float rounding only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels_last: Literal["auto", "on", "off"] = "auto"
    compile: Literal["auto", "off", "on"] = "auto"
    cudnn_benchmark: Literal["auto", "on", "off"] = "auto"


class PrecisionUnsupported(ValueError):
    """The task's precision cannot run on this device (a message naming task.precision)."""


def check_precision(precision: str, device: torch.device) -> None:
    """Raise PrecisionUnsupported if `precision` cannot run on `device`.

    fp16 needs CUDA: on a CPU float16 autocast is slow and its GradScaler pointless (use
    bf16). bf16 on CUDA needs native bfloat16 (compute capability 8.0, Ampere): emulated it
    would be slower than fp32. Checked where the run trains, since the driver may have no GPU.
    """
    if precision not in PRECISIONS:
        raise PrecisionUnsupported(f"task.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise PrecisionUnsupported(
            f"task.precision fp16 needs a CUDA GPU, but this run trains on {device.type}; use bf16 or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        major, minor = torch.cuda.get_device_capability(device)
        raise PrecisionUnsupported(
            f"task.precision bf16: {torch.cuda.get_device_name(device)} (compute capability {major}.{minor}) "
            "has no bfloat16 support (needs 8.0 or newer); use fp16 or fp32")


def is_conv_net(model: nn.Module) -> bool:
    """Whether the model has 2-D convolutions: the nets channels_last and cuDNN autotuning help."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


class CompileCache:
    """Functions compiled with torch.compile in this process, reused by every run it trains.

    The caller owns it (one per worker process, as its DataCache): the compiled functions
    take the model as an argument, so dynamo's guards match every model of the same
    architecture (and, for a fused round, the same member count G) and a later run or round
    of the trial's process reuses the compiled code. `backend` is torch.compile's (inductor;
    tests use aot_eager, which captures the same graphs without generating C++)."""

    def __init__(self, backend: str = "inductor") -> None:
        self.backend = backend
        self._compiled: dict[Callable[..., Tensor], _Compiled] = {}

    def get(self, fn: Callable[..., Tensor]) -> _Compiled:
        if fn not in self._compiled:
            self._compiled[fn] = _Compiled(fn, self.backend)
        return self._compiled[fn]

    def __len__(self) -> int:
        return len(self._compiled)


class _Compiled:
    """`fn` compiled, falling back to `fn` itself, with one line on stderr, if the first
    call fails to compile (an unsupported model, no C++ compiler)."""

    def __init__(self, fn: Callable[..., Tensor], backend: str = "inductor") -> None:
        self.fn = fn
        self.compiled = torch.compile(fn, backend=backend)
        self.failed: str | None = None  # why compilation failed, once it has
        self.proven = False  # one call has gone through, forward and backward

    def call(self, args: tuple[Any, ...], then: Callable[[Tensor], Tensor],
             state: Callable[[], list[Tensor]]) -> Tensor:
        """then(fn(*args)), compiled. `then` runs the backward (compiled lazily, so it may
        fail too); `state` gives the tensors a failed first call may have changed (BatchNorm
        running stats), restored before the eager retry."""
        if self.failed is not None:
            return then(self.fn(*args))
        if self.proven:
            return then(self.compiled(*args))
        saved = [t.detach().clone() for t in state()]
        try:
            out = then(self.compiled(*args))
        except Exception as exc:  # noqa: BLE001 - any compiler failure means: train eagerly
            self.failed = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            print(f"torch.compile failed ({self.failed[:300]}); training without compile", file=sys.stderr,
                  flush=True)
            with torch.no_grad():
                for t, s in zip(state(), saved):
                    t.copy_(s)
            return then(self.fn(*args))
        self.proven = True
        return out


@dataclass
class Accel:
    """One run's resolved execution: what its step loop asks of the device."""

    precision: str
    device: torch.device
    channels_last: bool
    cudnn_benchmark: bool
    compile: CompileCache | None  # None: eager

    @classmethod
    def for_run(
        cls, precision: str, execution: ExecutionConfig | None, model: nn.Module, device: torch.device,
        compiled: CompileCache | None = None, *, fused: bool = False,
    ) -> Accel:
        """`auto` resolved for this model and device, for a lone run or (`fused`) a fused
        round, which never runs channels_last; `compiled` is the process's cache (a fresh one,
        compiling for this run only, if None and compile is on)."""
        check_precision(precision, device)
        execution = execution or ExecutionConfig()
        conv_on_cuda = device.type == "cuda" and is_conv_net(model)
        low_precision = _AUTOCAST_DTYPE[precision] is not None
        channels_last = not fused and (execution.channels_last == "on" or (
            execution.channels_last == "auto" and conv_on_cuda and low_precision))
        cudnn = execution.cudnn_benchmark == "on" or (execution.cudnn_benchmark == "auto" and conv_on_cuda)
        compile_on = execution.compile == "on" or (execution.compile == "auto" and fused and device.type == "cuda")
        cache = (compiled if compiled is not None else CompileCache()) if compile_on else None
        return cls(precision, device, channels_last, cudnn, cache)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _AUTOCAST_DTYPE[self.precision]

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """The model in the run's memory format (before its optimizer is built)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def batch(self, xb: Tensor) -> Tensor:
        """A training batch in the run's memory format (images only: 4-D)."""
        if self.channels_last and xb.dim() == 4:
            return xb.contiguous(memory_format=torch.channels_last)
        return xb

    def scaler(self) -> torch.amp.GradScaler | None:
        """A run's loss scaler: fp16 only (bf16 has float32's range)."""
        return torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None

    def call(self, fn: Callable[..., Tensor], args: tuple[Any, ...], then: Callable[[Tensor], Tensor],
             state: Callable[[], list[Tensor]]) -> Tensor:
        """then(fn(*args)): compiled if compile is on, else as is. `fn` takes the autocast
        dtype as its last argument (see `autocast`)."""
        args = (*args, self.autocast_dtype)
        if self.compile is None:
            return then(fn(*args))
        return self.compile.get(fn).call(args, then, state)

    def set_backends(self) -> None:
        """cuDNN autotuning on or off for this run. A process setting: every run sets its
        own before training, so none inherits another's."""
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = self.cudnn_benchmark


def autocast(device_type: str, dtype: torch.dtype | None) -> torch.autocast:
    """The forward pass's autocast context (disabled for fp32: no cast at all)."""
    return torch.autocast(device_type, dtype=dtype, enabled=dtype is not None)
