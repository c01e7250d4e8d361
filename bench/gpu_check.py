"""The GPU path, checked and measured in one command (under 8 minutes on one GPU):

    python bench/gpu_check.py

Needs only torch (2.11 or newer), torchvision, pydantic, pyyaml and this checkout (`silo`,
pure PyTorch): no Ray, no Optuna, no package index, no data files. It prints one table:

1. checks (also the CUDA-only tests, `pytest -m cuda`): data on the device; a fused round
   equal to its sequential runs on the device in float64; each precision trains a pruned
   ResNet-20, alone and as a fused round of two, with its pruned weights exactly zero (a
   refusal, e.g. bf16 on a GPU without it, is shown as such);
2. ResNet-20 on CIFAR-shaped synthetic images on the device: img/s of one run for fp32,
   bf16, bf16 + channels_last, bf16 + channels_last + compile (compiled once, measured on
   the next run, as a trial's process reuses it);
3. a round of `--members` max_lr values trained fused vs one after another, per mode, in
   img/s of the round (fused bf16 casts explicitly: silo.fused_precision), and the ratios
   fused bf16 : sequential bf16 : fused fp32 side by side (`--only rounds`: this part only).

Without CUDA it says so in one line and exits 0. `--device cpu` runs the same table on the
CPU (small sizes advised: `--n-train 512 --members 2`), which is how its code is tested.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `silo` from this checkout, installed or not

import torch  # noqa: E402

from silo.accel import CompileCache, ExecutionConfig, PrecisionUnsupported  # noqa: E402
from silo.config import PruningConfig, ShapeConfig, TaskConfig  # noqa: E402
from silo.data import DataSplits, RawData  # noqa: E402
from silo.data.cifar import CropFlip, Normalize  # noqa: E402
from silo.data.splits import make_splits  # noqa: E402
from silo.round import FusionUnsupported, train_round  # noqa: E402
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


def check_fused_equals_sequential_float64(device: torch.device) -> tuple[bool, str]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        data = gaussian((3, 8, 8), device)
        task = TaskConfig(model="resnet20", epochs=3 * 8 / 16, batch_size=8, device=str(device),
                          shape=ShapeConfig(name="warmup_step", warmup=2, milestones=(3,)),
                          pruning=PruningConfig(rate=0.3), label_smoothing=0.1)
        parent = train_run(task, seed=0, cycle=0, max_lr=0.05, data=data).state
        rounds = [train_round(task, seed=0, cycle=1, max_lrs=[0.01, 0.05], parent=parent, data=data, mode=mode)
                  for mode in ("fused", "sequential")]
    finally:
        torch.set_default_dtype(previous)
    worst = max((f.state.weights[k] - s.state.weights[k]).abs().max().item()
                for f, s in zip(*rounds) for k in s.state.weights if s.state.weights[k].is_floating_point())
    return worst <= 1e-10, f"max |fused - sequential| = {worst:.1e} (float64)"


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

MODES = {  # name: (precision, execution)
    "fp32": ("fp32", ExecutionConfig(channels_last="off", cudnn_benchmark="on")),
    "bf16": ("bf16", ExecutionConfig(channels_last="off", cudnn_benchmark="on")),
    "bf16 + channels_last": ("bf16", ExecutionConfig(channels_last="on", cudnn_benchmark="on")),
    "bf16 + channels_last + compile": ("bf16", ExecutionConfig(channels_last="on", compile="on",
                                                               cudnn_benchmark="on")),
}
ROUND_MODES = {
    "fp32": ("fp32", ExecutionConfig(channels_last="off", cudnn_benchmark="on")),
    "bf16": ("bf16", ExecutionConfig(channels_last="off", cudnn_benchmark="on")),
    "fp32 + channels_last": ("fp32", ExecutionConfig(channels_last="on", cudnn_benchmark="on")),
    "fp32 + channels_last + compile": ("fp32", ExecutionConfig(channels_last="on", compile="on",
                                                               cudnn_benchmark="on")),
    "bf16 + channels_last": ("bf16", ExecutionConfig(channels_last="on", cudnn_benchmark="on")),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_s(device: torch.device, data: DataSplits, precision: str, execution: ExecutionConfig,
                 epochs: float) -> tuple[float, float]:
    """(img/s of a measured run, seconds of the warm-up run before it: compilation there)."""
    compiled = CompileCache()
    kwargs = dict(seed=0, cycle=0, max_lr=0.05, data=data, execution=execution, compiled=compiled)
    t = time.perf_counter()
    train_run(resnet20_task(device, epochs=0.2, precision=precision), **kwargs)
    _sync(device)
    warm = time.perf_counter() - t
    run = train_run(resnet20_task(device, epochs=epochs, precision=precision), **kwargs)
    return run.metrics.images_per_s, warm


def round_seconds(device: torch.device, data: DataSplits, precision: str, execution: ExecutionConfig,
                  members: int, epochs: float) -> tuple[float | None, float, str, int]:
    """(fused s or None, sequential s, note, images trained by the round) for one round of
    `members` max_lr values, each mode timed after a warm-up round (compilation there)."""
    lrs = [0.02 * 1.3**i for i in range(members)]
    task = resnet20_task(device, epochs=epochs, precision=precision)
    warm_task = resnet20_task(device, epochs=0.1, precision=precision)
    out: dict[str, float | None] = {}
    note = ""
    for mode in ("fused", "sequential"):
        compiled = CompileCache()
        kwargs = dict(seed=0, cycle=0, data=data, mode=mode, execution=execution, compiled=compiled)
        try:
            train_round(warm_task, max_lrs=lrs[:2] if mode == "sequential" else lrs, **kwargs)
        except FusionUnsupported as exc:
            out[mode], note = None, f"fused: {str(exc).split(':')[0]}"
            continue
        _sync(device)
        t = time.perf_counter()
        results = train_round(task, max_lrs=lrs, **kwargs)
        _sync(device)
        out[mode] = time.perf_counter() - t
        images = sum(r.metrics.steps for r in results) * task.batch_size
    return out["fused"], out["sequential"], note, images


# ----------------------------------------------------------------------------- the table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--n-train", type=int, default=10000, help="synthetic training images (default 10000)")
    parser.add_argument("--epochs", type=float, default=1.0, help="epochs of each measured run (default 1)")
    parser.add_argument("--members", type=int, default=8, help="max_lr values of the measured round (default 8)")
    parser.add_argument("--only", choices=("all", "rounds"), default="all",
                        help="rounds: only part 3, the rounds (default all)")
    parser.add_argument("--budget", type=float, default=420.0,
                        help="seconds after which the remaining measurements are skipped (default 420)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing to check")
        return 0
    start = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"gpu_check on {name}, torch {torch.__version__}")
    rows: list[tuple[str, str, str]] = []

    def row(what: str, result: str, detail: str) -> None:
        rows.append((what, result, detail))
        print(f"  {what:<42} {result:<12} {detail}", flush=True)

    def verdict(ok: bool | None) -> str:
        return "refused" if ok is None else ("pass" if ok else "FAIL")

    data = synthetic_cifar(args.n_train, device)
    if args.only == "all":
        _checks_and_runs(device, data, args, start, row, verdict)
    failed = [r for r in rows if r[1] == "FAIL"]
    _rounds(device, data, args, start, row)
    print(f"gpu_check: {len(rows) - len(failed)} of {len(rows)} rows without failure, "
          f"{time.perf_counter() - start:.0f} s")
    return 1 if failed else 0


def _checks_and_runs(device, data, args, start, row, verdict) -> None:
    print("checks")
    ok, detail = check_data_on_device(device)
    row("data on the device", verdict(ok), detail)
    ok, detail = check_fused_equals_sequential_float64(device)
    row("fused = sequential, float64", verdict(ok), detail)
    for precision in ("fp32", "bf16", "fp16"):
        ok, detail = check_precision_trains(device, precision)
        row(f"{precision} trains, masks exact", verdict(ok), detail)
    print(f"ResNet-20, {args.n_train} synthetic 32x32 images, batch 128, one run (img/s; warm-up run's s)")
    base = None
    for label, (precision, execution) in MODES.items():
        if time.perf_counter() - start > args.budget:
            row(label, "skipped", f"time budget of {args.budget:.0f} s spent")
            continue
        try:
            ips, warm = images_per_s(device, data, precision, execution, args.epochs)
        except PrecisionUnsupported as exc:
            row(label, "refused", str(exc))
            continue
        base = base or ips
        row(label, f"{ips:,.0f}", f"{ips / base:.2f}x fp32; warm-up {warm:.1f} s")


def _rounds(device, data, args, start, row) -> None:
    print(f"a round of {args.members} max_lr values, {args.epochs:g} epoch each: fused vs one after another "
          "(round img/s)")
    speeds: dict[tuple[str, str], float] = {}
    for label, (precision, execution) in ROUND_MODES.items():
        if time.perf_counter() - start > args.budget:
            row(label, "skipped", f"time budget of {args.budget:.0f} s spent")
            continue
        try:
            fused, sequential, note, images = round_seconds(device, data, precision, execution, args.members,
                                                            args.epochs)
        except PrecisionUnsupported as exc:
            row(label, "refused", str(exc))
            continue
        speeds[label, "sequential"] = images / sequential
        if fused is None:
            row(label, f"{sequential:.1f} s", f"sequential only ({note}); {images / sequential:,.0f} img/s")
        else:
            speeds[label, "fused"] = images / fused
            row(label, f"{sequential / fused:.2f}x", f"fused {fused:.1f} s ({images / fused:,.0f} img/s), sequential "
                                                     f"{sequential:.1f} s ({images / sequential:,.0f} img/s)")
    wanted = [("bf16", "fused"), ("bf16", "sequential"), ("fp32", "fused")]
    if all(k in speeds for k in wanted):
        base = speeds["fp32", "fused"]
        row("fused bf16 : sequential bf16 : fused fp32", " : ".join(f"{speeds[k] / base:.2f}" for k in wanted),
            "round img/s relative to fused fp32, measured side by side in this run")


if __name__ == "__main__":
    sys.exit(main())
