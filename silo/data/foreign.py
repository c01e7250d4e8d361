"""A researcher's own data: `torchvision:CLASS` and `package.module:callable` in `task.data.name`.

The contract (docs/extending.md, "Your own network and data", links here):

``torchvision:CLASS`` -- a class of ``torchvision.datasets`` (``FashionMNIST``, ``MNIST``,
``CIFAR10``, ``SVHN``, ``ImageFolder``, ``FakeData``, ...) read from ``task.data.root``
(else ``$SILO_DATA_ROOT``, else ``./data``) with ``download=False`` and ``task.data.args``
as keyword arguments. Train and test come from the class's own split argument:
``train=True/False`` (MNIST, FashionMNIST, CIFAR, ...), ``split="train"/"test"`` (SVHN,
...), ``root/train`` and ``root/test`` for the folder classes (``ImageFolder``,
``DatasetFolder``); ``FakeData``'s test set is the same generator at the images after the
training ones. Images are decoded once to uint8 and normalised with the training images'
per-channel mean and standard deviation. They must share one size.

``package.module:callable`` -- called with ``task.data.args`` as keyword arguments; returns
``(train, test)``, each either

- a pair of tensors ``(x, y)``: x floating point of shape ``(N, *input_shape)``, y integer
  labels of shape ``(N,)``; or
- a ``torch.utils.data.Dataset`` (``__len__`` and ``__getitem__``) whose items are ``(x, y)``:
  x a floating-point tensor of ``input_shape``, y an int (or a 0-d integer tensor).

For both, x is model-ready: silo applies no normalisation and no augmentation
(``task.data.augment`` concerns the built-in datasets). The labels must be the integers
``0..K-1`` with every class present in train; K is then the number of classes, unless the
study sets ``task.data.num_classes`` (then the labels must lie in ``0..num_classes-1``).
Neither split may be empty. The seeded validation split is carved from train, as for every
dataset (``task.data.val_fraction``).

Where the data live: tensors, and datasets whose items fit in memory (at most
``IN_MEMORY_BYTES`` in all), are held on the device like the built-in datasets. A larger
dataset streams through DataLoader workers (silo.data.streamed), like imagenet; its labels
are read from a ``targets`` attribute if it has one (a list or tensor, as torchvision's),
else from one pass over its items. Every check here runs on the driver before a study
starts (oracle.study.probe), so a broken factory is one line there, not a failed trial.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from silo.config import DataConfig
from silo.data.base import DatasetNotFoundError, RawData
from silo.data.common import Normalize, not_found
from silo.data.streamed import DatasetStreamRaw, dataset_len
from silo.models.foreign import (
    TORCHVISION,
    ForeignArgumentError,
    ForeignCodeError,
    a_type,
    check_call_args,
    one_line,
    resolve_callable,
)

# Datasets whose decoded items take more than this stream from their Dataset instead.
IN_MEMORY_BYTES = 4 * 1024**3
_FOLDER_CLASSES = ("ImageFolder", "DatasetFolder")


class DataContractError(ForeignCodeError):
    """The data a torchvision class or a factory gave break the contract of this module."""


def build_foreign_data(
    cfg: DataConfig, root: Path, device: torch.device, *, in_memory_bytes: int = IN_MEMORY_BYTES
) -> RawData | DatasetStreamRaw:
    """The builder (silo.data.DATASETS' signature) of every name with a colon."""
    if cfg.name.startswith(TORCHVISION + ":"):
        train, test = _torchvision_splits(cfg, root)
        return _from_datasets(cfg, train, test, device, in_memory_bytes, pixels=True)
    factory = resolve_callable(cfg.name)
    check_call_args(cfg.name, factory, cfg.args, "task.data.args")
    try:
        result = factory(**cfg.args)
    except ForeignCodeError:
        raise
    except Exception as exc:
        raise DataContractError(f"{cfg.name!r} raised {one_line(exc)}") from None
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise DataContractError(f"{cfg.name!r} returned {_kind(result)}; it must return (train, test)")
    train, test = result
    if _is_pair(train) and _is_pair(test):
        return _from_tensors(cfg, train, test, device)
    if _is_dataset(train) and _is_dataset(test):
        return _from_datasets(cfg, train, test, device, in_memory_bytes, pixels=False)
    raise DataContractError(
        f"{cfg.name!r} returned ({_kind(train)}, {_kind(test)}); train and test must each be a pair of "
        "tensors (x, y) or a torch.utils.data.Dataset of (x, y), both of one kind"
    )


def _kind(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return f"{a_type(value)} of {len(value)}"
    return a_type(value)


def _is_pair(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, Tensor) for v in value)


def _is_dataset(value: Any) -> bool:
    return hasattr(value, "__getitem__") and hasattr(value, "__len__") and not isinstance(value, (tuple, list, Tensor))


# ------------------------------------------------------------------------ torchvision classes


def check_torchvision_files(cfg: DataConfig, root: Path) -> None:
    """DatasetNotFoundError now if a `torchvision:CLASS` dataset's files are visibly missing or
    empty, read from the class's own layout without loading anything (a driver's check):
    the MNIST family's ROOT/CLASS/raw files, CIFAR's and STL10's base folder, SVHN's .mat
    files, the folder classes' root/train and root/test; other classes need ROOT itself."""
    import torchvision.datasets as tvd

    name = cfg.name.split(":", 1)[1]
    cls = getattr(tvd, name, None)
    if not isinstance(cls, type) or name == "FakeData":
        return  # no such class: the probe says so; FakeData reads no file
    # The class attributes that say where each torchvision class keeps its files.
    resources, split_list = getattr(cls, "resources", None), getattr(cls, "split_list", None)
    if name in _FOLDER_CLASSES:
        folder, files = root, ["train/", "test/"]
    elif isinstance(resources, list) and not any(str(r[0]).endswith(".zip") for r in resources):
        folder = root / name / "raw"
        files = [Path(str(r[0]).rsplit("/", 1)[-1]).with_suffix("").name if str(r[0]).endswith(".gz")
                 else str(r[0]).rsplit("/", 1)[-1] for r in resources]
    elif hasattr(cls, "train_list") and hasattr(cls, "base_folder"):
        folder = root / cls.base_folder
        files = [f for f, *_ in [*cls.train_list, *getattr(cls, "test_list", [])]]
    elif isinstance(split_list, dict):
        folder, files = root, [split_list[s][1] for s in ("train", "test") if s in split_list]
    else:
        folder, files = root, []
    if not folder.is_dir():
        what = "the folder does not exist"
    else:
        missing = [f for f in files if not (folder / f).exists()]
        empty = [f for f in files if f not in missing and (
            not any((folder / f).iterdir()) if (folder / f).is_dir() else (folder / f).stat().st_size == 0)]
        if not missing and not empty:
            return
        what = "; ".join(x for x in (missing and f"missing: {', '.join(missing)}",
                                     empty and f"empty: {', '.join(empty)}") if x)
    raise not_found(
        cfg.name, folder, ", ".join(files), what,
        f", as torchvision.datasets.{name} lays it out under its root. silo-oracle never downloads: copy that "
        f"folder from a machine that has it to {folder.parent if folder != root else root} here.")


def _torchvision_splits(cfg: DataConfig, root: Path) -> tuple[Dataset[Any], Dataset[Any]]:
    import torchvision.datasets as tvd

    check_torchvision_files(cfg, root)
    from torchvision.transforms import PILToTensor

    name = cfg.name.split(":", 1)[1]
    cls = getattr(tvd, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.utils.data.Dataset)):
        raise DataContractError(f"{cfg.name!r}: torchvision.datasets has no dataset class {name!r}")
    params = inspect.signature(cls).parameters
    for key in ("root", "train", "split", "download", "transform"):
        if key in cfg.args and key in params:
            raise ForeignArgumentError(f"{cfg.name!r}: {key!r} is set by silo-oracle, not in task.data.args")
    check_call_args(cfg.name, cls, cfg.args, "task.data.args")
    common = dict(cfg.args, transform=PILToTensor())
    if "download" in params:
        common["download"] = False  # never a download: the files must be there

    def make(**kw: Any) -> Dataset[Any]:
        try:
            dataset: Dataset[Any] = cls(**common, **kw)
            return dataset
        except (FileNotFoundError, RuntimeError) as exc:  # torchvision's "Dataset not found"
            said = one_line(exc).replace(" You can use download=True to download it", "")  # an option we lack
            raise DatasetNotFoundError(f"{cfg.name} under {root}: {said}; silo-oracle never downloads: put the "
                                       "files there as torchvision lays them out") from None
        except Exception as exc:
            raise DataContractError(f"{cfg.name!r} raised {one_line(exc)}") from None

    if name in _FOLDER_CLASSES:
        for part in ("train", "test"):
            if not (root / part).is_dir():
                raise DatasetNotFoundError(f"{cfg.name}: no folder {root / part} (it reads root/train and root/test)")
        return make(root=str(root / "train")), make(root=str(root / "test"))
    where = {"root": str(root)} if "root" in params else {}
    if "train" in params:
        return make(**where, train=True), make(**where, train=False)
    if "split" in params:
        return make(**where, split="train"), make(**where, split="test")
    if name == "FakeData":
        train = make()
        # The generator's images after the training ones: a test set disjoint from train.
        return train, make(random_offset=int(common.get("random_offset", 0)) + dataset_len(train))
    raise DataContractError(
        f"{cfg.name!r} has neither a `train` nor a `split` argument: give it as a package.module:callable "
        "factory returning (train, test)"
    )


