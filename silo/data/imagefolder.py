"""ImageNet and Tiny-ImageNet (ImageNet-200), read through torchvision's ImageFolder.

Both take the folder layout under the data root (task.data.root, else $SILO_DATA_ROOT, else
./data); the official validation set is the *test* set here, since ImageNet's test labels are
not public, and the validation split is, as for every dataset, a seeded part of the training
set (docs/design.md).

- `tiny_imagenet`: <root>/tiny-imagenet-200/ as the official zip unpacks:
  train/<wnid>/images/*.JPEG, and val/ in either layout:
    * the original one: val/images/*.JPEG with the labels in val/val_annotations.txt
      (file name, wnid, box; tab-separated);
    * class folders: val/<wnid>/*.JPEG or val/<wnid>/images/*.JPEG (what many reorganising
      scripts produce).
  val_annotations.txt decides: present -> original layout, absent -> class folders.
  100,000 + 10,000 images of 64x64 fit in memory: they are decoded once (threads), held on
  the device as uint8 NCHW and augmented there like CIFAR (random crop with 4 pixels of zero
  padding + horizontal flip, as one batched gather), normalised with Tiny-ImageNet's
  channel statistics.

- `imagenet`: <root>/imagenet/train/<wnid>/*.JPEG and <root>/imagenet/val/<wnid>/*.JPEG (the
  validation images sorted into class folders). 1.28M full-size JPEGs do not fit in memory,
  so this dataset *streams*: load_data returns a `StreamingSplits` whose batches come from a
  torch DataLoader with worker processes (standard transforms: RandomResizedCrop(224) +
  horizontal flip for training, Resize(256) + CenterCrop(224) for evaluation). The workers
  decode to uint8; the batch is moved to the device and normalised there.

Streaming batches are seeded like the in-memory ones: the run's generator draws the epoch's
order (one randperm) and one base seed per epoch; sample i of the epoch is augmented with the
torch RNG seeded to base + i, in whichever worker decodes it. So the crops depend on the run's
seed only, not on the number of workers ($SILO_DATA_WORKERS, default min(8, CPUs available)).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from silo.config import DataConfig
from silo.data.base import DatasetNotFoundError, RawData, SplitsInfo
from silo.data.cifar import DEFAULT_ROOT, ROOT_ENV, CropFlip, Normalize
from silo.data.splits import split_indices

WORKERS_ENV = "SILO_DATA_WORKERS"

# Published channel statistics (fractions of 255), fixed constants as for CIFAR.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TINY_MEAN, TINY_STD = (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)

IMAGENET_CROP, IMAGENET_RESIZE = 224, 256  # training crop / evaluation resize-then-centre-crop
TINY_PAD = 4

Sample = tuple[str, int]  # (path, class index), as ImageFolder.samples


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


def _where_root() -> str:
    return (f"The root is set by the study field task.data.root or the environment variable "
            f"{ROOT_ENV} (default {DEFAULT_ROOT}).")


def _no_subsets(cfg: DataConfig, title: str) -> None:
    if cfg.num_samples is not None:
        # Silently ignoring it would train on the full set while the study says otherwise.
        raise ValueError(f"task.data.num_samples applies to mnist1d only, not {title}")


def _class_folders(directory: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(directory) if e.is_dir())
    except OSError:
        return []


def _image_folder(directory: Path):
    """torchvision's ImageFolder over `directory` (class sub-folders, searched recursively)."""
    from torchvision.datasets import ImageFolder  # seconds to import: only when used

    return ImageFolder(str(directory), allow_empty=True)


