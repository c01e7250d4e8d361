"""Write images in the real on-disk format of CIFAR-10 / CIFAR-100 (the "python version").

For tests and benches on machines without the real files (and without internet): what is
written here is read by torchvision's own CIFAR code, through the same path as the real
data. The official files are Python 2 pickles: their dict keys and names are Python 2
`str`, which Python 3 reads as b'data' with encoding='bytes' (the CIFAR web page) and as
'data' with encoding='latin1' (torchvision). The writer below emits exactly those opcodes,
so both readings behave as they do on the real files.
"""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np

CIFAR10_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class _Py2Str(bytes):
    """Bytes to be written as a Python 2 `str` (opcodes SHORT_BINSTRING / BINSTRING)."""


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch can be extended
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2str(self, obj: _Py2Str) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[_Py2Str] = _save_py2str

    def reducer_override(self, obj):
        # numpy pickles an array's raw bytes as `bytes`; the official files hold them as a
        # Python 2 str, which numpy decodes itself when the reader uses encoding='latin1'.
        if type(obj) is np.ndarray:
            fn, (cls, shape, typecode), state = obj.__reduce__()
            *head, raw = state
            return fn, (cls, shape, _Py2Str(typecode)), (*head, _Py2Str(raw))
        return NotImplemented


def _py2(value):
    """Turn the str keys and values of a nested dict/list into Python 2 strs."""
    if isinstance(value, str):
        return _Py2Str(value.encode("latin1"))
    if isinstance(value, dict):
        return {_py2(k): _py2(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_py2(v) for v in value]
    return value


def _dump(obj, path: Path) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(_py2(obj))


def _rows(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    # (N, 3, 32, 32) or already (N, 3072): rows of R then G then B planes, as in the files.
    return np.ascontiguousarray(images.reshape(len(images), 3 * 32 * 32))


def write_cifar(
    root: str | os.PathLike,
    name: str,
    *,
    train_images: np.ndarray,
    train_labels,
    test_images: np.ndarray,
    test_labels,
) -> Path:
    """Write a dataset in CIFAR's on-disk layout under root; return its folder.

    images: uint8 (N, 3, 32, 32) or (N, 3072). cifar10 splits the training images over
    data_batch_1..5 as the official files do; cifar100 writes `train`, `test` and `meta`
    with fine labels (coarse labels are fine // 5: nothing reads them, but the key exists).
    """
    root = Path(root)
    train_x, test_x = _rows(train_images), _rows(test_images)
    train_y = [int(v) for v in train_labels]
    test_y = [int(v) for v in test_labels]
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        parts = np.array_split(np.arange(len(train_y)), 5)
        for i, idx in enumerate(parts, start=1):
            _dump(
                {
                    "batch_label": f"training batch {i} of 5",
                    "labels": [train_y[j] for j in idx],
                    "data": train_x[idx],
                    "filenames": [f"synthetic_{j}.png" for j in idx],
                },
                folder / f"data_batch_{i}",
            )
        _dump(
            {
                "batch_label": "testing batch 1 of 1",
                "labels": test_y,
                "data": test_x,
                "filenames": [f"synthetic_test_{j}.png" for j in range(len(test_y))],
            },
            folder / "test_batch",
        )
        _dump(
            {"num_cases_per_batch": len(parts[0]), "label_names": CIFAR10_LABELS, "num_vis": 3072},
            folder / "batches.meta",
        )
        return folder
    if name == "cifar100":
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
            _dump(
                {
                    "filenames": [f"synthetic_{split}_{j}.png" for j in range(len(y))],
                    "batch_label": f"{split}ing batch 1 of 1",
                    "fine_labels": y,
                    "coarse_labels": [v // 5 for v in y],
                    "data": x,
                },
                folder / split,
            )
        _dump(
            {
                "fine_label_names": [f"class_{i}" for i in range(100)],
                "coarse_label_names": [f"superclass_{i}" for i in range(20)],
            },
            folder / "meta",
        )
        return folder
    raise ValueError(f"unknown CIFAR dataset {name!r}: cifar10 or cifar100")


def write_random_cifar(
    root: str | os.PathLike, name: str = "cifar10", *, n_train: int = 5000, n_test: int = 1000, seed: int = 0
) -> dict[str, np.ndarray]:
    """Random pixels and labels in CIFAR's format (benches); returns what was written."""
    rng = np.random.default_rng(seed)  # a local generator: the global numpy state is untouched
    classes = 10 if name == "cifar10" else 100
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8),
        "train_labels": rng.integers(0, classes, n_train),
        "test_images": rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8),
        "test_labels": rng.integers(0, classes, n_test),
    }
    write_cifar(root, name, **arrays)
    return arrays
