"""The run store on real trained runs: sound runs are reused, damaged ones never are (moved
aside to .corrupt/ with one warning line, then trained again), and saving is idempotent under
concurrent saves of the same run."""

from __future__ import annotations

import json
import os
import pickle
import threading
from pathlib import Path

import pytest
import torch

import silo.atomic
from oracle.store.identity import RunKey, run_id_of
from oracle.store.runs import COMPLETE, CORRUPT, IDENTITY, CorruptRunError, RunStore
from oracle.sweep.execute import obtain_run
from silo.config import DataConfig, ShapeConfig, TaskConfig
from silo.data import DataCache
from silo.train import train_run

TASK = TaskConfig(data=DataConfig(name="mnist1d", num_samples=600), epochs=0.5, batch_size=64,
                  shape=ShapeConfig(name="constant"), device="cpu")
FIRST = RunKey(TASK, seed=0, cycle=0, max_lr=0.05, parent_run_id=None)


@pytest.fixture(scope="module")
def cache():
    return DataCache()


@pytest.fixture(scope="module")
def trained(cache):
    """A real run of TASK: (run id, result, record, identity)."""
    result = train_run(TASK, seed=0, cycle=0, max_lr=0.05, cache=cache)
    identity = FIRST.payload()
    rid = run_id_of(identity)
    record = dict(result.metrics.as_dict(), run_id=rid, parent_run_id=None)
    return rid, result, record, identity


class Warnings(list):
    def __call__(self, line: str) -> None:
        self.append(line)


def test_save_find_and_load_round_trip(tmp_path, trained):
    rid, result, record, identity = trained
    store = RunStore(tmp_path)
    assert store.find(rid) is None
    assert store.save(rid, result, record, identity) is True
    assert store.find(rid) == record
    assert store.problem(rid) is None
    # The folder keeps the JSON its id was hashed from.
    stored = json.loads((store.path(rid) / IDENTITY).read_text())
    assert stored == identity and run_id_of(stored) == rid
    state = store.load_state(rid)
    assert state.diverged is False
    for k, v in result.state.weights.items():
        assert torch.equal(state.weights[k], v), k
    assert list((tmp_path / ".tmp").iterdir()) == []


def test_save_fsyncs_every_file_and_the_folder_before_the_rename(tmp_path, trained, monkeypatch):
    rid, result, record, identity = trained
    events = []
    fsync_file, rename = silo.atomic.fsync_file, os.rename

    def spy_fsync(path):
        events.append(("fsync", os.path.basename(path)))
        fsync_file(path)

    def spy_rename(src, dst):
        events.append(("rename", os.path.basename(src)))
        rename(src, dst)

    monkeypatch.setattr(silo.atomic, "fsync_file", spy_fsync)
    monkeypatch.setattr(os, "rename", spy_rename)
    store = RunStore(tmp_path)
    assert store.save(rid, result, record, identity) is True
    names = sorted(p.name for p in store.path(rid).iterdir())
    *synced, (last, tmp_name) = events
    assert last == "rename" and tmp_name.startswith(rid)
    assert sorted(name for _, name in synced[:-1]) == names  # each file once, before the folder
    assert synced[-1] == ("fsync", tmp_name)


def test_load_state_keeps_the_diverged_flag(tmp_path, cache):
    result = train_run(TASK, seed=0, cycle=0, max_lr=1e6, cache=cache)
    assert result.metrics.status == "diverged"
    store = RunStore(tmp_path)
    store.save("d" * 16, result, dict(result.metrics.as_dict(), run_id="d" * 16))
    assert store.load_state("d" * 16).diverged is True
    # ... so its child is diverged without training, also when the parent comes from the store.
    child = train_run(TASK.model_copy(update={"epochs": 0.5}), seed=0, cycle=1, max_lr=0.05,
                      parent=store.load_state("d" * 16), cache=cache)
    assert child.metrics.status == "diverged" and child.metrics.steps == 0


