"""One Oracle round (one seed, one cycle, G max_lr values): fused vs sequential vs G train_run calls.

Three ways to train the same G runs, timed side by side in one process:

- fused:      silo.round.train_round(mode="fused"): the G members as one vmapped model;
- sequential: train_round(mode="sequential"): the members one after another, data shared;
- separate:   G independent train_run calls (each takes its data from a DataCache), which
              is what one Tune trial per run does inside its worker, minus Tune's overhead.

Cases: the quickstart's round (studies/quickstart.yaml's task and its 6-value grid, cycle 1
from a pruned parent), and ResNet-20 at batch 64 on synthetic CIFAR-10-format data (a few
steps; random pixels cost what real ones do). Each case runs at each --threads value; the
modes are interleaved in repeats (fused, sequential, separate, fused, ...) so that load
drifting on a shared machine hits them alike. Reported: the median seconds per mode and
the ratios sequential/fused and separate/fused (> 1: fusion is faster).

    python bench/fused_round.py                                  # CPU, 1 and 2 threads
    python bench/fused_round.py --cases resnet20 --device cuda --members 8 --epochs 1
    python bench/fused_round.py --cases quickstart --precision bf16  # fused bf16: explicit casts
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tiny datasets in real formats

from _synthetic_data import write_random_cifar

from oracle.study import load_study
from silo.config import DataConfig, TaskConfig
from silo.data import DataCache, load_data
from silo.round import train_round
from silo.train import train_run

ROOT = Path(__file__).resolve().parents[1]

MODES = ("fused", "sequential", "separate")


def quickstart_case(members: int) -> tuple[TaskConfig, list[float]]:
    study = load_study(ROOT / "studies" / "quickstart.yaml")
    grid = list(study.grid)
    if members != len(grid):
        # Log-spaced over the same range as the study's grid.
        lo, hi = grid[0], grid[-1]
        grid = [lo * (hi / lo) ** (i / max(1, members - 1)) for i in range(members)]
    return study.task_for_arm("oracle"), grid


def resnet20_case(root: str, members: int, epochs: float) -> tuple[TaskConfig, list[float]]:
    task = TaskConfig(
        data=DataConfig(name="cifar10", root=root), model="resnet20", epochs=epochs, batch_size=64,
        optimizer={"name": "sgd", "momentum": 0.9, "weight_decay": 5e-4},
        shape={"name": "warmup_step", "warmup": "0.2ep", "milestones": ("0.8ep",)},
    )
    lo, hi = 0.02, 0.4
    return task, [lo * (hi / lo) ** (i / max(1, members - 1)) for i in range(members)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_mode(mode: str, task, max_lrs, parent, cache: DataCache, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    if mode == "separate":
        results = [train_run(task, seed=0, cycle=1, max_lr=lr, parent=parent, cache=cache, device=device)
                   for lr in max_lrs]
    else:
        results = train_round(task, seed=0, cycle=1, max_lrs=max_lrs, parent=parent, cache=cache,
                              device=device, mode=mode)
    sync(device)
    assert len(results) == len(max_lrs)
    return time.perf_counter() - t0


def run_case(name: str, task: TaskConfig, max_lrs: list[float], args, device: torch.device) -> None:
    cache = DataCache()
    data = load_data(task.data, seed=0, device=device, cache=cache)  # read once, outside the timing
    # The round's parent: the dense run at the grid's middle value, not timed.
    parent = train_run(task, seed=0, cycle=0, max_lr=max_lrs[len(max_lrs) // 2], data=data, device=device).state
    for threads in args.threads if device.type == "cpu" else [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        time_mode("fused", task, max_lrs, parent, cache, device)  # warmup: first vmap, allocator
        times: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(args.repeats):
            for mode in MODES:
                times[mode].append(time_mode(mode, task, max_lrs, parent, cache, device))
        med = {m: statistics.median(v) for m, v in times.items()}
        where = f"{threads} thread(s)" if device.type == "cpu" else torch.cuda.get_device_name(device)
        print(f"{name:10s} G={len(max_lrs)} {where:14s} " + "  ".join(f"{m} {med[m]:7.2f}s" for m in MODES)
              + f"   sequential/fused {med['sequential'] / med['fused']:.2f}x"
              + f"  separate/fused {med['separate'] / med['fused']:.2f}x", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=["quickstart", "resnet20"], choices=["quickstart", "resnet20"])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--members", type=int, default=None, help="G (default: 6 on CPU, 8 on CUDA)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU thread counts to try")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats per mode")
    p.add_argument("--epochs", type=float, default=0.15, help="ResNet-20 epochs per cycle (on --n-train images)")
    p.add_argument("--n-train", type=int, default=4000, help="synthetic CIFAR training images")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="task.precision (default fp32)")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    members = args.members or (8 if device.type == "cuda" else 6)
    print(f"bench/fused_round.py: device {device}, {os.cpu_count()} cores, torch {torch.__version__}; "
          f"median of {args.repeats} interleaved repeats; cycle 1 from a pruned parent; precision {args.precision}")
    on = {"precision": args.precision, "device": str(device)}
    for case in args.cases:
        if case == "quickstart":
            task, lrs = quickstart_case(members)
            run_case("quickstart", task.model_copy(update=on), lrs, args, device)
        else:
            with tempfile.TemporaryDirectory(prefix="silo-bench-cifar-") as root:
                write_random_cifar(root, "cifar10", n_train=args.n_train, n_test=500, seed=0)
                print(f"resnet20: DATA IS SYNTHETIC ({args.n_train} random CIFAR-10-format images), "
                      f"{args.epochs} epochs per cycle")
                task, lrs = resnet20_case(root, members, args.epochs)
                run_case("resnet20", task.model_copy(update=on), lrs, args, device)


if __name__ == "__main__":
    main()
