"""What each of the SILO paper's setups costs: runs per arm and estimated device-hours.

For every study file given (default: every studies/*.yaml but quickstart and smoke) it

1. measures training images/s of the study's model on one device: the full step the
   training loop takes (for in-memory datasets the batched crop + flip + normalise of a
   uint8 batch; forward; cross-entropy; backward; the study's optimizer step; the mask
   step), at the study's batch size and input shape, on random data: `--warmup` untimed
   steps, then `--rounds` interleaved rounds of `--steps` timed steps per model. The estimates
   use the fastest step (the one least
   disturbed by other work on a shared machine); the median is reported beside it, and
   the two differ much only on a loaded machine. Streaming ImageNet's JPEG decoding
   is not in the step: it runs in DataLoader workers, in parallel, and must keep up;
2. counts the runs each arm needs: the Oracle grid x seeds x cycles, SILO seeds x cycles
   (each baseline, like SILO, seeds x cycles);
3. estimates hours = runs x epochs per cycle x training images / (images/s), where the
   training images are the dataset's training set minus the study's validation split.
   With `--fused-rounds` (the default on CUDA) the Oracle's hours come from the img/s of
   its fused trial (silo.round's stack of grid values, x seeds where `fuse_seeds` fuses
   them, compiled as `execution` resolves there), the lone runs' hours shown beside them.
   Evaluation (a forward pass over the val and test sets per run) adds under 1 % and is
   left out; so are pruning and start-up.

Batches too large for a CPU can be capped (`--max-batch`): images/s is then measured at the
smaller batch and says so; on a GPU, measure at the study's own batch size.

    python bench/paper_cost.py                              # CPU, 2 threads, ~3-5 minutes
    python bench/paper_cost.py --device cuda --rounds 5 --steps 20 --warmup 5 --max-batch 0 --max-batch-224 0
    python bench/paper_cost.py studies/resnet20_cifar10.yaml --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout

from oracle.study import Study, load_study
from silo.data import random_crop_flip
from silo.data.common import Normalize
from silo.models import build_model
from silo.pruning import Mask, MaskedStep
from silo.step import make_optimizer

ROOT = Path(__file__).resolve().parents[1]

# dataset -> (input shape, classes, training-set size, held in memory?)
DATASETS = {
    "mnist1d": ((1, 40), 10, 4000, True),
    "cifar10": ((3, 32, 32), 10, 50_000, True),
    "cifar100": ((3, 32, 32), 100, 50_000, True),
    "tiny_imagenet": ((3, 64, 64), 200, 100_000, True),
    "imagenet": ((3, 224, 224), 1000, 1_281_167, False),
}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model(study: Study, device: torch.device) -> tuple[tuple[int, ...], int, bool, torch.nn.Module]:
    """(input shape, classes, held in memory?, the study's model seeded and on `device`)."""
    task = study.task
    shape, classes, _, in_memory = DATASETS[task.data.name]
    if task.data.name == "mnist1d":
        shape = (1, task.model_args.get("length", 40))
    torch.manual_seed(0)
    model = build_model(task.model, num_classes=classes, in_channels=shape[0], **task.model_args).to(device)
    return shape, classes, in_memory, model


def make_step(study: Study, batch: int, device: torch.device):
    """A function that runs one training step of the study's model and optimizer at `batch`
    and returns its duration in seconds."""
    task = study.task
    shape, classes, in_memory, model = _model(study, device)
    optimizer = make_optimizer(task, model.parameters(), 0.01)
    masked = MaskedStep(model, Mask.ones(model))
    gen = torch.Generator().manual_seed(0)
    normalize = Normalize((0.5,) * shape[0], (0.25,) * shape[0], device)
    if in_memory and len(shape) == 3:
        pixels = torch.randint(0, 256, (batch, *shape), dtype=torch.uint8, device=device)

        def make_batch() -> torch.Tensor:
            return normalize(random_crop_flip(pixels, gen, 4))
    else:
        x = torch.randn(batch, *shape, device=device)

        def make_batch() -> torch.Tensor:
            return x
    y = torch.randint(0, classes, (batch,), device=device)
    model.train()

    def step() -> float:
        sync(device)
        t = time.perf_counter()
        loss = F.cross_entropy(model(make_batch()), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        masked()
        sync(device)
        return time.perf_counter() - t

    return step


def round_members(study: Study, device: torch.device) -> tuple[int, int]:
    """(values, seeds) of one fused Oracle trial of the study on `device`: the grid, times
    the seeds where seeds fuse, within execution.max_members."""
    from oracle.sweep.execute import seeds_fused

    ex, task = study.execution, study.task
    values = min(len(study.grid), ex.max_members)
    seeds = 1
    if seeds_fused(ex.fuse, ex.fuse_seeds, task, device):
        seeds = max(1, min(len(study.seeds), ex.max_members // values))
    return values, seeds


def make_round_step(study: Study, batch: int, device: torch.device, values: int, seeds: int):
    """A function that runs one step of a fused Oracle trial (silo.round's stack of
    values x seeds members, compiled as `execution` resolves on `device`) and returns its
    duration in seconds; the first calls compile."""
    from silo.accel import Accel
    from silo.fused import FusedStack

    task = study.task
    shape, classes, _, model = _model(study, device)
    count = values * seeds
    accel = Accel.for_run(task.precision, study.execution, model, device, fused=True)
    members = FusedStack([model] * count, task, [Mask.ones(model)] * count, accel,
                       owner=[s for s in range(seeds) for _ in range(values)] if seeds > 1 else None)
    batches = [(torch.randn(batch, *shape, device=device), torch.randint(0, classes, (batch,), device=device))
               for _ in range(seeds)]
    lr = torch.full((count,), 0.01, device=device)

    def step() -> float:
        sync(device)
        t = time.perf_counter()
        members.train_step(batches, lr)
        sync(device)
        return time.perf_counter() - t

    return step


def costs(study: Study, images_per_s: float) -> dict:
    task = study.task
    train_images = round(DATASETS[task.data.name][2] * (1 - task.data.val_fraction))
    seeds, cycles = len(study.seeds), study.cycles
    runs = {
        "oracle": len(study.grid) * seeds * cycles if study.arms.oracle else 0,
        "silo": seeds * cycles if study.arms.silo else 0,
        "baselines": len(study.arms.baselines) * seeds * cycles,
    }
    per_run_h = task.epochs * train_images / images_per_s / 3600
    return {
        "train_images": train_images,
        "epochs": task.epochs,
        "grid": len(study.grid),
        "seeds": seeds,
        "cycles": cycles,
        "runs": runs,
        "hours_per_run": per_run_h,
        "hours": {arm: n * per_run_h for arm, n in runs.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("studies", nargs="*", help="study files (default: studies/*.yaml but quickstart, smoke)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="CPU intra-op threads (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--steps", type=int, default=2, help="timed steps per model per round (default 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per model first (default 1)")
    p.add_argument("--max-batch", type=int, default=64,
                   help="measure at most this batch (0: the study's own); default 64, for CPUs")
    p.add_argument("--max-batch-224", type=int, default=8,
                   help="the cap for 224x224 inputs (0: --max-batch); default 8, for CPUs")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--fused-rounds", action=argparse.BooleanOptionalAction, default=None,
                   help="estimate the Oracle from its fused rounds (default: on CUDA)")
    args = p.parse_args(argv)
    if args.fused_rounds is None:
        args.fused_rounds = torch.device(args.device).type == "cuda"

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    files = [Path(f) for f in args.studies] or [
        f for f in sorted((ROOT / "studies").glob("*.yaml")) if f.stem not in ("quickstart", "smoke")
    ]
    if device.type == "cuda":
        what = f"{torch.cuda.get_device_name(device)}, fp32"
    else:
        what = f"CPU ({cpu_name()}), {args.threads} threads, fp32"
    print(f"device: {what}; torch {torch.__version__}; {args.rounds} interleaved rounds of "
          f"{args.steps} timed steps per model, after {args.warmup} untimed")

    # One measurement per distinct (model, input, batch, optimizer): studies that differ only
    # in pruning or schedule share it.
    studies, keys, configs = [], [], {}
    for f in files:
        study = load_study(f)
        task = study.task
        cap = args.max_batch
        if DATASETS[task.data.name][0][-1] >= 224 and args.max_batch_224 > 0:
            cap = args.max_batch_224
        batch = task.batch_size if cap <= 0 else min(task.batch_size, cap)
        key = (task.model, json.dumps(task.model_args, sort_keys=True), task.data.name, batch,
               task.optimizer.name)
        studies.append((f, study, batch))
        keys.append(key)
        configs.setdefault(key, (study, batch))
    steps = {key: make_step(study, batch, device) for key, (study, batch) in configs.items()}
    times: dict[tuple, list[float]] = {key: [] for key in steps}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    # Interleaved rounds (A B C ..., A B C ..., ...): load that comes and goes on a shared
    # machine then hits every model alike, and each gets its chances at a quiet moment.
    for r in range(args.rounds):
        t = time.perf_counter()
        for key, step in steps.items():
            times[key] += [step() for _ in range(args.steps)]
        print(f"  round {r + 1}/{args.rounds}: {time.perf_counter() - t:.0f} s", flush=True)
    fused: dict[tuple, tuple[float, str]] = {}  # key -> (round img/s, shape)
    if args.fused_rounds:
        for key, (study, batch) in configs.items():
            values, seeds = round_members(study, device)
            step = make_round_step(study, batch, device, values, seeds)
            for _ in range(args.warmup + 2):  # compilation, where execution compiles
                step()
            best = min(step() for _ in range(args.rounds * args.steps))
            fused[key] = (batch * values * seeds / best, f"{values} values x {seeds} seeds")
            print(f"  fused round of {study.name}: {fused[key][1]}, {fused[key][0]:,.0f} img/s", flush=True)

    rows = []
    for (f, study, batch), key in zip(studies, keys):
        task = study.task
        best, median = batch / min(times[key]), batch / statistics.median(times[key])
        row = {
            "study": study.name, "file": str(f.relative_to(ROOT) if f.is_absolute() else f),
            "model": task.model, "dataset": task.data.name, "batch": task.batch_size,
            "measured_batch": batch, "images_per_s": best, "images_per_s_median": median,
            "timed_steps": len(times[key]), **costs(study, best),
        }
        if key in fused:  # the Oracle's runs train as fused rounds: their hours from the round's speed
            round_ips, shape = fused[key]
            row.update(oracle_round=shape, oracle_round_images_per_s=round_ips,
                       oracle_hours_lone=row["hours"]["oracle"])
            row["hours"]["oracle"] = costs(study, round_ips)["hours"]["oracle"]
        rows.append(row)

    print()
    print("| study | model / data | Oracle runs | SILO runs | images/s best (median), batch | "
          "Oracle h | SILO h | all arms h |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        b = f"{r['measured_batch']}" + ("" if r["measured_batch"] == r["batch"] else f" of {r['batch']}")
        total = sum(r["hours"].values())
        oracle = f"{r['hours']['oracle']:,.0f}"
        if "oracle_round" in r:  # fused rounds, and what lone runs would have cost
            oracle += (f" (fused {r['oracle_round']}, {r['oracle_round_images_per_s']:,.0f} img/s; "
                       f"lone runs {r['oracle_hours_lone']:,.0f})")
        print(f"| {r['study']} | {r['model']} / {r['dataset']} | {r['runs']['oracle']:,} | "
              f"{r['runs']['silo']:,} | {r['images_per_s']:.1f} ({r['images_per_s_median']:.1f}), {b} | "
              f"{oracle} | {r['hours']['silo']:,.0f} | {total:,.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": what, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
