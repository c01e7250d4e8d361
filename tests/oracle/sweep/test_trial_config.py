"""oracle.sweep.trial.TrialConfig: what the searcher hands Tune is what the trainable reads,
and a config written by a driver of another version is refused in one line naming the key."""

from __future__ import annotations

import pytest

from oracle.errors import OracleError
from oracle.store.identity import RunKey
from oracle.study import load_study
from oracle.sweep.searcher import StudySearcher
from oracle.sweep.trial import TrialConfig


def searcher_for(path, tmp_path) -> StudySearcher:
    return StudySearcher(load_study(path), store=str(tmp_path / "runs"), threads=1, on_round_closed=lambda *a: None)


def all_suggestions(searcher: StudySearcher) -> list[dict]:
    configs = []
    while isinstance(config := searcher.suggest(f"t{len(configs)}"), dict):
        configs.append(config)
    return configs


def test_every_config_the_searcher_hands_out_reads_back_as_written(write_study, tmp_path):
    path = write_study("typed", {"execution": {"fuse": "on", "fuse_seeds": "on", "max_members": 8}})
    study = load_study(path)
    configs = all_suggestions(searcher_for(path, tmp_path))
    trials = [TrialConfig.from_tune(c) for c in configs]
    assert [t.to_tune() for t in trials] == configs  # plain JSON both ways: nothing lost or added
    oracle = [t for t in trials if t.round and t.first_cycle == 0]
    chains = [t for t in trials if not t.round]
    # Round 0: the grid for every seed, seeds fused into trials of at most 8 members.
    assert sorted((s, v) for t in oracle for s, _ in t.shares for v in t.max_lrs) == sorted(
        (s, v) for s in study.seeds for v in study.grid)
    assert all(t.first_cycle == 0 and t.parent_run_ids == (None,) * len(t.seeds) for t in oracle)
    assert all(len(t.seeds) * len(t.max_lrs) <= 8 and t.seed == t.seeds[0] for t in oracle)
    # One chain a (non-Oracle arm, seed), from the dense start, its max_lr per cycle (lr_rewinding's
    # wait: they would train SILO's first cycles again, which SILO's trials are training).
    assert sorted((t.arm, t.seed) for t in chains) == sorted(
        (arm, s) for arm in study.arm_names() if arm not in ("oracle", "lr_rewinding") for s in study.seeds)
    silo = next(t for t in chains if t.arm == "silo")
    assert silo.max_lrs == tuple(study.schedule("silo").max_lr(q) for q in range(study.cycles))
    assert silo.shares == [(silo.seed, None)] and silo.fuse == "on"
    # The task read back names the same runs the driver planned (the run ids are the task's).
    task = study.task_for_arm("silo")
    assert RunKey(silo.task, seed=silo.seed, cycle=0, max_lr=silo.max_lrs[0], parent_run_id=None).run_id == \
        RunKey(task, seed=silo.seed, cycle=0, max_lr=silo.max_lrs[0], parent_run_id=None).run_id


def test_a_config_from_an_older_driver_is_one_line_naming_the_key(write_study, tmp_path):
    config = all_suggestions(searcher_for(write_study("older"), tmp_path))[0]
    # Before seeds could fuse, a round's config had only `seed` and `parent_run_id`.
    older = {k: v for k, v in config.items() if k not in ("seeds", "parent_run_ids")}
    with pytest.raises(OracleError) as caught:
        TrialConfig.from_tune(older)
    said = caught.value.message
    assert said.startswith("trial config: seeds: Field required") and "\n" not in said


@pytest.mark.parametrize(("change", "key"), [
    ({"store_url": "x"}, "store_url: Extra inputs are not permitted"),
    ({"first_cycle": "one"}, "first_cycle: Input should be a valid integer"),
    ({"execution": {"compile": "sometimes"}}, "execution.compile: Input should be"),
    ({"parent_run_ids": []}, "config: Value error, 1 seeds but 0 parent_run_ids"),
])
def test_a_config_that_does_not_fit_names_what(change, key, write_study, tmp_path):
    config = all_suggestions(searcher_for(write_study("misfit"), tmp_path))[0]
    with pytest.raises(OracleError) as caught:
        TrialConfig.from_tune({**config, **change})
    assert caught.value.message.startswith(f"trial config: {key}"), caught.value.message


def test_the_config_is_frozen(write_study, tmp_path):
    trial = TrialConfig.from_tune(all_suggestions(searcher_for(write_study("frozen"), tmp_path))[0])
    with pytest.raises(ValueError):
        trial.seed = 7  # type: ignore[misc]  # what the test checks: assignment is refused
