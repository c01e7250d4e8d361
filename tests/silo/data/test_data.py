"""silo.data: datasets on the device, the seeded validation split, the cache, batches.

CIFAR is tested through a tiny dataset written in the real on-disk format and read by
torchvision's own code; nothing is downloaded.
"""

from __future__ import annotations

import pickle
import random
import shutil

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from silo.config import DataConfig
from silo.data import (
    DATASETS,
    DataCache,
    DatasetNotFoundError,
    iterate_batches,
    load_data,
    random_crop_flip,
    split_indices,
    steps_per_epoch,
)
from silo.data.mnist1d import cache_path as mnist1d_cache_path
from tests._synthetic_data import write_cifar

SMALL = DataConfig(name="mnist1d", num_samples=500, val_fraction=0.1)


@pytest.fixture(scope="module")
def cache():
    # One generation of the small mnist1d for the whole module: the cache under test.
    return DataCache()


@pytest.fixture(scope="module")
def tiny_cifar10(tmp_path_factory):
    """60 train + 20 test images with known pixels, in CIFAR-10's real file layout."""
    root = tmp_path_factory.mktemp("cifar")
    rng = np.random.default_rng(1234)
    arrays = {
        "train_images": rng.integers(0, 256, (60, 3, 32, 32), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, 60),
        "test_images": rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, 20),
    }
    # The extreme pixel values must survive the round trip too.
    arrays["train_images"][0] = 0
    arrays["train_images"][1] = 255
    write_cifar(root, "cifar10", **arrays)
    return root, arrays


# ---------------------------------------------------------------- mnist1d


def test_mnist1d_shapes_and_classes():
    d = load_data(DataConfig(num_samples=1000), seed=0)  # the package splits 800 / 200
    assert d.train_x.shape == (720, 1, 40) and d.val_x.shape == (80, 1, 40)
    assert d.test_x.shape == (200, 1, 40)
    assert d.train_x.dtype == torch.float32 and d.train_y.dtype == torch.int64
    assert d.num_classes == 10 and d.in_channels == 1 and d.input_shape == (1, 40)
    assert d.chance == pytest.approx(0.1)
    assert d.augment is None and d.prepare is None
    assert sorted(torch.cat([d.train_y, d.val_y, d.test_y]).unique().tolist()) == list(range(10))
    # make_dataset centres and scales the signals: a wrong dtype or axis would break this.
    allx = torch.cat([d.train_x, d.val_x, d.test_x])
    assert abs(allx.mean().item()) < 1e-3 and allx.std().item() == pytest.approx(1.0, abs=1e-3)


def test_mnist1d_default_size_and_rng_restored_on_error(monkeypatch, tmp_path):
    """num_samples None keeps the package's 5000; the global RNGs come back even if it fails.

    (A spy instead of a real default-size generation, which takes seconds; a fresh root, so
    that no kept copy answers instead.)
    """
    import mnist1d.data

    seen = []

    def spy(args):
        seen.append((args.num_samples, args.train_split))
        np.random.seed(0)
        random.seed(0)
        raise RuntimeError("spy")

    monkeypatch.setattr(mnist1d.data, "make_dataset", spy)
    np.random.seed(11)
    random.seed(11)
    with pytest.raises(RuntimeError, match="spy"):
        load_data(DataConfig(root=str(tmp_path)), seed=0)
    assert seen == [(5000, 0.8)]  # -> 4000 train (3600 + 400 val) / 1000 test
    assert np.random.rand() == np.random.RandomState(11).rand()
    assert random.random() == random.Random(11).random()


def test_mnist1d_is_deterministic(cache, tmp_path):
    a = load_data(SMALL, seed=3, cache=cache)
    b = load_data(SMALL.model_copy(update={"root": str(tmp_path)}), seed=3)  # generated again from scratch
    for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.train_x.shape == (360, 1, 40) and a.test_x.shape == (100, 1, 40)


