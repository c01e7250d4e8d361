"""What ImageNet and Tiny-ImageNet share: reading torchvision's ImageFolder layout (class
sub-folders named by wnid) and decoding images of one size into uint8 tensors.

The official validation set of both is the *test* set here, since ImageNet's test labels are
not public; the validation split is, as for every dataset, a seeded part of the training set
(docs/design.md). A sample is (path, class index), as ImageFolder.samples.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from silo.data.base import DatasetNotFoundError

if TYPE_CHECKING:  # torchvision takes seconds to import: only when a dataset is read
    from torchvision.datasets import ImageFolder

Sample = tuple[str, int]  # (path, class index), as ImageFolder.samples


def class_folders(directory: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(directory) if e.is_dir())
    except OSError:
        return []


def image_folder(directory: Path) -> ImageFolder:
    """torchvision's ImageFolder over `directory` (class sub-folders, searched recursively)."""
    from torchvision.datasets import ImageFolder  # seconds to import: only when used

    return ImageFolder(str(directory), allow_empty=True)


def remap(samples: Sequence[Sample], classes: Sequence[str], class_to_idx: dict[str, int],
          where: Path) -> list[Sample]:
    """Samples of a folder whose classes were indexed on their own, re-indexed to the
    training set's classes (a validation folder may lack some classes)."""
    unknown = sorted(set(classes) - set(class_to_idx))
    if unknown:
        raise DatasetNotFoundError(
            f"{where} has class folders that the training set lacks: {', '.join(unknown[:5])}"
            + (" ..." if len(unknown) > 5 else "")
        )
    return [(path, class_to_idx[classes[label]]) for path, label in samples]


def _decode_rgb(path: str) -> np.ndarray[tuple[int, ...], np.dtype[np.uint8]]:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def decode_uint8(samples: Sequence[Sample], workers: int) -> tuple[Tensor, Tensor]:
    """Decode every image (all of one size) into (N, 3, H, W) uint8 and (N,) int64 labels, on
    the CPU. Threads: PIL releases the GIL while it decodes."""
    if not samples:
        raise ValueError("no images to decode")
    first = _decode_rgb(samples[0][0])
    out = np.empty((len(samples), *first.shape), dtype=np.uint8)

    def load(i: int) -> None:
        img = first if i == 0 else _decode_rgb(samples[i][0])
        if img.shape != first.shape:
            raise ValueError(
                f"{samples[i][0]}: image of {img.shape[1]}x{img.shape[0]} pixels; every image "
                f"of this dataset must have the size of the first, {first.shape[1]}x{first.shape[0]}"
            )
        out[i] = img

    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(load, range(len(samples)), chunksize=256))
    else:
        for i in range(len(samples)):
            load(i)
    x = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    y = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return x, y