# ------------------------------------------------------------------------ the two forms


def _check_labels(cfg: DataConfig, train_y: Tensor, test_y: Tensor) -> int:
    """K, the number of classes, after the contract's label checks."""
    for split, y in (("train", train_y), ("test", test_y)):
        if len(y) == 0:
            raise DataContractError(f"{cfg.name!r}: the {split} split is empty")
        if y.dtype == torch.bool or y.dtype.is_floating_point or y.dtype.is_complex:
            raise DataContractError(f"{cfg.name!r}: {split} labels must be integers, got {y.dtype}")
    low = int(min(train_y.min(), test_y.min()))
    if low < 0:
        raise DataContractError(f"{cfg.name!r}: labels must be 0..K-1, got {low}")
    if cfg.num_classes is not None:
        k = cfg.num_classes
        high = int(max(train_y.max(), test_y.max()))
        if high >= k:
            raise DataContractError(f"{cfg.name!r}: label {high} is not below task.data.num_classes ({k})")
        return k
    k = int(train_y.max()) + 1
    present = torch.bincount(train_y.long().cpu(), minlength=k)
    missing = (present == 0).nonzero().flatten().tolist()
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        raise DataContractError(
            f"{cfg.name!r}: labels must be 0..K-1 with every class in train; train has no example of "
            f"class {shown} (of 0..{k - 1}); set task.data.num_classes if that is meant"
        )
    high = int(test_y.max())
    if high >= k:
        raise DataContractError(f"{cfg.name!r}: test label {high} is not a class of train (0..{k - 1})")
    return k


