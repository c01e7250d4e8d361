"""The seeded validation split carved out of the training set."""

from __future__ import annotations

import torch
from torch import Tensor

from silo.data.base import DataSplits, RawData
from silo.seeds import derive_seed


def _split_seed(seed: int) -> int:
    # Its own random stream: the split is not a function of the numbers that drew the weights.
    return derive_seed(seed, "val_split")


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(train_index, val_index) of a training set of n examples; both sorted, disjoint.

    Same seed -> same split; val size = round(val_fraction * n).
    """
    n_val = round(val_fraction * n)
    if not 1 <= n_val <= n - 1:
        raise ValueError(
            f"val_fraction {val_fraction} of {n} training examples leaves {n_val} for "
            f"validation and {n - n_val} for training; both need at least one"
        )
    gen = torch.Generator().manual_seed(_split_seed(seed))
    perm = torch.randperm(n, generator=gen)
    # Sorted so that the stored order depends only on which examples are in each part.
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def make_splits(raw: RawData, *, val_fraction: float, seed: int, augment: bool, name: str = "") -> DataSplits:
    train_index, val_index = split_indices(len(raw.train_y), val_fraction, seed)
    device = raw.train_x.device
    ti, vi = train_index.to(device), val_index.to(device)
    return DataSplits(
        train_x=raw.train_x[ti],
        train_y=raw.train_y[ti],
        val_x=raw.train_x[vi],
        val_y=raw.train_y[vi],
        test_x=raw.test_x,
        test_y=raw.test_y,
        num_classes=raw.num_classes,
        input_shape=raw.input_shape,
        augment=raw.augment if augment else None,
        prepare=raw.prepare,
        train_index=train_index,
        val_index=val_index,
        name=name,
    )