def test_the_rewind_point_is_stored_and_loaded_with_the_run(tmp_path, cache):
    # Rewinding to an early step (early:K): every later cycle restarts from the dense run's
    # weights at step K, kept with it in the store; a store that dropped or garbled them
    # would silently train a different experiment.
    task = TASK.model_copy(update={"pruning": TASK.pruning.model_copy(update={"rewind": "early:3"})})
    store = RunStore(tmp_path)
    key = RunKey(task, seed=0, cycle=0, max_lr=0.05, parent_run_id=None)
    obtain_run(store, key, cache=cache)
    assert (store.path(key.run_id) / "rewind.pt").is_file()
    loaded = store.load_state(key.run_id)
    fresh = train_run(task, seed=0, cycle=0, max_lr=0.05, cache=cache)
    assert fresh.state.rewind_weights is not None and loaded.rewind_weights is not None
    assert loaded.rewind_weights.keys() == fresh.state.rewind_weights.keys()
    for name, tensor in fresh.state.rewind_weights.items():
        assert torch.equal(loaded.rewind_weights[name], tensor), name
    # Without rewinding there is nothing to store, and nothing comes back.
    plain = FIRST
    obtain_run(store, plain, cache=cache)
    assert not (store.path(plain.run_id) / "rewind.pt").exists()
    assert store.load_state(plain.run_id).rewind_weights is None


class _Planted:
    """A pickle that runs code when loaded: what a tampered weights file could carry."""

    def __reduce__(self):
        return (Path.touch, (Path(os.environ["PLANTED_MARK"]),))


def test_weights_are_loaded_as_tensors_only_never_as_code(tmp_path, cache, monkeypatch):
    store = RunStore(tmp_path / "runs")
    metrics, _ = obtain_run(store, FIRST, cache=cache)
    folder = store.path(metrics["run_id"])
    mark = tmp_path / "code-ran"
    monkeypatch.setenv("PLANTED_MARK", str(mark))
    torch.save({"w": _Planted()}, folder / "weights.pt")
    _remanifest(folder)  # sound by its checksums: only the loader stands in the way
    with pytest.raises(pickle.UnpicklingError):
        store.load_state(metrics["run_id"])
    assert not mark.exists()


