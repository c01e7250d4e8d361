"""A researcher's own network and data: import paths, torchvision by name, `code:` shipped to workers.

The user's package always lives in a temporary folder outside the repository (so it is
importable only through the study's `code:`), and every bad input is tried through the CLI
as a user meets it: one `error:` line naming the field, exit 2, nothing written.
"""

from __future__ import annotations

import copy
import csv
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from oracle.cli import main
from oracle.store.identity import RunKey
from oracle.store.runs import RunStore
from oracle.study import load_study, parse_study
from oracle.sweep.execute import obtain_round
from silo.config import DataConfig, TaskConfig
from silo.data import load_data
from silo.data.foreign import build_foreign_data
from silo.data.splits import make_splits
from silo.models.foreign import ForeignCodeError, architecture_fingerprint
from silo.train import train_run
from tests._repo import REPO

EXAMPLE = REPO / "examples" / "own_model"
BIN = Path(sys.executable).parent


# The user's package for the bad inputs: every way a factory can be wrong, one function each.
BAD = '''
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, in_channels=1, num_classes=4, extra=0):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 40, num_classes + extra)
    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))

def good(*, num_classes, in_channels):
    return Net(in_channels, num_classes)

def raises(*, num_classes):
    raise ValueError("width must be even, got 3")

def not_a_module(**kwargs):
    return 3

def wrong_output(*, num_classes, in_channels):
    return Net(in_channels, num_classes, extra=1)

class NoPrunable(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(40, num_classes))
    def forward(self, x):
        return x.flatten(1) @ self.w

def nothing_prunable(*, num_classes):
    return NoPrunable(num_classes)

def data(n=200, labels=4, shift=0, empty_test=False, x_kind="float", y_len=None):
    g = torch.Generator().manual_seed(0)
    def split(m):
        x = torch.randn(m, 1, 40, generator=g)
        y = (torch.arange(m) % labels) + shift
        if x_kind == "list":
            x = x.tolist()
        return (x, y[: y_len] if y_len is not None else y)
    return split(n), split(0 if empty_test else n // 4)

def not_a_pair():
    return {"train": 1}
'''


@pytest.fixture
def isolated_imports(tmp_path):
    """sys.path as it was, and the user's modules (imported from tmp_path) forgotten after the test."""
    path = list(sys.path)
    yield
    sys.path[:] = path
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


@pytest.fixture
def user_pkg(tmp_path, isolated_imports):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(BAD)
    return pkg


def _study(tmp_path: Path, smoke_mapping: dict, changes: dict, *, code=("userpkg",)) -> Path:
    data = copy.deepcopy(smoke_mapping)
    data["name"] = "own"
    data["code"] = list(code)
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("changes, field, says", [
    ({"task.model": "nosuchpkg_zz.nets:good"}, "task.model", "no module named 'nosuchpkg_zz'"),
    ({"task.model": "userpkg.nets:nothere"}, "task.model", "has no attribute 'nothere'"),
    ({"task.model": "userpkg.nets:raises"}, "task.model", "raised ValueError: width must be even, got 3"),
    ({"task.model": "userpkg.nets:not_a_module"}, "task.model", "returned an int, not a torch.nn.Module"),
    ({"task.model": "userpkg.nets:wrong_output"}, "task.model", "it must give (batch, num_classes) = (64, 10)"),
    ({"task.model": "userpkg.nets:nothing_prunable"}, "pruning", "has no prunable weight"),
    ({"task.model": "userpkg.nets:good", "task.model_args": {"width": 3}}, "task.model_args",
     "takes no argument(s) 'width'"),
    ({"task.model": "torchvision:resnet18", "task.model_args": {"weights": "DEFAULT"}}, "task.model_args",
     "never downloads weights"),
    ({"task.data": {"name": "userpkg.nets:data", "args": {"colour": 1}}}, "task.data.args",
     "takes no argument(s) 'colour'"),
    ({"task.data": {"name": "mnist1d", "args": {"n": 1}}}, "task.data.args", "only for a dataset by import path"),
    ({"task.model": "userpkg.nets:good", "pruning.exclude": ["fcc"]}, "pruning.exclude",
     "'fcc' names no Conv or Linear weight"),
    ({"task.data": {"name": "userpkg.nets:not_a_pair"}}, "task.data.name", "it must return (train, test)"),
    ({"task.data": {"name": "userpkg.nets:data", "args": {"x_kind": "list"}}}, "task.data.name",
     "train and test must each be a pair of tensors"),
    ({"task.data": {"name": "userpkg.nets:data", "args": {"y_len": 10}}}, "task.data.name",
     "train y must have shape (200,) to match x, got (10,)"),
    ({"task.data": {"name": "userpkg.nets:data", "args": {"shift": 1}}}, "task.data.name",
     "train has no example of class 0 (of 0..4)"),
    ({"task.data": {"name": "userpkg.nets:data", "args": {"empty_test": True}}}, "task.data.name",
     "the test split is empty"),
    ({"task.data": {"name": "userpkg.nets:data", "args": {"labels": 4}, "num_classes": 3}}, "task.data.name",
     "label 3 is not below task.data.num_classes (3)"),
    ({"task.data": {"name": "userpkg.nets:nodata"}}, "task.data.name", "has no attribute 'nodata'"),
    ({"task.model_fingerprint": "abc"}, "task.model_fingerprint", "not a setting"),
    ({"task.data": {"name": "userpkg.nets:data", "augment": True}}, "task.data.augment",
     "applies to the built-in datasets only: silo applies no augmentation to your own data"),
])
def test_each_bad_input_is_one_line_naming_the_field_exit_2_nothing_written(
        user_pkg, tmp_path, smoke_mapping, capsys, changes, field, says):
    path = _study(tmp_path, smoke_mapping, changes)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"error: {field}: "), err
    assert says in err[0], err
    assert not out.exists()


