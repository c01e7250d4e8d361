"""What keeping pruned weights at zero costs: masked step time / unmasked step time.

A step is forward + backward + SGD(momentum 0.9, weight decay 5e-4); the masked step adds
one MaskedStep call after optimizer.step(). Both arms train copies of the same pruned
network on the same batch, in blocks interleaved ABBA-style within one process (so drift
in clock speed or machine load hits both alike), after a warmup. Reported: the ratio of
median block times, and the median of the per-repeat paired ratios. Goal: <= 1.05.

    python bench/mask_cost.py                      # both models, CPU
    python bench/mask_cost.py --threads 4          # a quiet multi-core machine
    python bench/mask_cost.py --device cuda
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from silo.models import build_model
from silo.pruning import Mask, MaskedStep, global_magnitude

# name -> (input shape of one sample, classes); the batch dimension is added from --batch.
MODELS = {
    "mnist1d_cnn": ((1, 40), 10),
    "resnet20": ((3, 32, 32), 10),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, enforce: MaskedStep | None):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if enforce is not None:
            enforce()

    return step


def _time_block(step, steps: int, device: torch.device) -> float:
    """Seconds per step over a block of `steps` steps."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def measure(name: str, batch: int, device: torch.device, sparsity: float,
            block_s: float, repeats: int, warmup: int) -> dict[str, float]:
    shape, classes = MODELS[name]
    torch.manual_seed(0)
    base = build_model(name, num_classes=classes, in_channels=shape[0]).to(device)
    # Prune every layer (layer sparsity > 0 everywhere) so MaskedStep does its full work;
    # a dense mask would make the masked arm a no-op and the benchmark meaningless.
    rate = 1 - (1 - sparsity) ** 0.5
    mask = Mask.ones(base)
    for _ in range(2):
        mask = global_magnitude(base, mask, rate)
        mask.apply_(base)
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, classes, (batch,), device=device)

    plain_model, masked_model = copy.deepcopy(base).train(), copy.deepcopy(base).train()
    enforce = MaskedStep(masked_model, mask)
    arms = {"plain": _make_step(plain_model, x, y, None),
            "masked": _make_step(masked_model, x, y, enforce)}
    for step in arms.values():
        _time_block(step, warmup, device)  # first calls pay one-off kernel/allocator setup
    per_step = _time_block(arms["plain"], warmup, device)
    # Blocks of about block_s seconds: long enough for the timer, short enough that both
    # arms see the same machine state (ResNet-20 on a CPU is ~1 s/step, MNIST-1D ~ms).
    steps = max(1, round(block_s / per_step))

    times: dict[str, list[float]] = {"plain": [], "masked": []}
    for r in range(repeats):
        order = ("plain", "masked") if r % 2 == 0 else ("masked", "plain")  # ABBA
        for arm in order:
            times[arm].append(_time_block(arms[arm], steps, device))

    # The enforcer alone: a direct estimate of the overhead, insensitive to step-time noise.
    enforce_steps = max(100, steps)
    enforce_s = statistics.median(_time_block(enforce, enforce_steps, device) for _ in range(repeats))
    plain = statistics.median(times["plain"])
    masked = statistics.median(times["masked"])
    return {
        "steps_per_block": steps,
        "plain_ms": plain * 1e3,
        "masked_ms": masked * 1e3,
        "ratio": masked / plain,
        "paired_ratio": statistics.median(m / p for m, p in zip(times["masked"], times["plain"])),
        "enforce_ms": enforce_s * 1e3,
        "enforce_ratio": 1 + enforce_s / plain,
        "sparsity": mask.sparsity(),
        "masked_tensors": len(enforce.params),
        "masked_weights": sum(p.numel() for p in enforce.params),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    # Intra-op threads. One by default: a ratio needs stable timings, and a thread pool on
    # a machine shared with other jobs (or with fewer free cores than threads) stalls at
    # random, by 10x on a loaded 2-core box. Pass --threads N on a quiet machine.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--block-seconds", type=float, default=0.5, help="length of a timed block")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per arm first")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device={label} threads={torch.get_num_threads()} batch={args.batch} "
          f"sparsity={args.sparsity} block={args.block_seconds}s repeats={args.repeats} "
          f"torch={torch.__version__}")
    for name in args.models:
        r = measure(name, args.batch, device, args.sparsity, args.block_seconds, args.repeats,
                    args.warmup)
        print(f"{name:12s} plain {r['plain_ms']:8.3f} ms/step  masked {r['masked_ms']:8.3f} ms/step  "
              f"ratio {r['ratio']:.4f} (paired median {r['paired_ratio']:.4f})  "
              f"MaskedStep alone {r['enforce_ms']:.4f} ms -> {r['enforce_ratio']:.4f}  "
              f"[{r['steps_per_block']} steps/block, {r['masked_tensors']} tensors, "
              f"{r['masked_weights']} weights, sparsity {r['sparsity']:.3f}]")


if __name__ == "__main__":
    main()
