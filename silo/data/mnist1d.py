"""MNIST-1D (Greydanus 2020), generated locally (no network), and kept under the data root.

Generating costs every fresh process seconds: importing the package (it pulls in matplotlib,
scipy and requests) and drawing the signals, 3 s for 1,200 samples on a 2-core machine, paid
again by every Ray worker of every sweep. So the generated arrays are written once to
`<root>/mnist1d/mnist1d-<package version>-<num_samples>.npz` and read back after that: the
same arrays, to the bit (the package's generator takes no argument but num_samples here, and
its version is in the name). A root that cannot be written only means generating each time.
"""

from __future__ import annotations

import random
import zipfile
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from silo.atomic import atomic_writer
from silo.config import DataConfig
from silo.data.base import RawData

ARRAYS = ("x", "y", "x_test", "y_test")  # what RawData needs of make_dataset's dict


def build_mnist1d(cfg: DataConfig, root: Path, device: torch.device) -> RawData:
    data = mnist1d_arrays(cfg.num_samples, root)

    def x(a: np.ndarray) -> torch.Tensor:  # (N, 40) float64 -> (N, 1, 40) float32
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).unsqueeze(1).to(device)

    def y(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a, dtype=np.int64)).to(device)

    train_x = x(data["x"])
    return RawData(
        train_x=train_x,
        train_y=y(data["y"]),
        test_x=x(data["x_test"]),
        test_y=y(data["y_test"]),
        num_classes=10,
        input_shape=tuple(train_x.shape[1:]),
        # Already centred and scaled by make_dataset; the package defines no augmentation.
        prepare=None,
        augment=None,
    )


def cache_path(num_samples: int | None, root: Path) -> Path:
    """Where the arrays of this size are kept under `root`."""
    size = "default" if num_samples is None else str(int(num_samples))
    return Path(root) / "mnist1d" / f"mnist1d-{version('mnist1d')}-{size}.npz"


def mnist1d_arrays(num_samples: int | None, root: Path) -> dict[str, np.ndarray]:
    """make_dataset's train and test arrays: read from the root's copy, else generated and kept."""
    path = cache_path(num_samples, root)
    try:
        with np.load(path) as kept:
            return {name: kept[name] for name in ARRAYS}
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # unreadable (written by hand, truncated by a full disk): generated and replaced below
    data = generate(num_samples)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(path, "wb") as f:  # two workers writing at once: one whole file wins
            np.savez(f, x=data["x"], y=data["y"], x_test=data["x_test"], y_test=data["y_test"])
    except OSError:
        pass  # a read-only root, or not a folder: generated again next time, nothing else changes
    return data


def generate(num_samples: int | None) -> dict[str, np.ndarray]:
    """The package's dataset of `num_samples` (its default 5000 when None), leaving the global
    random number generators as they were."""
    # Imported here, not at module level: the package pulls in matplotlib and requests,
    # which a CIFAR run or a cached load never needs. `get_dataset` is never used: it downloads.
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    if num_samples is not None:
        args.num_samples = num_samples
    # make_dataset seeds numpy's and Python's global RNGs (mnist1d.utils.set_seed) to fix
    # the dataset. Restore both so that loading data never changes what the caller's own
    # random draws will be.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {name: np.asarray(data[name]) for name in ARRAYS}
