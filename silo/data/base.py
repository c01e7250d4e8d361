"""The types every dataset shares: what a builder returns, what a run receives, the cache.

A *builder* turns a DataConfig into `RawData`: the whole training set and the test set,
already on the device, in their storage form. `load_data` then carves the seeded
validation split out of the training set and hands the run a `DataSplits`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor

from silo.config import DataConfig
from silo.data.batches import iterate_batches, pick_split

# A training-batch transform: random augmentation driven by the generator, returning
# model-ready input. It takes the generator explicitly (never the global RNG) so that a
# run's seed alone fixes which crops and flips it sees.
Augment = Callable[[Tensor, torch.Generator], Tensor]
# Turns a batch in storage form (e.g. uint8 pixels) into model-ready input, deterministically.
Prepare = Callable[[Tensor], Tensor]


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are not where they are expected.

    A FileNotFoundError, so generic handlers still see it for what it is; its own type so
    that a sweep can tell "the user must fetch data" apart from a bug.
    """


@dataclass(frozen=True)
class RawData:
    """One dataset as a builder produced it: held once per process in a DataCache."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    prepare: Prepare | None = None
    augment: Augment | None = None


@runtime_checkable
class Splits(Protocol):
    """What the training loop reads of a run's data, and all it reads: the contract that
    `DataSplits` (tensors in memory), `StreamingSplits` and `DatasetStreamingSplits`
    (decoded by DataLoader workers) keep alike. Annotate with this, never with a union."""

    streaming: ClassVar[bool]

    # Read-only: a frozen dataclass (DataSplits) and plain attributes both satisfy them.
    @property
    def num_classes(self) -> int: ...

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    @property
    def in_channels(self) -> int: ...

    @property
    def chance(self) -> float: ...

    @property
    def num_train(self) -> int: ...

    @property
    def num_val(self) -> int: ...

    def train_batches(self, batch_size: int, generator: torch.Generator, *,
                      augment: bool = True) -> Iterator[tuple[Tensor, Tensor]]: ...

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]: ...


class StreamRaw(Protocol):
    """A dataset too large for memory as its builder produced it (file lists, a dataset
    object): it carves its own seeded splits, in place of make_splits."""

    def splits(self, *, val_fraction: float, seed: int, augment: bool, name: str = "") -> Splits: ...


class SplitsInfo:
    """What in-memory and streaming splits derive alike from num_classes and input_shape."""

    num_classes: int
    input_shape: tuple[int, ...]

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]

    @property
    def chance(self) -> float:
        """Accuracy of a constant guess (balanced classes): the accuracy a diverged run reports."""
        return 1.0 / self.num_classes


class StreamedSplitsInfo(SplitsInfo):
    """What the streamed splits (silo.data.imagenet.StreamingSplits, silo.data.streamed's
    DatasetStreamingSplits: no tensors, a DataLoader decodes their batches) derive alike from
    their positions of the training and validation parts in the training set."""

    streaming: ClassVar[bool] = True
    train_index: Tensor
    val_index: Tensor

    @property
    def num_train(self) -> int:
        return len(self.train_index)

    @property
    def num_val(self) -> int:
        return len(self.val_index)


@dataclass(frozen=True)
class DataSplits(SplitsInfo):
    """What one run trains and evaluates on. All tensors live on the requested device.

    Storage form and the two transforms (the contract with the training loop):

    - `train_x`, `val_x` and `test_x` share one storage form: float32 for mnist1d, uint8
      NCHW pixels for CIFAR (4x lighter on the device than float).
    - `prepare(xb)` turns any batch of them into model-ready input (for CIFAR: scale and
      per-channel normalisation). None means the stored form is already model-ready.
    - `augment(xb, generator)` is the training-batch transform: random crop + flip and then
      `prepare`, so its output is model-ready too. None when the dataset has none or the
      task turned it off (`task.data.augment: false`); then train batches go through
      `prepare` like the others.
    """

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    augment: Augment | None
    prepare: Prepare | None
    # Positions in the original training set of the training and validation parts, so a
    # split can be checked, logged or reproduced outside this package.
    train_index: Tensor
    val_index: Tensor
    name: str = ""

    # The training loop reads batches only through num_train, train_batches and
    # eval_batches below, which a streaming dataset (silo.data.imagenet.StreamingSplits,
    # no tensors) implements too.
    streaming: ClassVar[bool] = False

    @property
    def num_train(self) -> int:
        return len(self.train_y)

    @property
    def num_val(self) -> int:
        return len(self.val_y)

    def train_batches(
        self, batch_size: int, generator: torch.Generator, *, augment: bool = True
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of model-ready (xb, yb): the order drawn from `generator`, then
        `augment(xb, generator)` if asked for and the dataset has one, else `prepare(xb)`.
        Exactly the draws and ops of `iterate_batches` followed by that transform."""
        if augment and self.augment is not None:
            transform = self.augment
        elif self.prepare is not None:
            prepare = self.prepare

            def transform(xb: Tensor, _generator: torch.Generator) -> Tensor:
                return prepare(xb)
        else:
            transform = None
        return iterate_batches(self.train_x, self.train_y, batch_size, generator=generator, transform=transform)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """All of `split` ("val" or "test") in stored order, model-ready (`prepare`d)."""
        x, y = pick_split(split, (self.val_x, self.val_y), (self.test_x, self.test_y))
        for i in range(0, len(y), batch_size):
            xb = x[i : i + batch_size]
            yield (self.prepare(xb) if self.prepare is not None else xb), y[i : i + batch_size]


# A builder returns RawData, or (a dataset too large for memory) a StreamRaw such as
# silo.data.imagenet.StreamingRaw, whose `splits` takes the place of make_splits.
Builder = Callable[[DataConfig, Path, torch.device], "RawData | StreamRaw"]


class DataCache:
    """Raw datasets already loaded in this process, reused by every run it performs.

    The caller owns it (one per worker process): reading and decoding CIFAR or generating
    mnist1d costs seconds, a training run of a small task not much more. Not thread-safe;
    a worker process runs its trials one after another.
    """

    def __init__(self) -> None:
        self._raw: dict[Hashable, RawData | StreamRaw] = {}
        self.loads = 0  # how many times a builder actually ran (tests, logs)

    def get(self, key: Hashable, build: Callable[[], RawData | StreamRaw]) -> RawData | StreamRaw:
        raw = self._raw.get(key)
        if raw is None:
            raw = build()
            self._raw[key] = raw
            self.loads += 1
        return raw

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._raw
