"""Datasets on the device: ``load_data(cfg, seed=..., device=..., cache=...) -> Splits``.

- `DATASETS`: name -> builder ``builder(cfg, root, device) -> RawData | StreamRaw``. To add a dataset,
  write a builder and add one line here. A name with a colon, `torchvision:CLASS` or
  `package.module:callable`, is a researcher's own data (silo.data.foreign: the contract).
- `load_data`: builds (or takes from the caller's `DataCache`) the raw dataset, then carves
  the seeded validation split out of its training set.
- `iterate_batches` / `steps_per_epoch`: mini-batches of on-device tensors.

See `DataSplits` for the storage form of the tensors and the `prepare` / `augment`
contract with the training loop. The loop itself reads batches only through
`num_train`, `train_batches(batch_size, generator, augment=...)` and
`eval_batches(split, batch_size)` (the `Splits` protocol), which `StreamingSplits` (imagenet:
too large for memory, decoded by DataLoader workers; see imagenet.py) and
`DatasetStreamingSplits` (streamed.py) implement too.
"""

from __future__ import annotations

import json

import torch

from silo.config import DataConfig
from silo.data.base import (
    Augment,
    Builder,
    DataCache,
    DatasetNotFoundError,
    DataSplits,
    Prepare,
    RawData,
    Splits,
    StreamRaw,
)
from silo.data.batches import iterate_batches, steps_per_epoch
from silo.data.cifar import build_cifar10, build_cifar100, check_cifar
from silo.data.common import CropFlip, Normalize, random_crop_flip, resolve_root
from silo.data.imagenet import StreamingRaw, StreamingSplits, build_imagenet, check_imagenet
from silo.data.mnist1d import build_mnist1d
from silo.data.splits import make_splits, split_indices
from silo.data.streamed import DatasetStreamingSplits, DatasetStreamRaw
from silo.data.tiny_imagenet import build_tiny_imagenet, check_tiny_imagenet

# The registry: the only module-level mutable state of this package.
DATASETS: dict[str, Builder] = {
    "mnist1d": build_mnist1d,
    "cifar10": build_cifar10,
    "cifar100": build_cifar100,
    "tiny_imagenet": build_tiny_imagenet,  # ImageNet-200, 64x64, in memory
    "imagenet": build_imagenet,  # streamed from disk (StreamingSplits)
}


def check_data(cfg: DataConfig) -> None:
    """Raise DatasetNotFoundError if a dataset's files are visibly missing, without loading.

    For a driver to stop before it schedules hundreds of runs that would each fail; the
    builders still check every file when they load.
    """
    root = resolve_root(cfg.root)
    if cfg.name in ("cifar10", "cifar100"):
        check_cifar(cfg.name, root)
    elif cfg.name == "tiny_imagenet":
        check_tiny_imagenet(root)
    elif cfg.name == "imagenet":
        check_imagenet(root)
    elif cfg.name.startswith("torchvision:"):
        from silo.data.foreign import check_torchvision_files

        check_torchvision_files(cfg, root)


def dataset_names() -> list[str]:
    return sorted(DATASETS)


def _device_key(device: torch.device) -> str:
    # "cuda" and "cuda:0" are the same memory; key them the same so the cache is not split.
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def load_data(
    cfg: DataConfig,
    *,
    seed: int,
    device: torch.device | str = "cpu",
    cache: DataCache | None = None,
) -> Splits:
    """The train / val / test tensors of one run, on `device`.

    The validation part is a seeded split of the training set (same seed, same split).
    With a cache, the raw dataset is read or generated once per process and reused.
    A dataset too large for memory (imagenet) gives a StreamingSplits: the same
    train_batches / eval_batches / num_train contract, batches decoded by DataLoader workers.
    """
    builder = DATASETS.get(cfg.name)
    if builder is None and ":" in cfg.name:
        from silo.data.foreign import build_foreign_data

        builder = build_foreign_data
    if builder is None:
        raise ValueError(f"unknown dataset {cfg.name!r}; known datasets: {', '.join(dataset_names())}")
    device = torch.device(device)
    root = resolve_root(cfg.root)

    def build() -> RawData | StreamRaw:
        return builder(cfg, root, device)

    if cache is None:
        raw = build()
    else:
        # Everything that changes the raw tensors; val_fraction, augment and seed do not.
        args = json.dumps(cfg.args, sort_keys=True, default=repr)
        raw = cache.get((cfg.name, str(root), cfg.num_samples, args, cfg.num_classes, _device_key(device)), build)
    if isinstance(raw, RawData):
        return make_splits(raw, val_fraction=cfg.val_fraction, seed=seed, augment=cfg.augment, name=cfg.name)
    return raw.splits(val_fraction=cfg.val_fraction, seed=seed, augment=cfg.augment, name=cfg.name)


__all__ = [
    "DATASETS",
    "check_data",
    "Augment",
    "Builder",
    "CropFlip",
    "DataCache",
    "DataSplits",
    "DatasetStreamRaw",
    "DatasetStreamingSplits",
    "DatasetNotFoundError",
    "Normalize",
    "Prepare",
    "RawData",
    "Splits",
    "StreamRaw",
    "StreamingRaw",
    "StreamingSplits",
    "dataset_names",
    "iterate_batches",
    "load_data",
    "random_crop_flip",
    "resolve_root",
    "split_indices",
    "steps_per_epoch",
]