def _from_tensors(cfg: DataConfig, train: Sequence[Tensor], test: Sequence[Tensor], device: torch.device) -> RawData:
    shapes: dict[str, tuple[int, ...]] = {}
    for split, (x, y) in (("train", train), ("test", test)):
        if not x.dtype.is_floating_point:
            raise DataContractError(f"{cfg.name!r}: {split} x must be a floating-point tensor, got {x.dtype}")
        if x.dim() < 2:
            raise DataContractError(f"{cfg.name!r}: {split} x must have shape (N, *input_shape), got {tuple(x.shape)}")
        if y.dim() != 1 or len(y) != len(x):
            raise DataContractError(
                f"{cfg.name!r}: {split} y must have shape ({len(x)},) to match x, got {tuple(y.shape)}")
        shapes[split] = tuple(x.shape[1:])
    if shapes["train"] != shapes["test"]:
        raise DataContractError(
            f"{cfg.name!r}: train x has input shape {shapes['train']}, test x {shapes['test']}")
    k = _check_labels(cfg, train[1], test[1])
    return RawData(
        train_x=train[0].detach().to(device), train_y=train[1].to(device=device, dtype=torch.int64),
        test_x=test[0].detach().to(device), test_y=test[1].to(device=device, dtype=torch.int64),
        num_classes=k, input_shape=shapes["train"],
    )


