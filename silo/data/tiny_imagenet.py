"""Tiny-ImageNet (ImageNet-200), read through torchvision's ImageFolder, held in memory.

<root>/tiny-imagenet-200/ as the official zip unpacks: train/<wnid>/images/*.JPEG, and val/
in either layout:
  * the original one: val/images/*.JPEG with the labels in val/val_annotations.txt (file
    name, wnid, box; tab-separated);
  * class folders: val/<wnid>/*.JPEG or val/<wnid>/images/*.JPEG (what many reorganising
    scripts produce).
val_annotations.txt decides: present -> original layout, absent -> class folders.
100,000 + 10,000 images of 64x64 fit in memory: they are decoded once (threads), held on the
device as uint8 NCHW and augmented there like CIFAR (random crop with 4 pixels of zero
padding + horizontal flip, as one batched gather), normalised with Tiny-ImageNet's channel
statistics.
"""

from __future__ import annotations

from pathlib import Path

import torch

from silo.config import DataConfig
from silo.data.base import DatasetNotFoundError, RawData
from silo.data.common import CropFlip, Normalize, data_workers, no_subsets, not_found
from silo.data.imagefolder import Sample, class_folders, decode_uint8, image_folder, remap

# Published channel statistics (fractions of 255), fixed constants as for CIFAR.
TINY_MEAN, TINY_STD = (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)
TINY_PAD = 4
TINY_FOLDER = "tiny-imagenet-200"


def tiny_error(folder: Path, root: Path, what: str) -> DatasetNotFoundError:
    return not_found(
        "Tiny-ImageNet", folder, "train/<wnid>/images/*.JPEG (200 class folders) and val/ (val/images/*.JPEG "
        "with val/val_annotations.txt, or val/<wnid>/ class folders)", what,
        ". To fetch it, download http://cs231n.stanford.edu/tiny-imagenet-200.zip on a machine with internet "
        f"and unzip it into {root} on this machine (it creates {TINY_FOLDER}/).")


def tiny_imagenet_samples(root: Path) -> tuple[list[Sample], list[Sample], list[str]]:
    """(train samples, test samples, class names) of the Tiny-ImageNet folder under `root`,
    or DatasetNotFoundError saying what is missing."""
    folder = root / TINY_FOLDER
    train_dir, val_dir = folder / "train", folder / "val"
    if not folder.is_dir():
        raise tiny_error(folder, root, "the folder does not exist")
    if not class_folders(train_dir):
        raise tiny_error(folder, root, f"no class folders in {train_dir}")
    if not val_dir.is_dir():
        raise tiny_error(folder, root, f"missing: {val_dir}")
    train = image_folder(train_dir)
    if not train.samples:
        raise tiny_error(folder, root, f"no images in the class folders of {train_dir}")
    annotations = val_dir / "val_annotations.txt"
    if annotations.is_file():  # the original layout
        test: list[Sample] = []
        for n, line in enumerate(annotations.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 2 or parts[1] not in train.class_to_idx:
                raise DatasetNotFoundError(
                    f"{annotations}, line {n}: expected '<file>\\t<wnid>\\t...' with a wnid of "
                    f"the training set, got {line[:80]!r}"
                )
            path = val_dir / "images" / parts[0]
            if not path.is_file():
                raise tiny_error(folder, root, f"missing: {path} (listed in {annotations.name})")
            test.append((str(path), train.class_to_idx[parts[1]]))
    elif class_folders(val_dir):  # class folders
        val = image_folder(val_dir)
        test = remap(val.samples, val.classes, train.class_to_idx, val_dir)
    else:
        raise tiny_error(folder, root, f"{val_dir} has neither val_annotations.txt nor class folders")
    if not test:
        raise tiny_error(folder, root, f"no images in {val_dir}")
    return list(train.samples), test, list(train.classes)


def check_tiny_imagenet(root: Path) -> None:
    """DatasetNotFoundError now if the dataset's folder is missing; lists no images."""
    folder = root / TINY_FOLDER
    if not folder.is_dir():
        raise tiny_error(folder, root, "the folder does not exist")


def build_tiny_imagenet(cfg: DataConfig, root: Path, device: torch.device) -> RawData:
    no_subsets(cfg, "tiny_imagenet")
    train, test, classes = tiny_imagenet_samples(root)
    workers = data_workers()
    train_x, train_y = decode_uint8(train, workers)
    test_x, test_y = decode_uint8(test, workers)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise ValueError(
            f"Tiny-ImageNet at {root}: training images are {tuple(train_x.shape[1:])}, "
            f"validation images {tuple(test_x.shape[1:])}"
        )
    normalize = Normalize(TINY_MEAN, TINY_STD, device)
    return RawData(
        train_x=train_x.to(device),
        train_y=train_y.to(device),
        test_x=test_x.to(device),
        test_y=test_y.to(device),
        num_classes=len(classes),
        input_shape=tuple(train_x.shape[1:]),
        prepare=normalize,
        augment=CropFlip(normalize, pad=TINY_PAD),
    )