def test_a_code_path_that_does_not_exist(tmp_path, smoke_mapping, capsys, isolated_imports):
    path = _study(tmp_path, smoke_mapping, {}, code=("userpkg", "nowhere"))
    (tmp_path / "userpkg").mkdir()
    (tmp_path / "userpkg" / "__init__.py").write_text("")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: code[1]: no such folder or file: {tmp_path / 'nowhere'}"]


def test_validate_prints_the_layers_pruning_will_see(user_pkg, tmp_path, smoke_mapping, capsys):
    path = _study(tmp_path, smoke_mapping, {"task.model": "userpkg.nets:good", "pruning.exclude": ["fc"]})
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    resolved = yaml.safe_load(out)  # the report is YAML comments: the output stays a study
    assert resolved["code"] == [str(user_pkg)]
    path = _study(tmp_path, smoke_mapping, {"task.model": "userpkg.nets:good", "task.data.name": "userpkg.nets:data"})
    assert main(["validate", str(path)]) == 0
    own_data = yaml.safe_load(capsys.readouterr().out)["task"]["data"]
    assert own_data["augment"] is False  # shown as it is: silo never augments your data
    assert "# pruned layers (weights):" in out
    assert "#   conv.weight          12" in out  # Conv1d(1, 4, 3): 12 weights; fc excluded
    assert "fc.weight" not in out
    assert "1 prunable layers, 12 of" in out


# ----------------------------------------------------------------------------- identity


def _version(tmp_path: Path, name: str, hidden: int) -> Path:
    folder = tmp_path / name / "archpkg"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(textwrap.dedent(f'''
        from torch import nn
        def mlp(*, num_classes, in_channels, hidden={hidden}):
            return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 40, hidden), nn.ReLU(),
                                 nn.Linear(hidden, num_classes))
        '''))
    return folder


def _run_id(study) -> str:
    return RunKey(study.task, seed=0, cycle=0, max_lr=0.1, parent_run_id=None).run_id