def _item(cfg: DataConfig, dataset: Dataset[Any], split: str, i: int, pixels: bool) -> tuple[Tensor, int]:
    try:
        item = dataset[i]
    except Exception as exc:
        raise DataContractError(f"{cfg.name!r}: {split}[{i}] raised {one_line(exc)}") from None
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise DataContractError(f"{cfg.name!r}: {split}[{i}] is {_kind(item)}; items must be (x, y)")
    x, y = item
    if not isinstance(x, Tensor) or not (x.dtype.is_floating_point or (pixels and x.dtype == torch.uint8)):
        got = f"a {x.dtype} tensor" if isinstance(x, Tensor) else _kind(x)
        raise DataContractError(f"{cfg.name!r}: {split}[{i}] x is {got}; it must be a floating-point tensor")
    if isinstance(y, Tensor) and y.dim() == 0 and not (y.dtype.is_floating_point or y.dtype == torch.bool):
        y = int(y)
    if isinstance(y, bool) or not isinstance(y, int):
        raise DataContractError(f"{cfg.name!r}: {split}[{i}] y is {_kind(y)}; labels must be ints")
    return x, y


def _labels(cfg: DataConfig, dataset: Dataset[Any], split: str, pixels: bool) -> Tensor:
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        try:
            return torch.as_tensor(targets).flatten()
        except (TypeError, ValueError, RuntimeError):
            pass
    return torch.tensor([_item(cfg, dataset, split, i, pixels)[1] for i in range(dataset_len(dataset))],
                        dtype=torch.int64)


def _from_datasets(cfg: DataConfig, train: Dataset[Any], test: Dataset[Any], device: torch.device,
                   in_memory_bytes: int, *, pixels: bool) -> RawData | DatasetStreamRaw:
    shapes: dict[str, tuple[int, ...]] = {}
    per_item = 0
    for split, ds in (("train", train), ("test", test)):
        if dataset_len(ds) == 0:
            raise DataContractError(f"{cfg.name!r}: the {split} split is empty")
        x, _ = _item(cfg, ds, split, 0, pixels)
        shapes[split] = tuple(x.shape)
        per_item = max(per_item, x.element_size() * x.numel())
    if shapes["train"] != shapes["test"]:
        raise DataContractError(f"{cfg.name!r}: train items have input shape {shapes['train']}, test {shapes['test']}")
    if (dataset_len(train) + dataset_len(test)) * per_item <= in_memory_bytes:
        (tx, ty), (vx, vy) = (_materialise(cfg, ds, split, shapes["train"], pixels)
                              for split, ds in (("train", train), ("test", test)))
        k = _check_labels(cfg, ty, vy)
        prepare = _pixel_normalize(tx, device) if pixels else None
        return RawData(train_x=tx.to(device), train_y=ty.to(device), test_x=vx.to(device), test_y=vy.to(device),
                       num_classes=k, input_shape=shapes["train"], prepare=prepare)
    k = _check_labels(cfg, _labels(cfg, train, "train", pixels), _labels(cfg, test, "test", pixels))
    prepare = _pixel_normalize(_materialise(cfg, train, "train", shapes["train"], pixels, limit=2048)[0], device) \
        if pixels else None
    return DatasetStreamRaw(train=train, test=test, num_classes=k, input_shape=shapes["train"], device=device,
                            prepare=prepare)


def _materialise(cfg: DataConfig, dataset: Dataset[Any], split: str, shape: tuple[int, ...], pixels: bool,
                 limit: int | None = None) -> tuple[Tensor, Tensor]:
    n = dataset_len(dataset) if limit is None else min(limit, dataset_len(dataset))
    xs, ys = [], []
    for i in range(n):
        x, y = _item(cfg, dataset, split, i, pixels)
        if tuple(x.shape) != shape:
            raise DataContractError(
                f"{cfg.name!r}: {split}[{i}] has shape {tuple(x.shape)}, item 0 {shape}: items must share one shape")
        xs.append(x)
        ys.append(y)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)


def _pixel_normalize(train_x: Tensor, device: torch.device) -> Normalize:
    """Per-channel mean and std of the training images (as fractions of 255)."""
    x = train_x.double() / 255.0
    dims = [d for d in range(x.dim()) if d != 1]
    mean = tuple(float(v) for v in x.mean(dim=dims))
    std = tuple(max(float(v), 1e-6) for v in x.std(dim=dims))
    return Normalize(mean, std, device)
