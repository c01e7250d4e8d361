"""One Oracle round of one seed through the store: members complete there are reused, the
others trained together (fused or not) and each saved as the run it is."""

from __future__ import annotations

import pytest
import torch

from oracle.store.identity import RunKey
from oracle.store.runs import RunStore
from oracle.sweep.execute import obtain_round, obtain_run, round_mode
from silo.config import DataConfig, ShapeConfig, TaskConfig
from silo.data import DataCache

pytestmark = pytest.mark.usefixtures("one_thread")

TASK = TaskConfig(data=DataConfig(name="mnist1d", num_samples=600), epochs=0.5, batch_size=64,
                  shape=ShapeConfig(name="constant"))
VALUES = [0.01, 0.05, 0.2]


def _round(seed: int) -> list[RunKey]:
    """One seed's round of cycle 0 over VALUES."""
    return [RunKey(TASK, seed=seed, cycle=0, max_lr=v, parent_run_id=None) for v in VALUES]


@pytest.fixture(scope="module")
def cache():
    return DataCache()


def test_a_round_with_members_in_the_store_trains_only_the_others(tmp_path, cache):
    store = RunStore(tmp_path / "runs")
    alone, reused = obtain_run(store, RunKey(TASK, seed=0, cycle=0, max_lr=0.05, parent_run_id=None), cache=cache)
    assert not reused
    stamp = (tmp_path / "runs" / alone["run_id"] / "COMPLETE").stat().st_mtime_ns
    members = obtain_round(store, _round(seed=0), fuse="on", cache=cache)
    assert [r for _, r in members] == [False, True, False]
    assert [m["run_id"] for m, _ in members] == [
        RunKey(TASK, seed=0, cycle=0, max_lr=v, parent_run_id=None).run_id for v in VALUES]
    assert members[1][0] == alone  # the stored run, not retrained
    assert (tmp_path / "runs" / alone["run_id"] / "COMPLETE").stat().st_mtime_ns == stamp
    # Each member is a run folder of its own, reused like any run by a later round.
    again = obtain_round(store, _round(seed=0), cache=cache)
    assert [r for _, r in again] == [True, True, True]
    assert [m for m, _ in again] == [m for m, _ in members]


def test_fused_and_sequential_rounds_store_the_same_runs(tmp_path, cache):
    fused = obtain_round(RunStore(tmp_path / "a"), _round(seed=1), fuse="on", cache=cache)
    one_by_one = obtain_round(RunStore(tmp_path / "b"), _round(seed=1), fuse="off", cache=cache)
    assert [m["run_id"] for m, _ in fused] == [m["run_id"] for m, _ in one_by_one]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(p.name for p in (tmp_path / "b").iterdir())
    for (f, _), (s, _) in zip(fused, one_by_one):
        assert f["status"] == s["status"] == "ok"
        # float32: the same computation up to rounding order, a few answers at most
        assert abs(f["val_acc"] - s["val_acc"]) <= 0.02


def test_a_round_is_members_of_one_seed_cycle_and_parent(tmp_path):
    mixed = _round(seed=0)[:1] + _round(seed=1)[1:]
    with pytest.raises(ValueError, match="differ only in max_lr"):
        obtain_round(RunStore(tmp_path), mixed)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # nothing trained nor stored


def test_auto_fuses_on_cuda_and_on_cpu_only_where_fusion_was_measured_faster():
    resnet = TASK.model_copy(update={"model": "resnet20"})
    assert round_mode("auto", TASK, "cpu") == "fused"  # the MNIST-1D CNN
    assert round_mode("auto", resnet, "cpu") == "sequential"
    assert round_mode("auto", resnet, torch.device("cuda")) == "fused"
    assert round_mode("on", resnet, "cpu") == "fused" and round_mode("off", TASK, "cpu") == "sequential"