def test_load_data_leaves_global_rngs_untouched(tmp_path):
    np.random.seed(7)
    random.seed(7)
    torch_state = torch.get_rng_state()
    # mnist1d seeds numpy's and Python's global RNGs inside (a fresh root: it generates)
    load_data(SMALL.model_copy(update={"root": str(tmp_path)}), seed=0)
    expected_np, expected_py = np.random.RandomState(7).rand(3), random.Random(7).random()
    assert np.array_equal(np.random.rand(3), expected_np)
    assert random.random() == expected_py
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_mnist1d_is_generated_once_per_root_and_read_back_to_the_bit(tmp_path, monkeypatch):
    import mnist1d.data

    cfg = SMALL.model_copy(update={"root": str(tmp_path)})
    first = load_data(cfg, seed=2)  # generated, and kept under the root
    kept = mnist1d_cache_path(500, tmp_path)
    assert kept.is_file() and kept.parent == tmp_path / "mnist1d"
    assert [p.name for p in kept.parent.iterdir()] == [kept.name]  # no temporary file left

    def never(args):
        raise AssertionError("generated again although a copy is kept")

    monkeypatch.setattr(mnist1d.data, "make_dataset", never)
    again = load_data(cfg, seed=2)
    for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name
    # another size is another file, generated (here: refused by the spy)
    with pytest.raises(AssertionError, match="generated again"):
        load_data(cfg.model_copy(update={"num_samples": 300}), seed=2)


def test_a_damaged_copy_is_generated_again_and_replaced_and_a_root_that_is_a_file_only_generates(tmp_path):
    cfg = SMALL.model_copy(update={"root": str(tmp_path)})
    kept = mnist1d_cache_path(500, tmp_path)
    kept.parent.mkdir()
    kept.write_bytes(b"PK\x03\x04 cut short by a full disk")
    d = load_data(cfg, seed=0)
    assert d.train_x.shape == (360, 1, 40)
    assert np.load(kept)["x"].shape == (400, 40)  # replaced by the whole arrays
    fresh = load_data(SMALL.model_copy(update={"root": str(tmp_path / "other")}), seed=0)
    assert torch.equal(d.train_x, fresh.train_x)
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    e = load_data(SMALL.model_copy(update={"root": str(not_a_folder)}), seed=0)
    assert torch.equal(e.train_x, d.train_x) and not_a_folder.read_text() == ""


# ---------------------------------------------------------------- split and cache


def _full_train(d):
    """Undo the split: the original training set, from the two parts and their indices."""
    n = len(d.train_y) + len(d.val_y)
    x = torch.empty((n, *d.train_x.shape[1:]), dtype=d.train_x.dtype)
    y = torch.empty(n, dtype=d.train_y.dtype)
    x[d.train_index], y[d.train_index] = d.train_x, d.train_y
    x[d.val_index], y[d.val_index] = d.val_x, d.val_y
    return x, y


def test_val_split_is_seeded_disjoint_and_sized(cache):
    a, a2, b = (load_data(SMALL, seed=s, cache=cache) for s in (0, 0, 1))
    assert len(a.val_y) == round(0.1 * 400) == 40 and len(a.train_y) == 360
    assert torch.equal(a.val_index, a2.val_index) and torch.equal(a.val_x, a2.val_x)
    assert not torch.equal(a.val_index, b.val_index)
    for d in (a, b):
        both = torch.cat([d.train_index, d.val_index])
        assert len(set(d.train_index.tolist()) & set(d.val_index.tolist())) == 0
        assert sorted(both.tolist()) == list(range(400))
    # Both seeds partition the same training set; the test set is never split.
    xa, ya = _full_train(a)
    xb, yb = _full_train(b)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(a.test_x, b.test_x)


