"""MNIST-1D (Greydanus 2020), generated locally: the embedded default, no files, no network."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from silo.config import DataConfig
from silo.data.base import RawData


def build_mnist1d(cfg: DataConfig, root: Path, device: torch.device) -> RawData:
    # Imported here, not at module level: the package pulls in matplotlib and requests,
    # which a CIFAR run never needs. `get_dataset` is never used: it downloads.
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    if cfg.num_samples is not None:
        args.num_samples = cfg.num_samples
    # make_dataset seeds numpy's and Python's global RNGs (mnist1d.utils.set_seed) to fix
    # the dataset. Restore both so that loading data never changes what the caller's own
    # random draws will be.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)

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
