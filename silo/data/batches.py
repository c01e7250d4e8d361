"""Mini-batches sliced from tensors that already live on the device (no DataLoader), and
the epoch order and batch lists that streamed splits hand a DataLoader.

With the whole dataset on the device, a batch is one index gather: no worker processes,
no host-to-device copy per batch, no per-sample Python (airbench's recipe).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch
from torch import Tensor

T = TypeVar("T")


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = True) -> int:
    """Optimizer steps in one pass over n examples."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    steps = n // batch_size if drop_last else math.ceil(n / batch_size)
    if steps == 0:
        # Zero steps would make an epoch-based schedule divide by zero or loop forever.
        raise ValueError(f"batch_size {batch_size} is larger than the {n} training examples")
    return steps


def iterate_batches(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
    drop_last: bool = True,
    transform: Callable[[Tensor, torch.Generator], Tensor] | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of (xb, yb). The order is a permutation drawn from `generator`.

    The generator may live on the CPU while x and y live on a GPU: the permutation (one
    small int64 tensor per epoch) is drawn where the generator is and moved. That keeps
    the batch order of a seed the same on every device. `transform(xb, generator)`, if
    given, is applied to each xb with the same generator (e.g. `DataSplits.augment`).
    """
    n = len(y)
    if len(x) != n:
        raise ValueError(f"x has {len(x)} examples, y has {n}")
    if x.device != y.device:
        raise ValueError(f"x is on {x.device}, y on {y.device}; put both on one device")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if (shuffle or transform is not None) and generator is None:
        raise ValueError("shuffle=True or a transform needs a generator: the batch order and augmentation "
                         "must be seeded")
    stop = n - n % batch_size if drop_last else n
    if shuffle and generator is not None:  # (not None: checked above, restated for the type checker)
        perm = torch.randperm(n, generator=generator, device=generator.device).to(x.device)
    for start in range(0, stop, batch_size):
        if shuffle:
            idx = perm[start : start + batch_size]
            xb, yb = x[idx], y[idx]
        else:
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        if transform is not None and generator is not None:
            xb = transform(xb, generator)
        yield xb, yb


def pick_split(split: str, val: T, test: T) -> T:
    """What evaluating `split` reads: `val` for "val", `test` for "test"; ValueError otherwise."""
    if split == "val":
        return val
    if split == "test":
        return test
    raise ValueError(f"split must be 'val' or 'test', got {split!r}")


def epoch_order(index: Tensor, batch_size: int, generator: torch.Generator) -> list[int]:
    """One epoch's order over the positions `index` (a streamed split's training part): one
    randperm drawn from `generator`, where it lives, as iterate_batches draws it."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if generator is None:
        raise ValueError("train_batches needs a generator: the batch order must be seeded")
    perm = torch.randperm(len(index), generator=generator, device=generator.device).cpu()
    order: list[int] = index[perm].tolist()
    return order


def in_batches(items: Sequence[T], batch_size: int, *, full: bool = False) -> list[list[T]]:
    """`items` cut into consecutive batches of `batch_size` (a DataLoader's batch_sampler);
    full=True leaves out the last one when it is short, as training does."""
    stop = len(items) - len(items) % batch_size if full else len(items)
    return [list(items[s : s + batch_size]) for s in range(0, stop, batch_size)]
