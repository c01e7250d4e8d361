"""CIFAR-10 and CIFAR-100, read by torchvision, held on the device as uint8 NCHW.

Normalised and augmented on the device (silo.data.common): no PIL, no per-sample Python, no
DataLoader workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from silo.config import DataConfig
from silo.data.base import DatasetNotFoundError, RawData
from silo.data.common import CropFlip, Normalize, no_subsets, not_found

if TYPE_CHECKING:  # torchvision takes seconds to import: only when CIFAR is used
    from torchvision.datasets import CIFAR10  # CIFAR100 is its subclass


@dataclass(frozen=True)
class _Spec:
    title: str
    torchvision_class: str  # the class in torchvision.datasets that reads the files
    num_classes: int
    # Published per-channel statistics of the training images (fractions of 255). Fixed
    # constants rather than statistics of the loaded files, so every run, every subset and
    # every test fixture normalises the same way.
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


_SPECS = {
    "cifar10": _Spec("CIFAR-10", "CIFAR10", 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": _Spec("CIFAR-100", "CIFAR100", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def torchvision_cifar(name: str) -> type[CIFAR10]:
    """torchvision's CIFAR10 / CIFAR100 class for `name`, with md5 checks reduced to
    "the file exists" (see below). Built at call time, so its instances do not pickle:
    fine here (only tensors leave this module), not for DataLoader workers under spawn."""
    # torchvision takes seconds to import: only when CIFAR is used.
    return _files_only(_torchvision_class(name))


def _files_only(cls: type[CIFAR10]) -> type[CIFAR10]:
    """torchvision's CIFAR class with its md5 checks reduced to "the file exists".

    torchvision refuses files whose md5 differs from the official archive. That check
    cannot pass for the tiny datasets the tests and benches write in the same format, and
    hashing the real ones costs time in every worker process; files that exist but are
    damaged still fail loudly when unpickled. Everything else (paths, parsing) is
    torchvision's own code.
    """
    return type(
        cls.__name__,  # keeps torchvision's name in reprs and messages
        (cls,),
        {
            "train_list": [[name, None] for name, _ in cls.train_list],
            "test_list": [[name, None] for name, _ in cls.test_list],
            "meta": {**cls.meta, "md5": None},
        },
    )


def _required_files(cls: type[CIFAR10]) -> list[str]:
    return [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]


def _not_found(spec: _Spec, cls: type[CIFAR10], root: Path) -> DatasetNotFoundError | None:
    folder = root / cls.base_folder
    files = _required_files(cls)
    missing = [f for f in files if not (folder / f).is_file()]
    if not missing:
        return None
    what = "the folder does not exist" if not folder.is_dir() else f"missing: {', '.join(missing)}"
    return not_found(
        spec.title, folder, ", ".join(files), what,
        ". To fetch it, run on a machine with internet: python -c \"import torchvision; "
        f"torchvision.datasets.{spec.torchvision_class}('{root}', download=True)\" and copy the folder "
        f"{cls.base_folder} it creates to {root} on this machine.")


def check_cifar(name: str, root: Path) -> None:
    """DatasetNotFoundError now if the files are missing; reads nothing (a driver's check)."""
    error = _not_found(_SPECS[name], _files_only(_torchvision_class(name)), root)
    if error is not None:
        raise error


def _torchvision_class(name: str) -> type[CIFAR10]:
    from torchvision import datasets

    cls: type[CIFAR10] = getattr(datasets, _SPECS[name].torchvision_class)
    return cls


def _build(name: str, cfg: DataConfig, root: Path, device: torch.device) -> RawData:
    spec = _SPECS[name]
    no_subsets(cfg, name)
    reader = torchvision_cifar(name)
    error = _not_found(spec, reader, root)
    if error is not None:
        raise error

    def read(train: bool) -> tuple[Tensor, Tensor]:
        ds = reader(str(root), train=train, download=False)
        # torchvision hands out NHWC for PIL; back to the NCHW the models take, on the device.
        x = torch.from_numpy(ds.data).to(device).permute(0, 3, 1, 2).contiguous()
        y = torch.tensor(ds.targets, dtype=torch.int64, device=device)
        if len(y) and not (0 <= int(y.min()) and int(y.max()) < spec.num_classes):
            raise ValueError(f"{spec.title} at {root}: labels outside 0..{spec.num_classes - 1}")
        return x, y

    train_x, train_y = read(True)
    test_x, test_y = read(False)
    normalize = Normalize(spec.mean, spec.std, device)
    return RawData(
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=spec.num_classes,
        input_shape=tuple(train_x.shape[1:]),
        prepare=normalize,
        augment=CropFlip(normalize, pad=4),
    )


def build_cifar10(cfg: DataConfig, root: Path, device: torch.device) -> RawData:
    return _build("cifar10", cfg, root, device)


def build_cifar100(cfg: DataConfig, root: Path, device: torch.device) -> RawData:
    return _build("cifar100", cfg, root, device)
