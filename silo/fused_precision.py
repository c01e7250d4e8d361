"""bf16 and fp16 in a fused round: the casts autocast makes for a lone run, made explicitly.

Under vmap autocast does not reach the batched convolutions (torch 2.14: a fused ResNet-20's
convolutions ran in float32 under bf16 autocast, the lone run's in bfloat16;
pytorch/pytorch#192617), and a batched BatchNorm refuses a bfloat16 input beside its float32
statistics. So a fused step in low precision runs no autocast: it casts by itself, layer by
layer, where autocast casts in the lone run (silo.accel), and keeps everything else as is:

- Conv and Linear layers (autocast's lower-precision ops): their weights and biases are cast
  from the float32 master stacks (differentiable casts, so the gradients arrive in float32),
  their inputs in a forward pre-hook. Their outputs are in the low dtype, as under autocast.
- BatchNorm computes from its input upcast to float32, with float32 weights and running
  statistics (updated in float32, as a lone run's), and returns the input's dtype: what the
  mixed-dtype kernels that autocast leaves it to do on CPU and CUDA.
- LayerNorm and GroupNorm compute in float32 too; they return float32 on CUDA (autocast's
  float32 list there) and the input's dtype on a CPU (not listed there: the mixed kernel).
- The loss is computed from float32 logits (cross_entropy is on autocast's float32 list).

Every other op runs in the dtype of its inputs, as under autocast (bfloat16 meeting float32
promotes to float32: ViT's float32 residual stream stays float32 in both). What this does
not see, a model's own forward calling matmul on float32 tensors, `check_matrix_ops`
catches on the first batch: such a round trains sequentially. Float32-list ops called
functionally in a model's own forward (softmax on CUDA) run in their input's dtype here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch._ops import OpOverload
from torch.utils._python_dispatch import TorchDispatchMode

# The layers whose parameters and inputs autocast casts to the low dtype.
LOW_PRECISION_LAYERS: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear)
_NORMS_IN_INPUT_DTYPE = (nn.modules.batchnorm._BatchNorm,)
_NORMS_FP32_ON_CUDA = (nn.LayerNorm, nn.GroupNorm)
# Dispatcher ops that do a layer's arithmetic (what vmap lowers conv and linear to).
_MATRIX_OPS = frozenset({"convolution", "_convolution", "mm", "addmm", "bmm", "baddbmm", "addbmm"})


def cast_names(model: nn.Module) -> list[str]:
    """The parameters autocast would cast: those of the model's Conv and Linear layers."""
    return [f"{prefix}.{name}" if prefix else name
            for prefix, module in model.named_modules() if isinstance(module, LOW_PRECISION_LAYERS)
            for name, _ in module.named_parameters(recurse=False)]


def cast_params(model: nn.Module, params: dict[str, Tensor], dtype: torch.dtype) -> dict[str, Tensor]:
    """The stacked parameters with those of Conv and Linear layers cast to `dtype`."""
    low = set(cast_names(model))
    return {n: p.to(dtype) if n in low else p for n, p in params.items()}


def loss_logits(logits: Tensor) -> Tensor:
    """The logits the loss reads: float32, as autocast gives cross_entropy."""
    return logits.to(torch.float32)


def casting_model(model: nn.Module, dtype: torch.dtype, device_type: str) -> nn.Module:
    """A copy of `model` whose layers cast their inputs as above, for functional_call in the
    fused step (its own tensors are never used; evaluation keeps the uncast model)."""
    twin = copy.deepcopy(model)
    low = _ToDtype(dtype)
    for module in twin.modules():
        if isinstance(module, LOW_PRECISION_LAYERS):
            module.register_forward_pre_hook(low)
        elif isinstance(module, _NORMS_IN_INPUT_DTYPE) or isinstance(module, _NORMS_FP32_ON_CUDA):
            keep_fp32 = isinstance(module, _NORMS_FP32_ON_CUDA) and device_type == "cuda"
            _InFloat32(keep_fp32).register(module)
    return twin


class _ToDtype:
    """A forward pre-hook casting a layer's floating inputs to one dtype."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(a.to(self.dtype) if isinstance(a, Tensor) and a.is_floating_point() else a for a in args)


class _InFloat32:
    """Hooks running a normalisation layer in float32: its input upcast before, its output
    cast back to the input's dtype after (unless `keep_fp32`)."""

    def __init__(self, keep_fp32: bool) -> None:
        self.keep_fp32 = keep_fp32
        self._dtypes: list[torch.dtype] = []  # the input dtype of each call in progress

    def register(self, module: nn.Module) -> None:
        module.register_forward_pre_hook(self.before)
        module.register_forward_hook(self.after)

    def before(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        self._dtypes.append(x.dtype)
        return (x.to(torch.float32), *args[1:])

    def after(self, module: nn.Module, args: tuple[Any, ...], out: Tensor) -> Tensor:
        dtype = self._dtypes.pop()
        return out if self.keep_fp32 else out.to(dtype)


class MatrixOpDtypes(TorchDispatchMode):  # type: ignore[no-untyped-call]  # torch: untyped __init_subclass__
    """Records the dtypes of the floating inputs of every convolution and matrix product the
    dispatcher runs (below vmap: the batched ops themselves), as (op, dtypes)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # torch: untyped __init__
        self.seen: list[tuple[str, tuple[torch.dtype, ...]]] = []

    def __torch_dispatch__(self, func: OpOverload, types: tuple[type, ...], args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        name = func.overloadpacket.__name__
        if name in _MATRIX_OPS or name.startswith("_scaled_dot_product"):
            dtypes = tuple(a.dtype for a in args if isinstance(a, Tensor) and a.is_floating_point())
            self.seen.append((name, dtypes))
        return func(*args, **(kwargs or {}))

    def not_in(self, dtype: torch.dtype) -> list[tuple[str, tuple[torch.dtype, ...]]]:
        """The recorded ops with an input of another dtype than `dtype`."""
        return [(name, dtypes) for name, dtypes in self.seen if any(d != dtype for d in dtypes)]


def check_matrix_ops(run_forward: Callable[[], object], dtype: torch.dtype) -> str | None:
    """Why the fused forward `run_forward()` is not autocast's computation (a convolution or
    matrix product not in `dtype`), or None."""
    with MatrixOpDtypes() as ops:
        run_forward()
    if not ops.seen:
        return None
    wrong = ops.not_in(dtype)
    if wrong:
        name, dtypes = wrong[0]
        found = ", ".join(_dtype_name(d) for d in dtypes)
        return (f"{len(wrong)} of {len(ops.seen)} convolutions and matrix products would run fused outside "
                f"{_dtype_name(dtype)} (first: {name} on {found}), where autocast casts them in a lone run")
    return None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