def _truncate_weights(folder):
    data = (folder / "weights.pt").read_bytes()
    (folder / "weights.pt").write_bytes(data[: len(data) // 2])


def _garble_metrics(folder):
    (folder / "metrics.json").write_text("{not json")


def _drop_marker(folder):
    (folder / COMPLETE).unlink()


def _garble_marker(folder):
    (folder / COMPLETE).write_bytes(b"\x00\xff")


def _flip_a_weight_byte(folder):
    data = bytearray((folder / "weights.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "weights.pt").write_bytes(bytes(data))


def _remanifest(folder, *, drop: str | None = None):
    """Rewrite the completion marker to match the folder as it is now (minus `drop`): damage
    that the checksums cannot see, such as a sound folder of another run copied in place."""
    import hashlib

    manifest = {p.name: {"bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
                for p in sorted(folder.iterdir()) if p.name not in (COMPLETE, drop)}
    (folder / COMPLETE).write_text(json.dumps(manifest))


def _metrics_of_another_run(folder):
    metrics = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(json.dumps(dict(metrics, run_id="f" * 16)))
    _remanifest(folder)


def _metrics_without_status(folder):
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.pop("status")
    (folder / "metrics.json").write_text(json.dumps(metrics))
    _remanifest(folder)


def _metrics_not_json_yet_listed(folder):
    _garble_metrics(folder)
    _remanifest(folder)


def _marker_without_metrics(folder):
    _remanifest(folder, drop="metrics.json")


def _marker_not_a_mapping(folder):
    (folder / COMPLETE).write_text(json.dumps(["metrics.json"]))


def _listed_file_missing(folder):
    (folder / "mask.pt").unlink()


DAMAGE = {
    "truncated weights": (_truncate_weights, "weights.pt has"),
    "garbage metrics.json": (_garble_metrics, "metrics.json"),
    "metrics.json of another run": (_metrics_of_another_run, "metrics.json names run 'ffffffffffffffff'"),
    "metrics.json without a status": (_metrics_without_status, "metrics.json has no run status"),
    "metrics.json not JSON, listed": (_metrics_not_json_yet_listed, "metrics.json is not valid JSON"),
    "marker without metrics.json": (_marker_without_metrics, "unreadable completion marker"),
    "marker not a mapping": (_marker_not_a_mapping, "unreadable completion marker"),
    "a listed file missing": (_listed_file_missing, "mask.pt is missing"),
    "no completion marker": (_drop_marker, "no completion marker"),
    "garbage completion marker": (_garble_marker, "unreadable completion marker"),
    "one flipped byte": (_flip_a_weight_byte, "weights.pt does not match its checksum"),
}


@pytest.mark.parametrize("damage,reason", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_run_is_moved_aside_and_trained_again(tmp_path, cache, damage, reason):
    warnings = Warnings()
    store = RunStore(tmp_path, warn=warnings)
    first, reused = obtain_run(store, FIRST, cache=cache)
    assert not reused and warnings == []
    rid = first["run_id"]
    damage(store.path(rid))

    again, reused = obtain_run(store, FIRST, cache=cache)
    assert not reused  # never a wrong reuse: it was trained again
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: run {rid} in the store is corrupt (")
    assert reason in warnings[0] and "\n" not in warnings[0]
    aside = list((tmp_path / CORRUPT).iterdir())
    assert len(aside) == 1 and aside[0].name.startswith(rid) and str(aside[0]) in warnings[0]
    assert store.problem(rid) is None
    assert {k: again[k] for k in ("val_acc", "test_acc", "train_loss")} == {
        k: first[k] for k in ("val_acc", "test_acc", "train_loss")}

    third, reused = obtain_run(store, FIRST, cache=cache)
    assert reused and third == again and len(warnings) == 1


def test_a_damaged_parent_is_never_trained_from(tmp_path, cache):
    warnings = Warnings()
    store = RunStore(tmp_path, warn=warnings)
    parent, _ = obtain_run(store, FIRST, cache=cache)
    _truncate_weights(store.path(parent["run_id"]))
    with pytest.raises(CorruptRunError, match=f"run {parent['run_id']} .* is corrupt \\(weights.pt has"):
        obtain_run(store, FIRST.next_cycle(0.05), cache=cache)
    assert len(warnings) == 1 and not store.path(parent["run_id"]).exists()
    child = FIRST.next_cycle(0.05).run_id
    assert not store.path(child).exists()


def test_concurrent_saves_of_one_run_keep_exactly_one_copy(tmp_path, trained):
    rid, result, record, identity = trained
    for attempt in range(12):
        store = RunStore(tmp_path / str(attempt))
        barrier, outcomes, errors = threading.Barrier(4), [], []

        def save(store=store, barrier=barrier, outcomes=outcomes, errors=errors):  # this attempt's
            barrier.wait()
            try:
                outcomes.append(store.save(rid, result, record, identity))
            except Exception as exc:  # the test reports any error
                errors.append(exc)

        threads = [threading.Thread(target=save) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and sorted(outcomes) == [False, False, False, True], attempt
        assert store.problem(rid) is None
        assert list((store.root / ".tmp").iterdir()) == []
        assert not (store.root / CORRUPT).exists()


def test_a_run_placed_between_the_check_and_the_rename_is_kept(tmp_path, trained):
    rid, result, record, identity = trained

    class OtherTrialInTheWindow(RunStore):
        """Another trial places the same run right after this one found none (the race
        window of two arms saving their shared run at once), deterministically."""
        raced = False

        def problem(self, run_id):
            why = super().problem(run_id)
            if not self.raced:
                self.raced = True
                assert RunStore(self.root).save(run_id, result, dict(record, wall_s=-1.0), identity)
            return why

    store = OtherTrialInTheWindow(tmp_path)
    assert store.save(rid, result, record, identity) is False  # no error: theirs is kept
    assert store.raced and store.load_metrics(rid)["wall_s"] == -1.0
    assert list((tmp_path / ".tmp").iterdir()) == [] and not (tmp_path / CORRUPT).exists()


def test_a_duplicate_save_never_touches_the_stored_run_while_it_is_read(tmp_path, trained):
    rid, result, record, identity = trained
    store = RunStore(tmp_path)
    assert store.save(rid, result, record, identity)
    inode = store.path(rid).stat().st_ino
    stop, read_errors, reads = threading.Event(), [], [0]

    def read():
        while not stop.is_set():
            try:
                store.load_state(rid)
                reads[0] += 1
            except Exception as exc:
                read_errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert [store.save(rid, result, dict(record, wall_s=-1.0), identity) for _ in range(5)] == [False] * 5
    finally:
        stop.set()
        reader.join()
    assert read_errors == [] and reads[0] > 0
    assert store.path(rid).stat().st_ino == inode  # the same folder, never replaced
    assert store.load_metrics(rid) == record
