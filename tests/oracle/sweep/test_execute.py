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


def test_a_round_is_members_of_one_cycle_and_per_seed_one_parent(tmp_path):
    other_parent = [_round(seed=0)[0]] + [k.__class__(k.task, seed=0, cycle=0, max_lr=k.max_lr, parent_run_id="x")
                                          for k in _round(seed=0)[1:]]
    other_cycle = _round(seed=0)[:1] + [k.__class__(k.task, seed=1, cycle=1, max_lr=k.max_lr, parent_run_id="y")
                                        for k in _round(seed=1)[1:]]
    for mixed in (other_parent, other_cycle):
        with pytest.raises(ValueError, match="differ only in max_lr"):
            obtain_round(RunStore(tmp_path), mixed)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # nothing trained nor stored


def test_a_seeds_fused_round_stores_each_seeds_runs_as_its_lone_rounds_do(tmp_path, cache):
    """Two seeds' rounds as one stack (float32: the same runs up to rounding)."""
    both = _round(seed=2) + _round(seed=3)
    modes = []
    fused = obtain_round(RunStore(tmp_path / "a"), both, fuse="on", cache=cache,
                         on_mode=lambda mode, why: modes.append((mode, why)))
    assert modes == [("fused", "3 values x 2 seeds; execution.fuse: on")]
    alone = [m for seed in (2, 3) for m in obtain_round(RunStore(tmp_path / "b"), _round(seed), fuse="off",
                                                        cache=cache)]
    assert [m["run_id"] for m, _ in fused] == [k.run_id for k in both] == [m["run_id"] for m, _ in alone]
    assert [m["seed"] for m, _ in fused] == [2, 2, 2, 3, 3, 3]
    for (f, _), (a, _) in zip(fused, alone):
        assert f["status"] == a["status"] == "ok" and abs(f["val_acc"] - a["val_acc"]) <= 0.02
    # Reused from the store member by member, whatever trained them.
    assert [r for _, r in obtain_round(RunStore(tmp_path / "a"), _round(seed=3), cache=cache)] == [True] * 3


def test_a_round_out_of_memory_trains_in_halves_and_says_so(tmp_path, cache, monkeypatch, capfd):
    """A stack of more than 2 members runs out of memory (what a GPU would do); the round
    trains in halves, every run stored once, nothing lost."""
    import silo.round

    real = silo.round._train_fused

    def small_device(task, shares, **kwargs):
        if sum(len(s.max_lrs) for s in shares) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(task, shares, **kwargs)

    monkeypatch.setattr(silo.round, "_train_fused", small_device)
    modes = []
    both = _round(seed=4) + _round(seed=5)
    got = obtain_round(RunStore(tmp_path), both, fuse="on", cache=cache,
                       on_mode=lambda mode, why: modes.append((mode, why)))
    assert [m["run_id"] for m, _ in got] == [k.run_id for k in both]
    assert all(m["status"] == "ok" and not reused for m, reused in got)
    assert sorted(p.name for p in tmp_path.iterdir() if (p / "COMPLETE").exists()) == sorted(k.run_id for k in both)
    assert modes[0][0] == "fused" and modes[0][1].startswith("halved after running out of memory")
    assert "out of memory fusing 6 runs of cycle 0: training them in two halves of 3 and 3" in capfd.readouterr().err


def test_auto_fuses_on_cuda_and_on_cpu_only_where_fusion_was_measured_faster():
    resnet = TASK.model_copy(update={"model": "resnet20"})
    assert round_mode("auto", TASK, "cpu") == "fused"  # the MNIST-1D CNN
    assert round_mode("auto", resnet, "cpu") == "sequential"
    assert round_mode("auto", resnet, torch.device("cuda")) == "fused"
    assert round_mode("on", resnet, "cpu") == "fused" and round_mode("off", TASK, "cpu") == "sequential"
    # Seeds fuse where rounds fuse: auto on CUDA only, never when rounds train sequentially.
    from oracle.sweep.execute import seeds_fused

    assert seeds_fused("auto", "auto", resnet, torch.device("cuda"))
    assert not seeds_fused("auto", "auto", TASK, "cpu") and seeds_fused("auto", "on", TASK, "cpu")
    assert not seeds_fused("off", "on", TASK, "cpu") and not seeds_fused("auto", "on", resnet, "cpu")
    assert not seeds_fused("on", "off", resnet, torch.device("cuda"))


def test_validate_says_when_seeds_fuse(write_study):
    from oracle.study import load_study
    from oracle.sweep.execute import round_mode_line

    on = load_study(write_study("seeds-on", {"execution": {"fuse": "on", "fuse_seeds": "on", "max_members": 6}}))
    assert round_mode_line(on) == "rounds here: fused (execution.fuse: on; seeds fused, up to 6 runs a trial)"
    auto = load_study(write_study("seeds-auto", {"execution": {"fuse": "on"}}))
    assert round_mode_line(auto) == "rounds here: fused (execution.fuse: on)"  # auto: on CUDA only