def test_split_indices_sizes_and_errors():
    tr, va = split_indices(1000, 0.25, seed=5)
    assert len(va) == 250 and len(tr) == 750
    with pytest.raises(ValueError, match="validation"):
        split_indices(10, 0.01, seed=0)  # round(0.1) = 0 examples


def test_cache_builds_once(monkeypatch):
    calls = []
    real = DATASETS["mnist1d"]

    def counting(cfg, root, device):
        calls.append(cfg)
        return real(cfg, root, device)

    monkeypatch.setitem(DATASETS, "mnist1d", counting)
    cache = DataCache()
    a = load_data(SMALL, seed=0, cache=cache)
    b = load_data(SMALL, seed=1, cache=cache)
    c = load_data(SMALL.model_copy(update={"val_fraction": 0.2}), seed=0, cache=cache)
    assert len(calls) == 1 and cache.loads == 1 and len(cache) == 1
    assert a.test_x is b.test_x is c.test_x  # the very tensor the builder made
    assert len(c.val_y) == 80
    load_data(SMALL.model_copy(update={"num_samples": 300}), seed=0, cache=cache)
    assert len(calls) == 2 and len(cache) == 2  # other contents, other entry
    load_data(SMALL, seed=0)  # no cache: builds
    assert len(calls) == 3


def test_unknown_dataset_lists_known_names():
    with pytest.raises(ValueError) as err:
        load_data(DataConfig(name="imagenet22k"), seed=0)
    for name in ("imagenet22k", "mnist1d", "cifar10", "cifar100", "imagenet", "tiny_imagenet"):
        assert name in str(err.value)


# ---------------------------------------------------------------- batches


def test_iterate_batches_seeded_order_and_coverage():
    x = torch.arange(103).float().unsqueeze(1)
    y = torch.arange(103)

    def order(seed, **kw):
        gen = torch.Generator().manual_seed(seed)
        return [yb.tolist() for _, yb in iterate_batches(x, y, 10, generator=gen, **kw)]

    a, b = order(0), order(1)
    assert a == order(0) and a != b
    assert len(a) == 10 == steps_per_epoch(103, 10) and all(len(bt) == 10 for bt in a)
    assert len(set(sum(a, []))) == 100  # drop_last: 100 distinct examples, none twice
    full = order(0, drop_last=False)
    assert len(full) == 11 == steps_per_epoch(103, 10, drop_last=False)
    assert sorted(sum(full, [])) == list(range(103))
    plain = [yb.tolist() for _, yb in iterate_batches(x, y, 50, shuffle=False, drop_last=False)]
    assert plain == [list(range(50)), list(range(50, 100)), [100, 101, 102]]
    for xb, yb in iterate_batches(x, y, 7, generator=torch.Generator().manual_seed(0)):
        assert torch.equal(xb[:, 0].long(), yb)  # x and y stay paired
    with pytest.raises(ValueError):
        steps_per_epoch(5, 10)