def _remap(samples: Sequence[Sample], classes: Sequence[str], class_to_idx: dict[str, int],
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


# ----------------------------------------------------------------------------- Tiny-ImageNet


TINY_FOLDER = "tiny-imagenet-200"


def _tiny_error(folder: Path, root: Path, what: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"Tiny-ImageNet not found: expected the folder {folder} holding train/<wnid>/images/*.JPEG "
        f"(200 class folders) and val/ (val/images/*.JPEG with val/val_annotations.txt, or "
        f"val/<wnid>/ class folders) ({what}). To fetch it, download "
        f"http://cs231n.stanford.edu/tiny-imagenet-200.zip on a machine with internet and unzip "
        f"it into {root} on this machine (it creates {TINY_FOLDER}/). " + _where_root()
    )


def tiny_imagenet_samples(root: Path) -> tuple[list[Sample], list[Sample], list[str]]:
    """(train samples, test samples, class names) of the Tiny-ImageNet folder under `root`,
    or DatasetNotFoundError saying what is missing."""
    folder = root / TINY_FOLDER
    train_dir, val_dir = folder / "train", folder / "val"
    if not folder.is_dir():
        raise _tiny_error(folder, root, "the folder does not exist")
    if not _class_folders(train_dir):
        raise _tiny_error(folder, root, f"no class folders in {train_dir}")
    if not val_dir.is_dir():
        raise _tiny_error(folder, root, f"missing: {val_dir}")
    train = _image_folder(train_dir)
    if not train.samples:
        raise _tiny_error(folder, root, f"no images in the class folders of {train_dir}")
    annotations = val_dir / "val_annotations.txt"
    if annotations.is_file():  # the original layout
        test = []
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
                raise _tiny_error(folder, root, f"missing: {path} (listed in {annotations.name})")
            test.append((str(path), train.class_to_idx[parts[1]]))
    elif _class_folders(val_dir):  # class folders
        val = _image_folder(val_dir)
        test = _remap(val.samples, val.classes, train.class_to_idx, val_dir)
    else:
        raise _tiny_error(folder, root, f"{val_dir} has neither val_annotations.txt nor class folders")
    if not test:
        raise _tiny_error(folder, root, f"no images in {val_dir}")
    return list(train.samples), test, list(train.classes)


def _decode_rgb(path: str) -> np.ndarray:
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


def build_tiny_imagenet(cfg: DataConfig, root: Path, device: torch.device) -> RawData:
    _no_subsets(cfg, "tiny_imagenet")
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


# ----------------------------------------------------------------------------- ImageNet


IMAGENET_FOLDER = "imagenet"


def _imagenet_error(folder: Path, root: Path, what: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"ImageNet not found: expected the folder {folder} holding train/<wnid>/*.JPEG (1000 "
        f"class folders) and val/<wnid>/*.JPEG (the 50,000 validation images sorted into the "
        f"same class folders) ({what}). To get it, download ILSVRC2012_img_train.tar, "
        f"ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz from https://image-net.org "
        f"(registration required) on a machine with internet, put them in one folder and run "
        f"python -c \"import torchvision; [torchvision.datasets.ImageNet('THAT_FOLDER', split=s) "
        f"for s in ('train', 'val')]\", which unpacks them into train/ and val/ class folders; "
        f"then copy (or link) that folder to {folder} on this machine. " + _where_root()
    )


def check_folder(name: str, root: Path) -> None:
    """DatasetNotFoundError now if the dataset's folder is missing; lists no images."""
    if name == "tiny_imagenet":
        folder = root / TINY_FOLDER
        if not folder.is_dir():
            raise _tiny_error(folder, root, "the folder does not exist")
    else:
        folder = root / IMAGENET_FOLDER
        if not folder.is_dir():
            raise _imagenet_error(folder, root, "the folder does not exist")


def imagenet_samples(root: Path) -> tuple[list[Sample], list[Sample], list[str]]:
    """(train samples, test samples, class names) of the ImageNet folder under `root`."""
    folder = root / IMAGENET_FOLDER
    train_dir, val_dir = folder / "train", folder / "val"
    if not folder.is_dir():
        raise _imagenet_error(folder, root, "the folder does not exist")
    for d in (train_dir, val_dir):
        if not _class_folders(d):
            raise _imagenet_error(folder, root, f"no class folders in {d}")
    train = _image_folder(train_dir)
    if not train.samples:
        raise _imagenet_error(folder, root, f"no images in the class folders of {train_dir}")
    val = _image_folder(val_dir)
    if not val.samples:
        raise _imagenet_error(folder, root, f"no images in the class folders of {val_dir}")
    test = _remap(val.samples, val.classes, train.class_to_idx, val_dir)
    return list(train.samples), test, list(train.classes)


@dataclass(frozen=True)
class StreamingRaw:
    """A streamed dataset as its builder produced it: the file lists (scanning ImageNet's
    1.33M files takes a while, so a DataCache holds this once per process), not the pixels."""

    train_samples: Sequence[Sample]
    test_samples: Sequence[Sample]
    num_classes: int
    input_shape: tuple[int, ...]
    device: torch.device
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop: int = IMAGENET_CROP
    resize: int = IMAGENET_RESIZE

    def splits(self, *, val_fraction: float, seed: int, augment: bool, name: str = "") -> StreamingSplits:
        train_index, val_index = split_indices(len(self.train_samples), val_fraction, seed)
        return StreamingSplits(self, train_index, val_index, augment=augment, name=name)


class _Images(torch.utils.data.Dataset):
    """Items are (sample index, seed or None): the seed fixes the random transform of that
    one sample, whichever process decodes it."""

    def __init__(self, samples: Sequence[Sample], transform) -> None:
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: tuple[int, int | None]) -> tuple[Tensor, int]:
        from torchvision.datasets.folder import default_loader

        index, seed = item
        path, label = self.samples[index]
        img = default_loader(path)
        if seed is None:
            return self.transform(img), label
        # fork_rng: with num_workers=0 this runs in the trial's own process, whose global RNG
        # must not move; in a worker it costs a few microseconds.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(img), label