def test_an_edited_architecture_gets_new_run_ids_the_same_code_the_same(tmp_path, smoke_mapping, isolated_imports):
    data = dict(copy.deepcopy(smoke_mapping), name="arch")
    data["task"]["model"] = "archpkg:mlp"
    v1 = _version(tmp_path, "v1", hidden=16)
    first = parse_study(dict(data, code=[str(v1)]))
    again = parse_study(dict(data, code=[str(v1)]))
    assert first.task.model_fingerprint is not None
    assert _run_id(first) == _run_id(again)
    assert parse_study(first.to_mapping()) == first  # the resolved study computes it again
    # model_args are part of the key too, and change the architecture here
    wider = parse_study({**data, "code": [str(v1)], "task": {**data["task"], "model_args": {"hidden": 17}}})
    assert _run_id(wider) != _run_id(first)
    # The same import path, the code edited (as a user edits their file): new ids.
    for name in [m for m in sys.modules if m == "archpkg" or m.startswith("archpkg.")]:
        del sys.modules[name]
    sys.path.remove(str(v1.parent))
    v2 = _version(tmp_path, "v2", hidden=32)
    edited = parse_study(dict(data, code=[str(v2)]))
    assert edited.task.model == first.task.model and edited.task.model_args == first.task.model_args
    assert edited.task.model_fingerprint != first.task.model_fingerprint
    assert _run_id(edited) != _run_id(first)
    # Where the code lives is not part of the key.
    assert "code" not in first.task.identity() and "model_fingerprint" in first.task.identity()


def test_own_data_is_never_augmented_and_its_flag_is_not_part_of_the_identity():
    own = TaskConfig(data=DataConfig(name="pkg.mod:make"))
    assert own.data.augment is False and "augment" not in own.identity().get("data", {})
    assert own.identity() == {"data": {"name": "pkg.mod:make"}}  # as before the flag was shown false
    assert TaskConfig(data=DataConfig(name="cifar10", augment=False)).identity()["data"]["augment"] is False


def test_builtin_tasks_keep_their_identity_with_the_new_settings_at_defaults():
    task = TaskConfig()
    assert task.identity() == {}
    assert "include" not in TaskConfig(pruning={"exclude": ["fc"]}).identity()["pruning"]
    assert TaskConfig(data={"args": {"n": 1}}).identity() == {"data": {"args": {"n": 1}}}


def test_a_worker_that_builds_another_architecture_refuses_to_train(tmp_path, isolated_imports):
    v1 = _version(tmp_path, "w", hidden=8)
    sys.path.insert(0, str(v1.parent))
    task = TaskConfig(model="archpkg:mlp", data={"name": "mnist1d", "num_samples": 200}, epochs=0.1,
                      model_fingerprint="0" * 16)
    with pytest.raises(ForeignCodeError, match="imports other code than the driver"):
        train_run(task, seed=0, cycle=0, max_lr=0.1)


