"""ImageNet, read through torchvision's ImageFolder and streamed from disk.

<root>/imagenet/train/<wnid>/*.JPEG and <root>/imagenet/val/<wnid>/*.JPEG (the validation
images sorted into class folders). 1.28M full-size JPEGs do not fit in memory, so this dataset
*streams*: load_data returns a `StreamingSplits` whose batches come from a torch DataLoader
with worker processes (standard transforms: RandomResizedCrop(224) + horizontal flip for
training, Resize(256) + CenterCrop(224) for evaluation). The workers decode to uint8; the
batch is moved to the device and normalised there.

Streaming batches are seeded like the in-memory ones: the run's generator draws the epoch's
order (one randperm) and one base seed per epoch; sample i of the epoch is augmented with the
torch RNG seeded to base + i, in whichever worker decodes it. So the crops depend on the run's
seed only, not on the number of workers ($SILO_DATA_WORKERS, default min(8, CPUs available)).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from silo.config import DataConfig
from silo.data.base import DatasetNotFoundError, StreamedSplitsInfo
from silo.data.batches import epoch_order, in_batches, pick_split
from silo.data.common import Normalize, no_subsets, not_found, worker_loader
from silo.data.imagefolder import Sample, class_folders, image_folder, remap
from silo.data.splits import split_indices

if TYPE_CHECKING:
    from PIL.Image import Image

# An item of the DataLoader: (sample index, seed of its random transform or None).
Item = tuple[int, int | None]
# torchvision's transform of one decoded image to uint8 CHW.
Transform = Callable[["Image"], Tensor]

# Published channel statistics (fractions of 255), fixed constants as for CIFAR.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGENET_CROP, IMAGENET_RESIZE = 224, 256  # training crop / evaluation resize-then-centre-crop
IMAGENET_FOLDER = "imagenet"


def imagenet_error(folder: Path, root: Path, what: str) -> DatasetNotFoundError:
    return not_found(
        "ImageNet", folder, "train/<wnid>/*.JPEG (1000 class folders) and val/<wnid>/*.JPEG (the 50,000 "
        "validation images sorted into the same class folders)", what,
        ". To get it, download ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and "
        "ILSVRC2012_devkit_t12.tar.gz from https://image-net.org (registration required) on a machine with "
        "internet, put them in one folder and run python -c \"import torchvision; "
        "[torchvision.datasets.ImageNet('THAT_FOLDER', split=s) for s in ('train', 'val')]\", which unpacks "
        f"them into train/ and val/ class folders; then copy (or link) that folder to {folder} on this machine.")


def check_imagenet(root: Path) -> None:
    """DatasetNotFoundError now if the dataset's folder is missing; lists no images."""
    folder = root / IMAGENET_FOLDER
    if not folder.is_dir():
        raise imagenet_error(folder, root, "the folder does not exist")


def imagenet_samples(root: Path) -> tuple[list[Sample], list[Sample], list[str]]:
    """(train samples, test samples, class names) of the ImageNet folder under `root`."""
    folder = root / IMAGENET_FOLDER
    train_dir, val_dir = folder / "train", folder / "val"
    if not folder.is_dir():
        raise imagenet_error(folder, root, "the folder does not exist")
    for d in (train_dir, val_dir):
        if not class_folders(d):
            raise imagenet_error(folder, root, f"no class folders in {d}")
    train = image_folder(train_dir)
    if not train.samples:
        raise imagenet_error(folder, root, f"no images in the class folders of {train_dir}")
    val = image_folder(val_dir)
    if not val.samples:
        raise imagenet_error(folder, root, f"no images in the class folders of {val_dir}")
    test = remap(val.samples, val.classes, train.class_to_idx, val_dir)
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


class _Images(Dataset[tuple[Tensor, int]]):
    """Items are (sample index, seed or None): the seed fixes the random transform of that
    one sample, whichever process decodes it."""

    def __init__(self, samples: Sequence[Sample], transform: Transform) -> None:
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: Item) -> tuple[Tensor, int]:
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


class StreamingSplits(StreamedSplitsInfo):
    """What one run trains and evaluates on when the dataset does not fit in memory.

    The same contract as `DataSplits` for the training loop (`num_train`, `train_batches`,
    `eval_batches`, `num_classes`, `input_shape`, `in_channels`, `chance`, `train_index`,
    `val_index`, `name`), without the tensors `train_x` ... `test_y`: batches are decoded by
    DataLoader workers and come out model-ready (normalised, on the device).
    """

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
    def num_test(self) -> int:
        return len(self.raw.test_samples)

    # -- transforms (torchvision's, on PIL images; uint8 out, normalised on the device)

    def _train_transform(self) -> Transform:
        from torchvision import transforms as T

        transform: Transform = T.Compose([T.RandomResizedCrop(self.raw.crop), T.RandomHorizontalFlip(),
                                          T.PILToTensor()])
        return transform

    def _eval_transform(self) -> Transform:
        from torchvision import transforms as T

        transform: Transform = T.Compose([T.Resize(self.raw.resize), T.CenterCrop(self.raw.crop), T.PILToTensor()])
        return transform

    def _loader(self, samples: Sequence[Sample], transform: Transform,
                batches: list[list[Item]]) -> DataLoader[tuple[Tensor, int]]:
        return worker_loader(_Images(samples, transform), batches, self.raw.device)

    def _device_batches(self, loader: DataLoader[tuple[Tensor, int]]) -> Iterator[tuple[Tensor, Tensor]]:
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
        order = epoch_order(self.train_index, batch_size, generator)  # positions in the training folder
        base = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        random = augment and self._augment_enabled
        items: list[Item] = [(p, base + i if random else None) for i, p in enumerate(order)]
        transform = self._train_transform() if random else self._eval_transform()
        batches = in_batches(items, batch_size, full=True)
        return self._device_batches(self._loader(self.raw.train_samples, transform, batches))

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """All of `split` ("val" or "test"), in order, with the evaluation transform."""
        samples, index = pick_split(split, (self.raw.train_samples, self.val_index.tolist()),
                                    (self.raw.test_samples, list(range(self.num_test))))
        batches: list[list[Item]] = in_batches([(i, None) for i in index], batch_size)
        return self._device_batches(self._loader(samples, self._eval_transform(), batches))


def build_imagenet(cfg: DataConfig, root: Path, device: torch.device) -> StreamingRaw:
    no_subsets(cfg, "imagenet")
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
