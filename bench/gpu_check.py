"""The GPU path, checked and measured in one command (about 8 minutes on one GPU):

    python bench/gpu_check.py

Needs only torch (2.11 or newer), torchvision, pydantic, pyyaml and this checkout (`silo`,
pure PyTorch): no Ray, no Optuna, no package index, no data files. It prints one table, and
never stops with a traceback: a check or measurement that raises (a refused fusion, a
failed compilation) is a FAIL row with its reason, and the command then exits 1.

1. checks (also the CUDA-only tests, `pytest -m cuda`): data on the device; a fused round
   equal to its sequential runs on the device in float64, eager and compiled; a ResNet-20
   round fuses with channels_last on (vmap's BatchNorm refuses channels_last on CUDA);
   each precision trains a pruned ResNet-20, alone and as a fused round of two, with its
   pruned weights exactly zero (a refusal, e.g. bf16 on a GPU without it, is shown as such);
2. ResNet-20 on CIFAR-shaped synthetic images on the device, batch 128: img/s of one run
   for fp32 eager, the settings `execution: auto` picks, bf16, bf16 + channels_last,
   bf16 + channels_last + compile (compiled once, measured on the next run, as a trial's
   process reuses it), and whether auto is at least fp32 eager;
3. Oracle rounds, img/s of the round: a plain torch.func reference round written here
   (stacked parameters and buffers, functional_call under vmap, SGD on the stacks, no masks,
   no schedule, compiled) beside silo's compiled fused round, for G = `--members` and
   2 x `--members` values, the ratio product / reference measured side by side; silo's
   eager fused round and the same values one after another; and a seeds-fused round of
   `--values` values x `--seeds` seeds (the paper's ResNet-20 setup: 7 x 5).

Without CUDA it says so in one line and exits 0. `--device cpu` runs the same table on the
CPU (small sizes advised: `--n-train 256 --members 2 --values 2 --seeds 2 --epochs 0.5
--backend aot_eager`), which is how its code is tested (tests/silo/test_compiled_round.py).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `silo` from this checkout, installed or not

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from silo.accel import CompileCache, ExecutionConfig, PrecisionUnsupported  # noqa: E402
from silo.config import PruningConfig, ShapeConfig, TaskConfig  # noqa: E402
from silo.data import DataSplits, RawData  # noqa: E402
from silo.data.common import CropFlip, Normalize  # noqa: E402
from silo.data.splits import make_splits  # noqa: E402
from silo.round import Share, train_round, train_shares  # noqa: E402
from silo.train import train_run  # noqa: E402

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def synthetic_cifar(n_train: int, device: torch.device, *, n_test: int = 1000, classes: int = 10,
                    seed: int = 0) -> DataSplits:
    """CIFAR-shaped uint8 images made on the device: a class's fixed pattern half-blended
    with noise, so a network can learn them (accuracy far above chance shows it trained)."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randint(0, 256, (classes, 3, 32, 32), generator=g, dtype=torch.uint8)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, classes, (n,), generator=g)
        noise = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        x = ((patterns[y].to(torch.int16) + noise) // 2).to(torch.uint8)
        return x.to(device), y.to(device)

    (train_x, train_y), (test_x, test_y) = draw(n_train), draw(n_test)
    normalize = Normalize(CIFAR_MEAN, CIFAR_STD, device)
    raw = RawData(train_x, train_y, test_x, test_y, classes, (3, 32, 32), prepare=normalize,
                  augment=CropFlip(normalize, pad=4))
    return make_splits(raw, val_fraction=0.1, seed=seed, augment=True, name="synthetic_cifar")


def gaussian(input_shape: tuple[int, ...], device: torch.device, *, n: int = 16, classes: int = 4) -> DataSplits:
    """Tiny model-ready data in torch's default dtype (float64 for the equivalence check)."""
    g = torch.Generator().manual_seed(0)

    def x(k: int) -> torch.Tensor:
        return torch.randn(k, *input_shape, generator=g, dtype=torch.get_default_dtype()).to(device)

    def y(k: int) -> torch.Tensor:
        return torch.randint(0, classes, (k,), generator=g).to(device)

    return DataSplits(train_x=x(n), train_y=y(n), val_x=x(8), val_y=y(8), test_x=x(8), test_y=y(8),
                      num_classes=classes, input_shape=input_shape, augment=None, prepare=None,
                      train_index=torch.arange(n), val_index=torch.arange(8))


def resnet20_task(device: torch.device, *, epochs: float, batch_size: int = 128, **changes) -> TaskConfig:
    return TaskConfig(model="resnet20", epochs=epochs, batch_size=batch_size, device=str(device),
                      shape=ShapeConfig(name="warmup_step", warmup="0.2ep", milestones=("0.8ep",)),
                      pruning=PruningConfig(rate=0.5), **changes)


# ----------------------------------------------------------------------------- checks
# Each returns (passed, detail); tests/test_gpu.py asserts them on CUDA (pytest -m cuda).


def check_data_on_device(device: torch.device) -> tuple[bool, str]:
    data = synthetic_cifar(512, device)
    xb, yb = next(iter(data.train_batches(64, torch.Generator().manual_seed(0))))
    run = train_run(resnet20_task(device, epochs=0.5, batch_size=64), seed=0, cycle=0, max_lr=0.05, data=data)
    ok = xb.device.type == device.type and yb.device.type == device.type and run.metrics.status == "ok"
    return ok, f"batches on {xb.device}, run {run.metrics.status}"


def _float64_rounds(device: torch.device, *executions: ExecutionConfig | None, backend: str = "inductor"):
    """A pruned ResNet-20 round of two values in float64, trained sequentially and fused under
    each of `executions`: (sequential results, [fused results per execution])."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        data = gaussian((3, 8, 8), device)
        task = TaskConfig(model="resnet20", epochs=3 * 8 / 16, batch_size=8, device=str(device),
                          shape=ShapeConfig(name="warmup_step", warmup=2, milestones=(3,)),
                          pruning=PruningConfig(rate=0.3), label_smoothing=0.1)
        parent = train_run(task, seed=0, cycle=0, max_lr=0.05, data=data).state
        kwargs = dict(seed=0, cycle=1, max_lrs=[0.01, 0.05], parent=parent, data=data)
        sequential = train_round(task, mode="sequential", **kwargs)
        fused = [train_round(task, mode="fused", execution=ex, compiled=CompileCache(backend), **kwargs)
                 for ex in executions]
    finally:
        torch.set_default_dtype(previous)
    return sequential, fused


def _worst(a, b) -> float:
    return max((x.state.weights[k] - y.state.weights[k]).abs().max().item()
               for x, y in zip(a, b) for k in y.state.weights if y.state.weights[k].is_floating_point())


def check_fused_equals_sequential_float64(device: torch.device) -> tuple[bool, str]:
    sequential, (fused,) = _float64_rounds(device, ExecutionConfig(compile="off"))
    worst = _worst(fused, sequential)
    return worst <= 1e-10, f"max |fused - sequential| = {worst:.1e} (float64)"


def check_compiled_fused_equals_sequential_float64(device: torch.device, backend: str) -> tuple[bool, str]:
    """The compiled whole step (silo.fused) against the same runs one by one, float64."""
    sequential, (compiled,) = _float64_rounds(device, ExecutionConfig(compile="on"), backend=backend)
    worst = _worst(compiled, sequential)
    return worst <= 1e-10, f"max |compiled fused - sequential| = {worst:.1e} (float64, {backend})"


def check_fuses_with_channels_last(device: torch.device) -> tuple[bool, str]:
    """A ResNet-20 round with execution.channels_last on trains fused (contiguous under vmap)."""
    data = synthetic_cifar(512, device)
    task = resnet20_task(device, epochs=0.25, batch_size=64)
    results = train_round(task, seed=0, cycle=0, max_lrs=[0.02, 0.05], data=data, mode="fused",
                          execution=ExecutionConfig(channels_last="on"))
    ok = all(r.metrics.status == "ok" for r in results)
    return ok, "fused, contiguous under vmap: " + ", ".join(f"{r.metrics.status}" for r in results)


def check_precision_trains(device: torch.device, precision: str) -> tuple[bool | None, str]:
    """A dense run and a pruned cycle in `precision`: above chance, pruned weights zero.
    None: the device refuses this precision (the refusal's message is the detail)."""
    data = synthetic_cifar(2048, device)
    task = resnet20_task(device, epochs=2, batch_size=64, precision=precision)
    try:
        dense = train_run(task, seed=0, cycle=0, max_lr=0.05, data=data)
    except PrecisionUnsupported as exc:
        return None, f"refused: {exc}"
    pruned = train_run(task, seed=0, cycle=1, max_lr=0.05, parent=dense.state, data=data)
    # The same cycle as a fused round of two values (explicit casts, fp16 scaled per member).
    fused = train_round(task, seed=0, cycle=1, max_lrs=[0.05, 0.08], parent=dense.state, data=data, mode="fused")

    def zero(run) -> bool:
        return all(bool((run.state.weights[n][~keep] == 0).all()) for n, keep in run.state.mask.items())

    runs = [pruned, *fused]
    acc = pruned.metrics.val_acc
    ok = all(r.metrics.status == "ok" and zero(r) and r.metrics.val_acc > 2 * data.chance for r in runs)
    return ok, (f"val acc {dense.metrics.val_acc:.2f} dense, {acc:.2f} at sparsity {pruned.metrics.sparsity:.2f}, "
                f"fused {fused[0].metrics.val_acc:.2f}/{fused[1].metrics.val_acc:.2f}; "
                f"pruned weights {'exactly zero' if all(zero(r) for r in runs) else 'NOT ZERO'}")


# ----------------------------------------------------------------------------- measures

LONE_MODES = {  # name: (precision, execution); the first is the baseline
    "fp32 eager": ("fp32", ExecutionConfig(channels_last="off", compile="off", cudnn_benchmark="on")),
    "auto (what execution: auto picks)": ("fp32", ExecutionConfig()),
    "bf16": ("bf16", ExecutionConfig(channels_last="off", compile="off", cudnn_benchmark="on")),
    "bf16 + channels_last": ("bf16", ExecutionConfig(channels_last="on", compile="off", cudnn_benchmark="on")),
    "bf16 + channels_last + compile": ("bf16", ExecutionConfig(channels_last="on", compile="on",
                                                               cudnn_benchmark="on")),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_s(device: torch.device, data: DataSplits, precision: str, execution: ExecutionConfig,
                 epochs: float, backend: str) -> tuple[float, float]:
    """(img/s of a measured run, seconds of the warm-up run before it: compilation there)."""
    compiled = CompileCache(backend)
    kwargs = dict(seed=0, cycle=0, max_lr=0.05, data=data, execution=execution, compiled=compiled)
    t = time.perf_counter()
    train_run(resnet20_task(device, epochs=0.2, precision=precision), **kwargs)
    _sync(device)
    warm = time.perf_counter() - t
    run = train_run(resnet20_task(device, epochs=epochs, precision=precision), **kwargs)
    return run.metrics.images_per_s, warm


def _timed(device: torch.device, work) -> float:
    _sync(device)
    t = time.perf_counter()
    work()
    _sync(device)
    return time.perf_counter() - t


def product_round(device: torch.device, shares_data: list[DataSplits], values: int, epochs: float,
                  execution: ExecutionConfig, backend: str, mode: str = "fused") -> tuple[float, str]:
    """(img/s, shape) of silo's round of `values` values x len(shares_data) seeds, timed after
    a warm-up round of the same shape (compilation there, reused as a trial's process does)."""
    lrs = [0.02 * 1.3**i for i in range(values)]
    compiled = CompileCache(backend)

    def shares() -> list[Share]:
        return [Share(seed, lrs, None, data) for seed, data in enumerate(shares_data)]

    kwargs = dict(cycle=0, mode=mode, execution=execution, compiled=compiled)
    train_shares(resnet20_task(device, epochs=0.1), shares=shares(), **kwargs)
    task = resnet20_task(device, epochs=epochs)
    runs = [r for rs in train_shares(task, shares=shares(), **kwargs) for r in rs]
    # Training time, as the runs measure it (a fused member's is its share of the round's),
    # so the final evaluation on val and test, the same in every mode, is left out.
    images = sum(r.metrics.steps for r in runs) * task.batch_size
    seconds = sum(r.metrics.steps * task.batch_size / r.metrics.images_per_s for r in runs)
    return images / seconds, f"{values} values x {len(shares_data)} seeds" if len(shares_data) > 1 else f"G={values}"


def reference_round(device: torch.device, data: DataSplits, members: int, epochs: float, backend: str) -> float:
    """img/s of the plain torch.func round: what a hand-written fused step reaches on this
    device, the bar silo's round is held to (no masks, no schedule, no divergence checks)."""
    from torch.func import functional_call, stack_module_state, vmap

    from silo.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=data.num_classes, in_channels=3).to(device)
    params, buffers = stack_module_state([copy.deepcopy(model) for _ in range(members)])
    params = {n: p.detach() for n, p in params.items()}
    moms = {n: torch.zeros_like(p) for n, p in params.items()}
    lr = torch.linspace(0.02, 0.2, members, device=device)

    def step(params, buffers, moms, xb, yb):
        def losses_of(p, b):
            def one(pm, bm):
                return F.cross_entropy(functional_call(model, (pm, bm), (xb,)), yb)
            losses = vmap(one)(p, b)
            return losses.sum(), losses

        grads, losses = torch.func.grad(losses_of, has_aux=True)(params, buffers)
        with torch.no_grad():
            for n, p in params.items():
                g = grads[n].add(p, alpha=5e-4)
                moms[n].mul_(0.9).add_(g)
                p.sub_(moms[n] * lr.view(-1, *([1] * (p.dim() - 1))))
        return losses

    compiled = torch.compile(step, backend=backend)
    gen = torch.Generator().manual_seed(0)
    batches = list(data.train_batches(128, gen, augment=True))
    for xb, yb in batches[:3]:  # compilation
        compiled(params, buffers, moms, xb, yb)
    steps = max(1, round(epochs * len(batches)))

    def train() -> None:
        for i in range(steps):
            xb, yb = batches[i % len(batches)]
            compiled(params, buffers, moms, xb, yb)

    return steps * 128 * members / _timed(device, train)


# ----------------------------------------------------------------------------- the table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--n-train", type=int, default=10000, help="synthetic training images (default 10000)")
    parser.add_argument("--epochs", type=float, default=1.0, help="epochs of each measured run (default 1)")
    parser.add_argument("--members", type=int, default=8, help="max_lr values of the measured round (default 8)")
    parser.add_argument("--values", type=int, default=7, help="values of the seeds-fused round (default 7)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the seeds-fused round (default 5)")
    parser.add_argument("--backend", default="inductor", help="torch.compile's backend (default inductor)")
    parser.add_argument("--only", choices=("all", "rounds"), default="all",
                        help="rounds: only part 3, the rounds (default all)")
    parser.add_argument("--budget", type=float, default=480.0,
                        help="seconds after which the remaining measurements are skipped (default 480)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing to check")
        return 0
    start = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"gpu_check on {name}, torch {torch.__version__}, compile backend {args.backend}")
    rows: list[tuple[str, str, str]] = []

    def row(what: str, result: str, detail: str) -> None:
        rows.append((what, result, detail))
        print(f"  {what:<44} {result:<12} {detail}", flush=True)

    def attempt(what: str, work, *work_args):
        """work(*work_args) or, if it raises, a FAIL row with the reason (never a traceback); None then.
        Past the time budget: a skipped row."""
        if time.perf_counter() - start > args.budget:
            row(what, "skipped", f"time budget of {args.budget:.0f} s spent")
            return None
        try:
            return work(*work_args)
        except PrecisionUnsupported as exc:
            row(what, "refused", str(exc))
        except Exception as exc:  # noqa: BLE001 - every failure is a row: the table goes on
            first = (str(exc).strip().splitlines() or [""])[0]
            row(what, "FAIL", f"{type(exc).__name__}: {first[:200]}")
        return None

    data = attempt("synthetic data on the device", lambda: synthetic_cifar(args.n_train, device))
    if data is not None:
        if args.only == "all":
            _checks(device, args, row, attempt)
            _lone_runs(device, data, args, row, attempt)
        _rounds(device, data, args, row, attempt)
    failed = [r for r in rows if r[1] == "FAIL"]
    print(f"gpu_check: {len(rows) - len(failed)} of {len(rows)} rows without failure, "
          f"{time.perf_counter() - start:.0f} s")
    return 1 if failed else 0


def _verdict(ok: bool | None) -> str:
    return "refused" if ok is None else ("pass" if ok else "FAIL")


def _checks(device, args, row, attempt) -> None:
    print("checks")
    checks = {
        "data on the device": lambda: check_data_on_device(device),
        "fused = sequential, float64": lambda: check_fused_equals_sequential_float64(device),
        "compiled fused = sequential, float64": lambda: check_compiled_fused_equals_sequential_float64(
            device, args.backend),
        "fused with channels_last on": lambda: check_fuses_with_channels_last(device),
    }
    for precision in ("fp32", "bf16", "fp16"):
        checks[f"{precision} trains, masks exact"] = partial(check_precision_trains, device, precision)
    for what, check in checks.items():
        got = attempt(what, check)
        if got is not None:
            ok, detail = got
            row(what, _verdict(ok), detail)


def _lone_runs(device, data, args, row, attempt) -> None:
    print(f"ResNet-20, {args.n_train} synthetic 32x32 images, batch 128, one run (img/s; warm-up run's s)")
    speeds: dict[str, float] = {}
    for label, (precision, execution) in LONE_MODES.items():
        got = attempt(label, images_per_s, device, data, precision, execution, args.epochs, args.backend)
        if got is None:
            continue
        ips, warm = got
        speeds[label] = ips
        base = speeds.get("fp32 eager", ips)
        row(label, f"{ips:,.0f}", f"{ips / base:.2f}x fp32 eager; warm-up {warm:.1f} s")
    if "fp32 eager" in speeds and "auto (what execution: auto picks)" in speeds:
        ratio = speeds["auto (what execution: auto picks)"] / speeds["fp32 eager"]
        # Run-to-run noise of a short run is a few per cent: auto may not be slower beyond it.
        row("auto at least fp32 eager", _verdict(ratio >= 0.95), f"{ratio:.2f}x (goal on an H200: >= 25,000 img/s)")


def _rounds(device, data, args, row, attempt) -> None:
    print(f"Oracle rounds of ResNet-20, {args.epochs:g} epoch each, img/s of the round")
    compiled, eager = ExecutionConfig(compile="on"), ExecutionConfig(compile="off")
    for members in (args.members, 2 * args.members):
        ref = attempt(f"reference torch.func round, G={members}",
                      reference_round, device, data, members, args.epochs, args.backend)
        if ref is not None:
            row(f"reference torch.func round, G={members}", f"{ref:,.0f}", "compiled, no masks, no schedule")
        got = attempt(f"silo fused round compiled, G={members}",
                      product_round, device, [data], members, args.epochs, compiled, args.backend)
        if got is not None:
            ips, _ = got
            row(f"silo fused round compiled, G={members}", f"{ips:,.0f}",
                f"{ips / ref:.2f}x the reference, side by side" if ref else "no reference to compare")
    for label, execution, mode in (("silo fused round eager", eager, "fused"),
                                   ("the same values one after another", eager, "sequential")):
        got = attempt(f"{label}, G={args.members}",
                      product_round, device, [data], args.members, args.epochs, execution, args.backend, mode)
        if got is not None:
            row(f"{label}, G={args.members}", f"{got[0]:,.0f}", "fp32")
    seeds = attempt("data of each seed", lambda: [data] + [synthetic_cifar(args.n_train, device, seed=s)
                                                           for s in range(1, args.seeds)])
    if seeds is not None:
        what = f"seeds fused, {args.values} values x {args.seeds} seeds"
        got = attempt(what, lambda: product_round(device, seeds, args.values, args.epochs, compiled, args.backend))
        if got is not None:
            row(what, f"{got[0]:,.0f}", f"G={args.values * args.seeds}, compiled, each seed its own data")


if __name__ == "__main__":
    sys.exit(main())
