"""Tiny-ImageNet and ImageNet through tiny ImageFolder trees written here (PIL), read by the
real builders; the streaming contract the training loop uses; the in-memory batches of
`DataSplits.train_batches` equal to the loop they replace."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from silo.config import DataConfig, PruningConfig, TaskConfig
from silo.data import (
    DatasetNotFoundError,
    DataSplits,
    StreamingSplits,
    common,
    imagenet,
    iterate_batches,
    load_data,
)
from silo.train import train_run
from tests._synthetic_data import write_random_cifar

WNIDS = ["n01443537", "n01629819", "n01641577"]




@pytest.fixture(autouse=True)
def no_workers(monkeypatch):
    monkeypatch.setenv(common.WORKERS_ENV, "0")  # in-process unless a test asks


def pixels(seed: int, size: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def save(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# ----------------------------------------------------------------------------- Tiny-ImageNet


def write_tiny(root, *, val_layout: str, per_class: int = 4, size: int = 8) -> dict:
    """The official layout (PNG content, lossless, so pixels can be compared exactly)."""
    base = root / "tiny-imagenet-200"
    train, val = {}, []
    for c, wnid in enumerate(WNIDS):
        for i in range(per_class):
            a = pixels(100 * c + i, (size, size))
            path = base / "train" / wnid / "images" / f"{wnid}_{i}.png"
            save(path, a)
            train[str(path)] = (a, c)
    for i in range(5):
        c = i % len(WNIDS)
        a = pixels(1000 + i, (size, size))
        val.append((f"val_{i}.png", WNIDS[c], a, c))
    if val_layout == "annotations":
        lines = []
        for name, wnid, a, _ in val:
            save(base / "val" / "images" / name, a)
            lines.append(f"{name}\t{wnid}\t0\t0\t{size - 1}\t{size - 1}")
        (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    else:  # class folders
        for name, wnid, a, _ in val:
            save(base / "val" / wnid / name, a)
    (base / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    return {"train": train, "val": val}


@pytest.mark.parametrize("layout", ["annotations", "class_folders"])
def test_tiny_imagenet_loads_on_the_device_as_uint8(tmp_path, layout):
    written = write_tiny(tmp_path, val_layout=layout)
    d = load_data(DataConfig(name="tiny_imagenet", root=str(tmp_path), val_fraction=0.25), seed=0)
    assert isinstance(d, DataSplits) and not d.streaming
    assert d.num_classes == 3 and d.input_shape == (3, 8, 8)
    assert d.train_x.dtype == torch.uint8 and d.num_train == 9 and len(d.val_y) == 3
    # Every training image, pixel for pixel, with the class of its folder (sorted wnids).
    images = {tuple(a.transpose(2, 0, 1).ravel()): c for a, c in written["train"].values()}
    for x, y in zip(torch.cat([d.train_x, d.val_x]), torch.cat([d.train_y, d.val_y])):
        assert images[tuple(x.numpy().ravel())] == int(y)
    # The official validation images are the test set, in either layout.
    expected = sorted((tuple(a.transpose(2, 0, 1).ravel()), c) for _, _, a, c in written["val"])
    got = sorted((tuple(x.numpy().ravel()), int(y)) for x, y in zip(d.test_x, d.test_y))
    assert got == expected
    # Batched crop + flip, then normalisation: model-ready floats of the same shape.
    gen = torch.Generator().manual_seed(0)
    xb, yb = next(d.train_batches(4, gen))
    assert xb.shape == (4, 3, 8, 8) and xb.dtype == torch.float32 and yb.shape == (4,)


def not_found_message(name: str, root) -> str:
    """What load_data says when `name`'s files are not under `root`."""
    with pytest.raises(DatasetNotFoundError) as err:
        load_data(DataConfig(name=name, root=str(root)), seed=0)
    return str(err.value)


def test_tiny_imagenet_missing_and_broken(tmp_path):
    message = not_found_message("tiny_imagenet", tmp_path)
    assert str(tmp_path / "tiny-imagenet-200") in message and "tiny-imagenet-200.zip" in message
    assert "does not exist" in message and "SILO_DATA_ROOT" in message
    write_tiny(tmp_path, val_layout="annotations")
    (tmp_path / "tiny-imagenet-200" / "val" / "images" / "val_3.png").unlink()
    with pytest.raises(DatasetNotFoundError, match="val_3.png"):
        load_data(DataConfig(name="tiny_imagenet", root=str(tmp_path)), seed=0)


# ----------------------------------------------------------------------------- ImageNet


def write_imagenet(root, per_class: int = 4) -> None:
    """JPEGs of varied sizes in train/<wnid>/ and val/<wnid>/ (2 per class)."""
    base = root / "imagenet"
    for c, wnid in enumerate(WNIDS):
        for i in range(per_class):
            save(base / "train" / wnid / f"{wnid}_{i}.JPEG", pixels(c * 10 + i, (20 + 3 * i, 16 + c)))
        for i in range(2):
            save(base / "val" / wnid / f"ILSVRC2012_val_{c}{i}.JPEG", pixels(500 + c * 10 + i, (18, 24)))


@pytest.fixture
def small_crops(monkeypatch):
    # The real builder at a tiny image size: crop 16 (eval: resize 18, centre crop 16).
    monkeypatch.setattr(imagenet, "IMAGENET_CROP", 16)
    monkeypatch.setattr(imagenet, "IMAGENET_RESIZE", 18)


