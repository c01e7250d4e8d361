"""Images/s of the device-resident CIFAR path vs a torchvision DataLoader, side by side.

Both paths feed the same ResNet-20 SGD step at the same batch size:

- device-resident (silo.data): uint8 tensors on the device, batched crop+flip+normalise,
  iterate_batches;
- torchvision DataLoader: the CIFAR10 dataset object with RandomCrop(32, padding=4),
  RandomHorizontalFlip, ToTensor, Normalize; best of the num_workers values given.

No CIFAR files are needed: a synthetic dataset with CIFAR-10's shape and on-disk format is
written to a temp dir and both paths read it. Random pixels cost the same to load, augment
and train on as real ones; only the accuracy would differ, and it is not measured.

Training steps are timed in interleaved rounds (A B C D, A B C D, ...) and each path
reports its median and best round, so that load drifting on a shared machine hits every
path alike. The data pipeline alone (no model) is timed too: on a CPU the training step
dominates and hides most of the difference between the paths.

    python bench/data_path.py                 # CPU, about 2 minutes on 2 cores
    python bench/data_path.py --device cuda --rounds 10 --steps-per-round 50 --data-batches 300
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
import torch.nn.functional as F
from torchvision import datasets, transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tiny datasets in real formats

from _synthetic_data import write_random_cifar

from silo.config import DataConfig
from silo.data import iterate_batches, load_data
from silo.models import build_model

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # what silo.data uses too


class SyntheticCIFAR10(datasets.CIFAR10):
    """torchvision's CIFAR10, md5 lists cleared: synthetic files cannot match the official
    checksums. Defined at module level (not taken from silo.data) so that DataLoader workers
    can pickle the dataset under any start method."""

    train_list = [[name, None] for name, _ in datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR10.test_list]
    meta = {**datasets.CIFAR10.meta, "md5": None}


def torchvision_dataset(root: str) -> SyntheticCIFAR10:
    """The baseline as a user writes it: the dataset object with the usual transforms."""
    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])
    return SyntheticCIFAR10(root, train=True, transform=transform, download=False)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forever(make_epoch):
    """Batches across epoch boundaries: a fresh epoch iterator whenever one runs out."""
    while True:
        yield from make_epoch()


def rate(batches, steps: int, step_fn, device: torch.device, batch_size: int) -> float:
    """images/s of `steps` steps."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step_fn(*next(batches))
    sync(device)
    return steps * batch_size / (time.perf_counter() - t0)


def make_train_step(device: torch.device):
    torch.manual_seed(0)  # same initial weights for every path
    model = build_model("resnet20", num_classes=10, in_channels=3).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)

    def step(xb, yb):
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def no_step(xb, yb) -> None:
    pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds of training steps")
    p.add_argument("--steps-per-round", type=int, default=2, help="timed training steps per path and round")
    p.add_argument("--warmup", type=int, default=1, help="untimed training steps per path first")
    p.add_argument("--data-batches", type=int, default=30, help="batches for the data-only timing")
    p.add_argument("--n-train", type=int, default=5000, help="synthetic training images")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader num_workers to try")
    args = p.parse_args()
    device = torch.device(args.device)
    bs = args.batch_size
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")

    with tempfile.TemporaryDirectory(prefix="silo-bench-cifar-") as root:
        write_random_cifar(root, "cifar10", n_train=args.n_train, n_test=1000, seed=0)
        if device.type == "cuda":
            where = torch.cuda.get_device_name(device)
        else:
            where = f"CPU, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores"
        print(f"bench/data_path.py: device {device} ({where}), batch {bs}, ResNet-20 + SGD step")
        print(f"DATA IS SYNTHETIC: {args.n_train} random images in CIFAR-10's on-disk format, in a temp dir")
        if device.type == "cpu":
            print("CPU RUN: the training step dominates here; the GPU is what the device-resident path is for")

        # ---- device-resident path (silo.data)
        t0 = time.perf_counter()
        splits = load_data(DataConfig(name="cifar10", root=root), seed=0, device=device)
        sync(device)
        load_s = time.perf_counter() - t0

        def device_batches():
            gen = torch.Generator().manual_seed(0)

            def epoch():
                for xb, yb in iterate_batches(splits.train_x, splits.train_y, bs, generator=gen):
                    yield splits.augment(xb, gen), yb

            return forever(epoch)

        # ---- torchvision DataLoader path
        dataset = torchvision_dataset(root)

        def loader_batches(workers: int):
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=bs, shuffle=True, drop_last=True, num_workers=workers,
                pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                generator=torch.Generator().manual_seed(0),
            )

            def epoch():
                for xb, yb in loader:
                    yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)

            return forever(epoch)

        dev = "device-resident (silo.data)"
        paths = {dev: device_batches}
        paths.update({f"DataLoader num_workers={w}": (lambda w=w: loader_batches(w)) for w in args.workers})

        # Data pipeline alone, one path after the other. The untimed batches first drain
        # what worker processes prefetched, so every path is timed in its steady state.
        data_only = {}
        for name, make in paths.items():
            batches = make()
            rate(batches, 2 + 2 * max(args.workers), no_step, device, bs)
            data_only[name] = rate(batches, args.data_batches, no_step, device, bs)
            print(f"  data only  {name:30s} {data_only[name]:9.1f} img/s", flush=True)

        # Training, interleaved: every path has its own model, optimizer and batch stream.
        streams = {name: (make(), make_train_step(device)) for name, make in paths.items()}
        for batches, step in streams.values():
            rate(batches, args.warmup, step, device, bs)
        train: dict[str, list[float]] = {name: [] for name in paths}
        for r in range(args.rounds):
            for name, (batches, step) in streams.items():
                train[name].append(rate(batches, args.steps_per_round, step, device, bs))
            print(f"  training round {r + 1}/{args.rounds}: "
                  + ", ".join(f"{v[-1]:.1f}" for v in train.values()) + " img/s", flush=True)
        del streams  # ends the DataLoader workers

    med = {n: statistics.median(v) for n, v in train.items()}
    best = {n: max(v) for n, v in train.items()}
    loaders = [n for n in paths if n != dev]
    best_loader = max(loaders, key=med.get)
    best_loader_data = max(loaders, key=data_only.get)
    steps = args.rounds * args.steps_per_round
    print()
    print(f"one-off load of the device-resident data (read files + move to {device}): {load_s:.2f} s")
    print(f"{'path':30s} {'train img/s median':>19s} {'best':>8s} {'data-only img/s':>16s}")
    for n in paths:
        print(f"{n:30s} {med[n]:19.1f} {best[n]:8.1f} {data_only[n]:16.1f}")
    print(f"({steps} timed training steps per path in {args.rounds} interleaved rounds; "
          f"{args.data_batches} batches for data-only)")
    print(f"training  ratio device-resident / best DataLoader ({best_loader}): {med[dev] / med[best_loader]:.2f}x")
    print(f"data-only ratio device-resident / best DataLoader ({best_loader_data}): "
          f"{data_only[dev] / data_only[best_loader_data]:.2f}x")


if __name__ == "__main__":
    main()