def test_iterate_batches_transform_gets_the_generator():
    seen = []

    def transform(xb, gen):
        seen.append(gen)
        return xb * 2

    x, y = torch.ones(8, 1), torch.zeros(8, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    out = [xb for xb, _ in iterate_batches(x, y, 4, generator=gen, transform=transform)]
    assert all(g is gen for g in seen) and len(seen) == 2
    assert all(torch.equal(xb, torch.full((4, 1), 2.0)) for xb in out)


# ---------------------------------------------------------------- CIFAR


def test_written_files_have_the_official_layout(tiny_cifar10):
    root, arrays = tiny_cifar10
    folder = root / "cifar-10-batches-py"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["batches.meta", "data_batch_1", "data_batch_2", "data_batch_3",
                     "data_batch_4", "data_batch_5", "test_batch"]
    # Read the way the CIFAR web page does (bytes keys) ...
    with open(folder / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (12, 3072)
    assert batch[b"labels"] == arrays["train_labels"][:12].tolist()
    with open(folder / "batches.meta", "rb") as f:
        assert pickle.load(f, encoding="bytes")[b"label_names"][0] == b"airplane"
    # ... and the way torchvision does (latin1 -> str keys).
    with open(folder / "test_batch", "rb") as f:
        test = pickle.load(f, encoding="latin1")
    assert np.array_equal(test["data"], arrays["test_images"].reshape(20, 3072))


def test_cifar10_pixels_and_labels_round_trip(tiny_cifar10):
    root, arrays = tiny_cifar10
    d = load_data(DataConfig(name="cifar10", root=str(root), val_fraction=0.25), seed=0)
    assert d.num_classes == 10 and d.input_shape == (3, 32, 32) and d.in_channels == 3
    assert d.train_x.dtype == torch.uint8 and d.train_x.shape == (45, 3, 32, 32)
    assert len(d.val_y) == 15 and d.test_x.shape == (20, 3, 32, 32)
    train = torch.from_numpy(arrays["train_images"])
    labels = torch.as_tensor(arrays["train_labels"])
    assert torch.equal(d.train_x, train[d.train_index]) and torch.equal(d.val_x, train[d.val_index])
    assert torch.equal(d.train_y, labels[d.train_index]) and torch.equal(d.val_y, labels[d.val_index])
    assert torch.equal(d.test_y, torch.as_tensor(arrays["test_labels"]))
    # prepare normalises with CIFAR's channel statistics; undoing it gives the exact pixels.
    xt = d.prepare(d.test_x)
    assert xt.dtype == torch.float32 and xt.shape == (20, 3, 32, 32)
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    pixels = ((xt * std + mean) * 255).round().to(torch.uint8)
    assert torch.equal(pixels, torch.from_numpy(arrays["test_images"]))


def test_cifar100_reads_fine_labels(tmp_path):
    rng = np.random.default_rng(5)
    imgs = rng.integers(0, 256, (30, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(30) * 3 % 100  # labels above 20: fine, not coarse
    write_cifar(tmp_path, "cifar100", train_images=imgs, train_labels=labels,
                test_images=imgs[:10], test_labels=labels[:10])
    d = load_data(DataConfig(name="cifar100", root=str(tmp_path)), seed=0)
    assert d.num_classes == 100 and d.chance == pytest.approx(0.01)
    assert torch.equal(d.test_y, torch.as_tensor(labels[:10]))
    assert torch.equal(d.train_y, torch.as_tensor(labels)[d.train_index])
    assert torch.equal(d.train_x, torch.from_numpy(imgs)[d.train_index])


def test_cifar_root_from_environment(tiny_cifar10, monkeypatch):
    root, arrays = tiny_cifar10
    monkeypatch.setenv("SILO_DATA_ROOT", str(root))
    d = load_data(DataConfig(name="cifar10"), seed=0)  # root: None -> $SILO_DATA_ROOT
    assert torch.equal(d.test_x, torch.from_numpy(arrays["test_images"]))


def test_cifar_cache_does_not_read_the_files_again(tiny_cifar10, tmp_path):
    src, _ = tiny_cifar10
    root = tmp_path / "copy"
    shutil.copytree(src, root)
    cfg = DataConfig(name="cifar10", root=str(root))
    cache = DataCache()
    a = load_data(cfg, seed=0, cache=cache)
    shutil.rmtree(root)  # any further read would now fail
    b = load_data(cfg, seed=1, cache=cache)
    assert cache.loads == 1 and b.test_x is a.test_x
    with pytest.raises(DatasetNotFoundError):
        load_data(cfg, seed=1)


def test_missing_cifar_names_the_expected_folder(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as err:
        load_data(DataConfig(name="cifar10", root=str(root)), seed=0)
    assert isinstance(err.value, FileNotFoundError)
    msg = str(err.value)
    assert str(root / "cifar-10-batches-py") in msg
    assert "download=True" in msg and "task.data.root" in msg and "SILO_DATA_ROOT" in msg


def test_partly_missing_cifar_lists_the_missing_files(tiny_cifar10, tmp_path):
    root = tmp_path / "partial"
    shutil.copytree(tiny_cifar10[0], root)
    (root / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing: test_batch"):
        load_data(DataConfig(name="cifar10", root=str(root)), seed=0)


def test_num_samples_is_refused_for_cifar(tiny_cifar10):
    cfg = DataConfig(name="cifar10", root=str(tiny_cifar10[0]), num_samples=100)
    with pytest.raises(ValueError, match="mnist1d only"):
        load_data(cfg, seed=0)


# ---------------------------------------------------------------- augmentation


def _distinct_images(n):
    # Every pixel of every channel distinct and nonzero, so a crop reveals its offset.
    base = torch.arange(1, 3 * 32 * 32 + 1, dtype=torch.float32).view(1, 3, 32, 32)
    return base.repeat(n, 1, 1, 1)


def _find_params(img, out):
    """All (top, left, flip) such that torchvision's own pad/crop/flip give `out`."""
    padded = TF.pad(img, [4])
    hits = []
    for top in range(9):
        for left in range(9):
            crop = TF.crop(padded, top, left, 32, 32)
            for flip in (False, True):
                if torch.equal(TF.hflip(crop) if flip else crop, out):
                    hits.append((top, left, flip))
    return hits


def test_crop_flip_matches_torchvision_semantics():
    x = _distinct_images(48)
    out = random_crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    params = []
    for i in range(len(x)):
        hits = _find_params(x[i], out[i])
        assert len(hits) == 1, f"sample {i} is no padded crop (+flip) of its input"
        params.append(hits[0])
    tops, lefts, flips = zip(*params)
    # Offsets within +-4 pixels (0..8 in the padded image), both flips seen, crops vary.
    assert min(tops) >= 0 and max(tops) <= 8 and min(lefts) >= 0 and max(lefts) <= 8
    assert 0 < sum(flips) < len(flips)
    assert len(set(zip(tops, lefts))) > 10


def test_crop_flip_is_deterministic_per_seed():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    a = random_crop_flip(x, torch.Generator().manual_seed(1))
    b = random_crop_flip(x, torch.Generator().manual_seed(1))
    c = random_crop_flip(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(TypeError):
        random_crop_flip(x, None)


def test_cifar_augment_is_crop_flip_then_normalise(tiny_cifar10):
    root, _ = tiny_cifar10
    d = load_data(DataConfig(name="cifar10", root=str(root)), seed=0)
    xb = d.train_x[:16]
    out = d.augment(xb, torch.Generator().manual_seed(3))
    assert out.dtype == torch.float32 and out.shape == (16, 3, 32, 32)
    expected = d.prepare(random_crop_flip(xb, torch.Generator().manual_seed(3)))
    assert torch.equal(out, expected)
    off = load_data(DataConfig(name="cifar10", root=str(root), augment=False), seed=0)
    assert off.augment is None and off.prepare is not None


def test_the_three_split_classes_keep_the_splits_contract(tmp_path):
    """DataSplits, StreamingSplits and DatasetStreamingSplits are what the training loop
    reads through silo.data.Splits: each has every attribute and method of the protocol."""
    import inspect

    from silo.data import DatasetStreamingSplits, DataSplits, Splits, StreamingSplits

    wanted = {n for n in dir(Splits) if not n.startswith("_")} | set(Splits.__annotations__)
    assert {"num_train", "num_val", "train_batches", "eval_batches", "chance", "in_channels"} <= wanted
    for cls in (DataSplits, StreamingSplits, DatasetStreamingSplits):
        have = {n for n in dir(cls) if not n.startswith("_")} | set(inspect.get_annotations(cls, eval_str=False))
        for base in cls.__mro__:
            have |= set(getattr(base, "__annotations__", {}))
        assert wanted <= have, (cls.__name__, wanted - have)