def test_imagenet_streams_seeded_model_ready_batches(tmp_path, small_crops):
    write_imagenet(tmp_path)
    cfg = DataConfig(name="imagenet", root=str(tmp_path), val_fraction=0.25)
    d = load_data(cfg, seed=0)
    assert isinstance(d, StreamingSplits) and d.streaming
    assert (d.num_train, d.num_val, d.num_test) == (9, 3, 6)
    assert d.num_classes == 3 and d.input_shape == (3, 16, 16) and d.in_channels == 3
    assert d.chance == pytest.approx(1 / 3)

    def epoch(seed, **kw):
        return list(d.train_batches(2, torch.Generator().manual_seed(seed), **kw))

    a, b, c = epoch(1), epoch(1), epoch(2)
    assert len(a) == 4  # 9 // 2 full batches
    assert all(x.shape == (2, 3, 16, 16) and x.dtype == torch.float32 for x, _ in a)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert not all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, c))
    # Normalised with ImageNet's statistics: pixels 0..255 map into about [-2.2, 2.7].
    assert -2.2 < float(torch.cat([x for x, _ in a]).min()) and float(torch.cat([x for x, _ in a]).max()) < 2.7
    # Evaluation: every image once, in order, deterministic.
    test = list(d.eval_batches("test", 4))
    assert [len(y) for _, y in test] == [4, 2]
    assert torch.cat([y for _, y in test]).tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(test[0][0], next(iter(d.eval_batches("test", 4)))[0])
    assert sum(len(y) for _, y in d.eval_batches("val", 2)) == 3
    # Same seed, same split as any dataset: train and val partition the training folder.
    assert sorted(d.train_index.tolist() + d.val_index.tolist()) == list(range(12))


def test_imagenet_batches_do_not_depend_on_the_worker_count(tmp_path, small_crops, monkeypatch):
    write_imagenet(tmp_path)
    d = load_data(DataConfig(name="imagenet", root=str(tmp_path), val_fraction=0.25), seed=0)
    in_process = list(d.train_batches(3, torch.Generator().manual_seed(4)))
    monkeypatch.setenv(common.WORKERS_ENV, "2")
    workers = list(d.train_batches(3, torch.Generator().manual_seed(4)))
    assert len(in_process) == len(workers) == 3
    for (x1, y1), (x2, y2) in zip(in_process, workers):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_imagenet_at_its_real_size(tmp_path):
    write_imagenet(tmp_path, per_class=1)
    d = load_data(DataConfig(name="imagenet", root=str(tmp_path), val_fraction=0.34), seed=0)
    assert d.input_shape == (3, 224, 224)
    xb, yb = next(d.train_batches(2, torch.Generator().manual_seed(0)))
    assert xb.shape == (2, 3, 224, 224)
    xb, yb = next(d.eval_batches("test", 6))
    assert xb.shape == (6, 3, 224, 224)


def test_imagenet_missing_says_where_and_how(tmp_path):
    message = not_found_message("imagenet", tmp_path)
    assert str(tmp_path / "imagenet") in message and "train/<wnid>/*.JPEG" in message
    assert "image-net.org" in message and "SILO_DATA_ROOT" in message
    (tmp_path / "imagenet" / "train" / WNIDS[0]).mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="no class folders in .*val"):
        load_data(DataConfig(name="imagenet", root=str(tmp_path)), seed=0)


def test_train_run_streams_imagenet_with_gradient_pruning(tmp_path, small_crops):
    """The training loop on the streaming path: a dense cycle, then a cycle that prunes by
    global gradient on streamed batches; the same seed gives the same result."""
    write_imagenet(tmp_path)
    task = TaskConfig(
        data=DataConfig(name="imagenet", root=str(tmp_path), val_fraction=0.25),
        model="resnet20", epochs=1, batch_size=2, eval_batch_size=4, device="cpu",
        pruning=PruningConfig(strategy="global_gradient", rate=0.2, score_batches=2),
    )
    dense = train_run(task, seed=0, cycle=0, max_lr=0.01)
    assert dense.metrics.status == "ok" and dense.metrics.steps == 4
    assert 0 <= dense.metrics.val_acc <= 1 and dense.metrics.test_acc in {i / 6 for i in range(7)}
    pruned = train_run(task, seed=0, cycle=1, max_lr=0.01, parent=dense.state)
    assert pruned.metrics.sparsity == pytest.approx(0.2, abs=1e-3)
    again = train_run(task, seed=0, cycle=1, max_lr=0.01, parent=dense.state)
    assert again.state.mask == pruned.state.mask
    assert all(torch.equal(v, again.state.weights[k]) for k, v in pruned.state.weights.items())


# ----------------------------------------------------------------------------- in memory


def test_in_memory_train_batches_equal_the_loop_they_replace(tmp_path):
    write_random_cifar(tmp_path, "cifar10", n_train=100, n_test=10)
    d = load_data(DataConfig(name="cifar10", root=str(tmp_path)), seed=0)
    for augment in (True, False):
        g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
        new = list(d.train_batches(16, g1, augment=augment))
        old = []
        for xb, yb in iterate_batches(d.train_x, d.train_y, 16, generator=g2):
            old.append((d.augment(xb, g2) if augment else d.prepare(xb), yb))
        assert len(new) == len(old) == 5
        for (x1, y1), (x2, y2) in zip(new, old):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)
    test = list(d.eval_batches("test", 4))
    assert torch.equal(torch.cat([x for x, _ in test]), d.prepare(d.test_x))
    with pytest.raises(ValueError, match="split"):
        next(d.eval_batches("train", 4))