class StreamingSplits(SplitsInfo):
    """What one run trains and evaluates on when the dataset does not fit in memory.

    The same contract as `DataSplits` for the training loop (`num_train`, `train_batches`,
    `eval_batches`, `num_classes`, `input_shape`, `in_channels`, `chance`, `train_index`,
    `val_index`, `name`), without the tensors `train_x` ... `test_y`: batches are decoded by
    DataLoader workers and come out model-ready (normalised, on the device).
    """

    streaming: ClassVar[bool] = True
    prepare = None

    def __init__(self, raw: StreamingRaw, train_index: Tensor, val_index: Tensor, *, augment: bool, name: str = ""):
        self.raw = raw
        self.train_index, self.val_index = train_index, val_index
        # The task's data.augment: whether train batches may use the random train transform
        # (applied in the workers; see train_batches). Not DataSplits.augment, a transform.
        self._augment_enabled = augment
        self.name = name
        self.num_classes = raw.num_classes
        self.input_shape = raw.input_shape
        self._normalize = Normalize(raw.mean, raw.std, raw.device)

    @property
    def num_train(self) -> int:
        return len(self.train_index)

    @property
    def num_val(self) -> int:
        return len(self.val_index)

    @property
    def num_test(self) -> int:
        return len(self.raw.test_samples)

    # -- transforms (torchvision's, on PIL images; uint8 out, normalised on the device)

    def _train_transform(self):
        from torchvision import transforms as T

        return T.Compose([T.RandomResizedCrop(self.raw.crop), T.RandomHorizontalFlip(), T.PILToTensor()])

    def _eval_transform(self):
        from torchvision import transforms as T

        return T.Compose([T.Resize(self.raw.resize), T.CenterCrop(self.raw.crop), T.PILToTensor()])

    def _loader(self, samples: Sequence[Sample], transform, batches: list[list[Any]]):
        workers = data_workers()
        return torch.utils.data.DataLoader(
            _Images(samples, transform),
            batch_sampler=batches,
            num_workers=workers,
            pin_memory=self.raw.device.type == "cuda",
            prefetch_factor=4 if workers else None,
        )

    def _device_batches(self, loader) -> Iterator[tuple[Tensor, Tensor]]:
        device = self.raw.device
        for xb, yb in loader:
            xb = xb.to(device, non_blocking=True)
            yield self._normalize(xb), yb.to(device, non_blocking=True)

    # -- the contract with the training loop

    def train_batches(
        self, batch_size: int, generator: torch.Generator, *, augment: bool = True
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of model-ready (xb, yb) in an order drawn from `generator` (full batches
        only, as in-memory). augment=False: the evaluation transform (e.g. pruning scores)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if generator is None:
            raise ValueError("train_batches needs a generator: the batch order must be seeded")
        n = self.num_train
        perm = torch.randperm(n, generator=generator, device=generator.device).cpu()
        base = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        order = self.train_index[perm].tolist()  # positions in the training folder
        random = augment and self._augment_enabled
        stop = n - n % batch_size
        batches = [
            [(order[i], base + i if random else None) for i in range(start, start + batch_size)]
            for start in range(0, stop, batch_size)
        ]
        transform = self._train_transform() if random else self._eval_transform()
        return self._device_batches(self._loader(self.raw.train_samples, transform, batches))

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """All of `split` ("val" or "test"), in order, with the evaluation transform."""
        if split == "val":
            samples, index = self.raw.train_samples, self.val_index.tolist()
        elif split == "test":
            samples, index = self.raw.test_samples, list(range(len(self.raw.test_samples)))
        else:
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        batches = [[(i, None) for i in index[s : s + batch_size]] for s in range(0, len(index), batch_size)]
        return self._device_batches(self._loader(samples, self._eval_transform(), batches))


def build_imagenet(cfg: DataConfig, root: Path, device: torch.device) -> StreamingRaw:
    _no_subsets(cfg, "imagenet")
    train, test, classes = imagenet_samples(root)
    return StreamingRaw(
        train_samples=train,
        test_samples=test,
        num_classes=len(classes),
        input_shape=(3, IMAGENET_CROP, IMAGENET_CROP),  # read at call time: tests shrink them
        device=device,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        crop=IMAGENET_CROP,
        resize=IMAGENET_RESIZE,
    )