# ----------------------------------------------------------------------------- data


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The idx format of (Fashion-)MNIST: magic (0, 0, type 0x08 uint8, ndim), big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_a_torchvision_class_reads_its_own_files_train_and_test_by_its_split_argument(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    test_x = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    train_y, test_y = np.arange(60) % 10, (np.arange(20) * 3) % 10
    _write_idx(raw / "train-images-idx3-ubyte", train_x)
    _write_idx(raw / "train-labels-idx1-ubyte", train_y)
    _write_idx(raw / "t10k-images-idx3-ubyte", test_x)
    _write_idx(raw / "t10k-labels-idx1-ubyte", test_y)
    cfg = DataConfig(name="torchvision:FashionMNIST", root=str(tmp_path), val_fraction=0.25)
    data = load_data(cfg, seed=3)
    assert (data.num_classes, data.input_shape) == (10, (1, 28, 28))
    assert data.num_train == 45 and len(data.val_y) == 15
    # The stored pixels are the files' own, train and test from the split argument.
    assert torch.equal(data.test_x[:, 0], torch.from_numpy(test_x))
    assert torch.equal(data.test_y, torch.from_numpy(test_y).long())
    assert torch.equal(data.train_x[:, 0], torch.from_numpy(train_x)[data.train_index])
    # Model-ready: normalised with the training images' own mean and std.
    mean, std = train_x.astype(np.float64).mean() / 255, train_x.astype(np.float64).std(ddof=1) / 255
    xb, _ = next(data.eval_batches("test", 20))
    expected = (torch.from_numpy(test_x).double() / 255 - mean) / std
    assert torch.allclose(xb[:, 0].double(), expected, atol=1e-5)


def test_validate_refuses_a_study_whose_data_is_not_there(tmp_path, monkeypatch, capsys):
    # `validate` checks the files (present, not empty; nothing loaded) as `run` does first:
    # exit 2 with one line saying where they are expected, never a download=True option.
    empty = tmp_path / "nodata"
    empty.mkdir()
    monkeypatch.setenv("SILO_DATA_ROOT", str(empty))
    assert main(["validate", str(REPO / "studies" / "resnet20_cifar10.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"error: task.data: CIFAR-10 not found: expected the folder {empty / 'cifar-10-batches-py'} holding "), err
    study = yaml.safe_load((REPO / "studies" / "smoke.yaml").read_text())
    study["task"]["model"] = "resnet20"  # 2-D images
    study["task"]["data"] = {"name": "torchvision:FashionMNIST", "root": str(tmp_path)}
    path = tmp_path / "fashion.yaml"
    path.write_text(yaml.safe_dump(study))
    raw = tmp_path / "FashionMNIST" / "raw"
    files = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"
    for what, prepare in [("the folder does not exist", lambda: None),
                          ("missing: t10k-labels-idx1-ubyte", lambda: _fashion_files(raw, skip="t10k-labels")),
                          ("empty: t10k-labels-idx1-ubyte", lambda: (raw / "t10k-labels-idx1-ubyte").write_bytes(b""))]:
        prepare()
        assert main(["validate", str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: task.data: torchvision:FashionMNIST not found: expected the folder {raw} holding "
                       f"{files} ({what}), as torchvision.datasets.FashionMNIST lays it out under its root. "
                       f"silo-oracle never downloads: copy that folder from a machine that has it to {raw.parent} "
                       "here. The root is set by the study field task.data.root or the environment variable "
                       "SILO_DATA_ROOT (default ./data)."], err
        assert "download=True" not in err[0]
    _fashion_files(raw)
    assert main(["validate", str(path)]) == 0


def _fashion_files(raw: Path, skip: str = "") -> None:
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, array in [("train-images-idx3-ubyte", rng.integers(0, 256, (60, 28, 28))),
                        ("train-labels-idx1-ubyte", np.arange(60) % 10),
                        ("t10k-images-idx3-ubyte", rng.integers(0, 256, (20, 28, 28))),
                        ("t10k-labels-idx1-ubyte", np.arange(20) % 10)]:
        if not name.startswith(skip) or not skip:
            _write_idx(raw / name, array)


class _Items(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_a_dataset_too_large_for_memory_streams_the_same_batches(tmp_path, monkeypatch):
    """A Dataset factory's data held in memory, and the same data streamed (a memory limit of
    one byte): the same training batches in the same order, the same evaluation batches."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(90, 2, 5, generator=g), torch.arange(90) % 3
    train, test = _Items(x[:70], y[:70]), _Items(x[70:], y[70:])
    (tmp_path / "itemspkg.py").write_text("")
    cfg = DataConfig(name="itemspkg:items", val_fraction=0.2)
    monkeypatch.setenv("SILO_DATA_WORKERS", "0")
    monkeypatch.syspath_prepend(str(tmp_path))
    import itemspkg

    monkeypatch.setattr(itemspkg, "items", lambda: (train, test), raising=False)
    held = build_foreign_data(cfg, tmp_path, torch.device("cpu"))
    streamed = build_foreign_data(cfg, tmp_path, torch.device("cpu"), in_memory_bytes=1)

    a = make_splits(held, val_fraction=0.2, seed=5, augment=False)
    b = streamed.splits(val_fraction=0.2, seed=5, augment=False)
    assert type(b).__name__ == "DatasetStreamingSplits" and b.num_train == a.num_train == 56
    ga, gb = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    for (xa, ya), (xb, yb) in zip(a.train_batches(16, ga), b.train_batches(16, gb), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    for split in ("val", "test"):
        for (xa, ya), (xb, yb) in zip(a.eval_batches(split, 8), b.eval_batches(split, 8), strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # A run on the streamed data is the run on the data held in memory.
    task = TaskConfig(model="mnist1d_mlp", model_args={"width": 8, "length": 5}, epochs=2, batch_size=16)
    ra, rb = (train_run(task, seed=5, cycle=0, max_lr=0.1, data=d) for d in (a, b))
    assert (ra.metrics.val_acc, ra.metrics.test_acc) == (rb.metrics.val_acc, rb.metrics.test_acc)
    assert all(torch.equal(ra.state.weights[k], rb.state.weights[k]) for k in ra.state.weights)


# ----------------------------------------------------------------------------- fusion


UNFUSABLE = '''
import torch
from torch import nn

class Gate(nn.Module):
    """Data-dependent control flow: vmap cannot branch on a tensor's value."""
    def __init__(self, num_classes, in_channels):
        super().__init__()
        self.hidden = nn.Linear(in_channels * 40, 16)
        self.fc = nn.Linear(16, num_classes)
    def forward(self, x):
        h = torch.relu(self.hidden(x.flatten(1)))
        if h.mean() > 100:  # branches on the activations, which differ per fused member
            h = h * 2
        return self.fc(h)

def gate(*, num_classes, in_channels):
    return Gate(num_classes, in_channels)
'''


def test_a_model_torch_func_cannot_fuse_runs_sequentially_and_says_why(tmp_path, isolated_imports):
    (tmp_path / "gatepkg.py").write_text(UNFUSABLE)
    sys.path.insert(0, str(tmp_path))
    task = TaskConfig(model="gatepkg:gate", data={"name": "mnist1d", "num_samples": 300}, epochs=0.5)
    keys = [RunKey(task, seed=0, cycle=0, max_lr=v, parent_run_id=None) for v in (0.01, 0.1)]
    heard = []
    members = obtain_round(RunStore(tmp_path / "runs"), keys, fuse="on", on_mode=lambda *m: heard.append(m))
    assert [m["status"] for m, _ in members] == ["ok", "ok"]
    assert len(heard) == 1 and heard[0][0] == "sequential"
    assert "torch.func cannot run Gate fused" in heard[0][1]
    # The sequential runs are the runs train_run gives alone.
    alone = train_run(task, seed=0, cycle=0, max_lr=0.1)
    assert members[1][0]["val_acc"] == alone.metrics.val_acc
    # The driver's check says so before the study starts; a model vmap can run is not flagged.
    from oracle.study.probe import probe_task

    assert "torch.func cannot run Gate fused" in probe_task(task)[1].cannot_fuse
    fake = DataConfig(name="torchvision:FakeData", args={"size": 40, "image_size": [3, 16, 16], "num_classes": 2})
    resnet = task.model_copy(update={"model": "torchvision:resnet18", "data": fake})
    assert probe_task(resnet)[1].cannot_fuse is None


# ----------------------------------------------------------------------------- end to end


def _copy_example(dest: Path) -> Path:
    """The example outside the repository: importable only through its study's `code:`."""
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest / "study.yaml"


@pytest.mark.integration
def test_the_example_end_to_end_from_a_folder_outside_the_repository(tmp_path):
    study = _copy_example(tmp_path / "mine")
    out = tmp_path / "out"
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    # cwd is neither the repository nor the example: `code:` alone makes ownnet importable.
    proc = subprocess.run([str(BIN / "silo-oracle"), "run", str(study), "--out", str(out)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    loaded = load_study(study)
    assert len(rows) == (len(loaded.grid) + 1) * len(loaded.seeds) * loaded.cycles
    assert {r["status"] for r in rows} == {"ok"}
    assert "own code: ownnet.models:tiny_resnet, architecture " in proc.stdout
    assert "(round)        cycle  1  trained sequential (auto: on a CPU" in proc.stdout
    oracle = [r for r in rows if r["arm"] == "oracle"]
    assert {r["round_mode"] for r in oracle} == {"sequential"}
    # It learns: the Oracle's best dense run is well above chance (4 classes).
    assert max(float(r["val_acc"]) for r in oracle if r["cycle"] == "0") > 0.6
    status = subprocess.run([str(BIN / "silo-oracle"), "status", str(out)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "oracle rounds sequential at cycle(s) 0, 1 (auto: on a CPU" in status.stdout


@pytest.mark.integration
def test_a_working_folder_as_code_end_to_end_outside_the_repository(tmp_path):
    # `code: [.]`: the folder holding the study file and the package ownnet/ (no __init__.py
    # of its own), as Ray's working_dir would take it. The run's default output folder
    # (results/ under it) and .git stay behind; Ray's copy on the node holds the package.
    study = _copy_example(tmp_path / "mine")
    mine = study.parent
    study.write_text(study.read_text().replace("code: [ownnet]", "code: [.]"))
    (mine / ".git").mkdir()
    (mine / ".git" / "objects").write_bytes(b"0" * 4096)
    ray_tmp = Path(tempfile.mkdtemp(prefix="silo-wd-", dir="/tmp"))  # short: Ray's socket paths
    try:
        env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
               "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_TMPDIR": str(ray_tmp)}
        proc = subprocess.run([str(BIN / "silo-oracle"), "run", "study.yaml"], cwd=mine, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        with (mine / "results" / "own_model" / "results.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert rows and {r["status"] for r in rows} == {"ok"}
        shipped = [p for p in ray_tmp.glob("**/runtime_resources/working_dir_files/*") if p.is_dir()]
        assert len(shipped) == 1, shipped
        names = {p.name for p in shipped[0].iterdir()}
        assert {"ownnet", "study.yaml"} <= names and not names & {".git", "results"}, names
        assert (shipped[0] / "ownnet" / "models.py").is_file()
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_working_folder_too_large_is_refused_before_anything_runs(tmp_path, smoke_mapping, capsys,
                                                                     isolated_imports, monkeypatch):
    import oracle.study.owncode as owncode

    monkeypatch.setattr(owncode, "WORKING_FOLDER_LIMIT", 2**20)
    path = _study(tmp_path, smoke_mapping, {"task.model": "userpkg.nets:good"}, code=(".",))
    (tmp_path / "userpkg").mkdir()
    (tmp_path / "userpkg" / "__init__.py").write_text("")
    (tmp_path / "userpkg" / "nets.py").write_text(BAD)
    for skipped in (".git", ".venv", "results", "userpkg/__pycache__"):  # never shipped: not counted
        (tmp_path / skipped).mkdir(exist_ok=True)
        (tmp_path / skipped / "blob").write_bytes(b"0" * 2**21)
    assert main(["validate", str(path)]) == 0
    capsys.readouterr()
    (tmp_path / "data.bin").write_bytes(b"0" * 3 * 2**20)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: code[0]: {tmp_path} holds 3.0 MiB to ship to every worker (without .git, .hg, .svn, "
                   ".venv, venv, .tox, caches and results/), more than the limit of 1.0 MiB: list its package "
                   "folders in `code:` instead, or move data and results out of it"], err
    assert not out.exists()
    # The study's own output folder inside it is not shipped either (run time: --out known).
    assert owncode.excludes(tmp_path, tmp_path / "mine" / "out")[-1] == "/mine/out/"
    (tmp_path / "mine" / "out").mkdir(parents=True)
    (tmp_path / "mine" / "out" / "blob").write_bytes(b"0" * 2**20)
    assert owncode.folder_size(tmp_path, owncode.excludes(tmp_path, tmp_path / "mine" / "out")) == (
        owncode.folder_size(tmp_path, owncode.excludes(tmp_path, None)) - 2**20)


def test_a_module_not_found_names_the_code_entries_searched(tmp_path, smoke_mapping, capsys, isolated_imports):
    # The package is one folder further down than `code:` says: the line lists what was searched.
    (tmp_path / "src" / "userpkg").mkdir(parents=True)
    (tmp_path / "src" / "userpkg" / "__init__.py").write_text("")
    (tmp_path / "src" / "userpkg" / "nets.py").write_text(BAD)
    path = _study(tmp_path, smoke_mapping, {"task.model": "userpkg.nets:good"}, code=(".",))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: task.model: 'userpkg.nets:good': no module named 'userpkg' (not installed; searched "
                   f"the study's `code:` entries: {tmp_path} (plain folder); a package folder is listed itself, "
                   "e.g. `code: [mynet]`, the folder holding it as `code: [.]`)"], err
    path = _study(tmp_path, smoke_mapping, {"task.model": "userpkg.nets:good"}, code=("src",))
    assert main(["validate", str(path)]) == 0  # the folder holding the package: a working folder


@pytest.mark.integration
def test_torchvision_model_on_torchvision_fakedata_through_smoke_settings(tmp_path, smoke_mapping, capsys):
    import ray

    data = copy.deepcopy(smoke_mapping)
    data.update(name="tv", seeds=[0], arms={"oracle": {"grid": [0.01, 0.05]}})
    data["pruning"]["cycles"] = 2
    data["execution"] = {"fuse": "on"}
    data["task"].update(model="torchvision:resnet18", batch_size=32,
                        data={"name": "torchvision:FakeData",
                              "args": {"size": 96, "image_size": [3, 32, 32], "num_classes": 3}})
    path = tmp_path / "tv.yaml"
    path.write_text(yaml.safe_dump(data))
    study = load_study(path)
    assert study.own_code.cannot_fuse is None  # resnet18 fuses
    ray.init(address="local", num_cpus=1, _node_ip_address="127.0.0.1", include_dashboard=False,
             logging_level="ERROR", log_to_driver=False)
    try:
        assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 0
    finally:
        ray.shutdown()
    printed = capsys.readouterr().out
    with (tmp_path / "out" / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    assert {r["round_mode"] for r in rows} == {"fused"}
    assert "(round)        cycle  0  trained fused (2 values; execution.fuse: on)" in printed
    assert float(rows[-1]["sparsity"]) == pytest.approx(0.2, abs=1e-3)


def test_fingerprint_sees_names_shapes_and_dtypes():
    a = torch.nn.Sequential(torch.nn.Linear(3, 4))
    assert architecture_fingerprint(a) == architecture_fingerprint(torch.nn.Sequential(torch.nn.Linear(3, 4)))
    assert architecture_fingerprint(a) != architecture_fingerprint(torch.nn.Sequential(torch.nn.Linear(3, 5)))
    assert architecture_fingerprint(a) != architecture_fingerprint(torch.nn.Sequential(torch.nn.Linear(3, 4)).double())
    named = torch.nn.Sequential()
    named.add_module("fc", torch.nn.Linear(3, 4))
    assert architecture_fingerprint(a) != architecture_fingerprint(named)


def test_pruning_include_and_exclude_take_prefixes_and_globs():
    from silo.pruning import prunable_parameters

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(1, 2, 3)
            self.layer1 = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3), torch.nn.BatchNorm2d(2))
            self.layer10 = torch.nn.Conv2d(2, 2, 1)
            self.head = torch.nn.Linear(2, 3)

    net = Net()
    every = ["stem.weight", "layer1.0.weight", "layer10.weight", "head.weight"]
    assert list(prunable_parameters(net)) == every
    assert list(prunable_parameters(net, exclude=("layer1",))) == ["stem.weight", "layer10.weight", "head.weight"]
    assert list(prunable_parameters(net, exclude=("layer1*",))) == ["stem.weight", "head.weight"]
    assert list(prunable_parameters(net, include=("layer*",), exclude=("layer10",))) == ["layer1.0.weight"]
    assert list(prunable_parameters(net, include=("head.weight", "stem"))) == ["stem.weight", "head.weight"]
    assert list(prunable_parameters(net, include=("layer1.*",))) == ["layer1.0.weight"]  # glob on module names
    task = TaskConfig(model="mnist1d_cnn", pruning={"include": ["fc"]})
    assert task.identity() == {"pruning": {"include": ["fc"]}}


def test_image_folder_reads_root_train_and_root_test_pngs(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    pixels = {}
    for split, per_class in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(per_class):
                img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(img).save(tmp_path / split / cls / f"{i}.png")
                pixels[(split, cls, i)] = img
    data = load_data(DataConfig(name="torchvision:ImageFolder", root=str(tmp_path), val_fraction=0.34), seed=0)
    assert (data.num_classes, data.input_shape, data.num_train, len(data.test_y)) == (2, (3, 8, 8), 4, 4)
    # ImageFolder's order: classes sorted, files sorted; labels 0 (cat) and 1 (dog).
    assert data.test_y.tolist() == [0, 0, 1, 1]
    assert torch.equal(data.test_x[2], torch.from_numpy(pixels[("test", "dog", 0)]).permute(2, 0, 1))
    with pytest.raises(FileNotFoundError, match="test"):
        shutil.rmtree(tmp_path / "test")
        load_data(DataConfig(name="torchvision:ImageFolder", root=str(tmp_path)), seed=0)
