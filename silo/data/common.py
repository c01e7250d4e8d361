"""What the built-in datasets share: where their files are, how many workers decode them
(and the DataLoader that streamed splits decode with), the one-line pointer to the root in
their errors, and the batched on-device transforms.

Normalisation and augmentation are batched tensor ops on the device (airbench's recipe): a
training batch is one gather for the crop and flip and one fused multiply-add for the
normalisation. torchvision's transforms do the same per image on PIL or float tensors; ours
stay because their rounding (one addcmul on uint8 input) is what the pinned results were
trained with.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from silo.config import DataConfig
from silo.data.base import DatasetNotFoundError

# Where the files are looked for when the study gives no task.data.root.
ROOT_ENV = "SILO_DATA_ROOT"
DEFAULT_ROOT = "./data"
# Worker processes (streaming) or decode threads (in-memory loading).
WORKERS_ENV = "SILO_DATA_WORKERS"
Item = TypeVar("Item")


def resolve_root(root: str | os.PathLike[str] | None) -> Path:
    """The data root: the study's task.data.root, else $SILO_DATA_ROOT, else ./data."""
    chosen = root if root else (os.environ.get(ROOT_ENV) or DEFAULT_ROOT)  # None or "": not given
    # Absolute, so that the error message and the cache key do not depend on the cwd.
    return Path(os.path.abspath(os.path.expanduser(os.fspath(chosen))))


def where_root() -> str:
    """The sentence every DatasetNotFoundError ends with: how the root is chosen."""
    return (f"The root is set by the study field task.data.root or the environment variable "
            f"{ROOT_ENV} (default {DEFAULT_ROOT}).")


def not_found(title: str, folder: Path, holding: str, what: str, then: str) -> DatasetNotFoundError:
    """The message of every built-in dataset whose files are missing, in one frame: `title not
    found: expected the folder F holding H (what is wrong)`, then how to get the files (`then`,
    with its leading punctuation), then how the root is chosen (where_root)."""
    holding = f" holding {holding}" if holding else ""
    return DatasetNotFoundError(f"{title} not found: expected the folder {folder}{holding} ({what}){then} "
                                + where_root())


def data_workers() -> int:
    """Worker processes (streaming) or decode threads (in-memory loading): $SILO_DATA_WORKERS,
    else min(8, the CPUs this process may use). Match it to the study's resources.cpu."""
    text = os.environ.get(WORKERS_ENV, "").strip()
    if text:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"${WORKERS_ENV} must be an int >= 0, got {text!r}") from None
        if value < 0:
            raise ValueError(f"${WORKERS_ENV} must be an int >= 0, got {value}")
        return value
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(8, cpus)


def worker_loader(dataset: Dataset[Item], batches: list[list[Any]], device: torch.device) -> DataLoader[Item]:
    """A DataLoader that decodes `batches` (lists of the dataset's keys) in data_workers()
    processes, pinned for a CUDA device, four batches ahead per worker: a streamed split's."""
    workers = data_workers()
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, pin_memory=device.type == "cuda",
                      prefetch_factor=4 if workers else None)


def no_subsets(cfg: DataConfig, title: str) -> None:
    """ValueError if the task asks for a subset of a dataset that has none."""
    if cfg.num_samples is not None:
        # Silently ignoring it would train on the full set while the study says otherwise.
        raise ValueError(f"task.data.num_samples applies to mnist1d only, not {title}")


class Normalize:
    """uint8 pixels -> float32 (x / 255 - mean) / std, per channel, as one batched op.

    A class rather than a closure so that it pickles (e.g. with a Ray trial's state).
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device | str = "cpu"):
        self.mean, self.std = tuple(mean), tuple(std)
        m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        # (x / 255 - m) / s == x * scale + shift: a single addcmul per batch.
        self.scale = 1.0 / (255.0 * s)
        self.shift = -m / s

    def __call__(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.shift, x.to(torch.float32), self.scale)


def random_crop_flip(x: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    """Per-sample random crop (zero padding `pad`) and horizontal flip of an NCHW batch.

    The same semantics as torchvision's RandomCrop(size, padding=pad) followed by
    RandomHorizontalFlip(), for every sample independently, as one gather.

    The randomness is drawn on the generator's device (a CPU generator is fine for a GPU
    batch) as one int per sample, then moved: a seed gives the same crops and flips on
    every device.
    """
    if generator is None:
        raise TypeError("random_crop_flip needs a torch.Generator: augmentation must be seeded")
    n, c, h, w = x.shape
    span = 2 * pad + 1
    # One draw per sample encodes (dy, dx, flip); uniform over all span*span*2 outcomes.
    code = torch.randint(0, span * span * 2, (n,), generator=generator, device=generator.device).to(x.device)
    flip, dx, dy = code % 2, (code // 2) % span, code // (2 * span)
    # Zeros, like RandomCrop's default fill=0; flattened so one gather reads any window.
    padded = F.pad(x, (pad, pad, pad, pad)).flatten(2)  # (n, c, (h + 2p) * (w + 2p))
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (n, h) rows of the window
    ar = torch.arange(w, device=x.device)
    # Flipping the cropped window is reading its columns right to left.
    cols = dx[:, None] + torch.where(flip[:, None].bool(), w - 1 - ar, ar)  # (n, w)
    flat = (rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]).view(n, 1, h * w)
    return padded.gather(2, flat.expand(n, c, h * w)).view(n, c, h, w)


class CropFlip:
    """The training-batch transform of image datasets held in memory: random crop + flip on
    uint8, then normalise."""

    def __init__(self, prepare: Normalize, pad: int = 4):
        self.prepare, self.pad = prepare, pad

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        # Augmenting the uint8 pixels before normalising pads with pixel value 0, exactly as
        # torchvision's PIL pipeline does, and moves 4x fewer bytes through the gather.
        return self.prepare(random_crop_flip(x, generator, self.pad))
