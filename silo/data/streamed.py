"""A researcher's `torch.utils.data.Dataset` too large for memory, streamed by DataLoader workers.

The same contract with the training loop as `DataSplits` and imagenet's `StreamingSplits`
(`num_train`, `train_batches`, `eval_batches`), and the same batches as the dataset would
give in memory: the epoch's order is one randperm drawn from the run's generator over the
training part, full batches only, evaluation in stored order. The dataset's items come out
model-ready (its own transform, if any, must be deterministic: random transforms inside a
worker would not follow the run's seed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from silo.data.base import StreamedSplitsInfo
from silo.data.batches import epoch_order, in_batches, pick_split
from silo.data.common import worker_loader
from silo.data.splits import split_indices


def dataset_len(dataset: Dataset[Any]) -> int:
    """len() of a map-style dataset: torch's Dataset declares no __len__, though every one
    this package accepts has it (silo.data.foreign checks)."""
    return len(dataset)  # type: ignore[arg-type]  # see the docstring


@dataclass(frozen=True)
class DatasetStreamRaw:
    """Two datasets of (x, y) items as the factory returned them, checked (silo.data.foreign)."""

    # A researcher's datasets: items (x, y) of whatever types its collate turns into tensors.
    train: Dataset[Any]
    test: Dataset[Any]
    num_classes: int
    input_shape: tuple[int, ...]
    device: torch.device
    prepare: Callable[[Tensor], Tensor] | None = None

    def splits(self, *, val_fraction: float, seed: int, augment: bool, name: str = "") -> DatasetStreamingSplits:
        train_index, val_index = split_indices(dataset_len(self.train), val_fraction, seed)
        return DatasetStreamingSplits(self, train_index, val_index, name=name)


class DatasetStreamingSplits(StreamedSplitsInfo):
    augment = None

    def __init__(self, raw: DatasetStreamRaw, train_index: Tensor, val_index: Tensor, *, name: str = ""):
        self.raw = raw
        self.train_index, self.val_index = train_index, val_index
        self.name = name
        self.num_classes = raw.num_classes
        self.input_shape = raw.input_shape
        self.prepare = raw.prepare

    def _batches(self, dataset: Dataset[Any], batches: list[list[int]]) -> Iterator[tuple[Tensor, Tensor]]:
        device, prepare = self.raw.device, self.raw.prepare
        for xb, yb in worker_loader(dataset, batches, device):
            xb = torch.as_tensor(xb).to(device, non_blocking=True)
            yb = torch.as_tensor(yb).to(device=device, dtype=torch.int64, non_blocking=True)
            yield (prepare(xb) if prepare is not None else xb), yb

    def train_batches(
        self, batch_size: int, generator: torch.Generator, *, augment: bool = True
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch in an order drawn from `generator`: the batches iterate_batches would
        slice from the training part held in memory. `augment` is accepted for the contract;
        a factory's data has no augmentation of silo's."""
        order = epoch_order(self.train_index, batch_size, generator)
        return self._batches(self.raw.train, in_batches(order, batch_size, full=True))

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        dataset, index = pick_split(split, (self.raw.train, self.val_index.tolist()),
                                    (self.raw.test, list(range(dataset_len(self.raw.test)))))
        return self._batches(dataset, in_batches(index, batch_size))
