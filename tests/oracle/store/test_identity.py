"""Run identity (docs/design.md): a hash of the task fields that differ from their defaults, seed,
cycle, max_lr and parent run id. It must survive the code growing (a new setting with a
default renames no run) and must change with everything that changes a result."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from oracle.store.identity import RunKey, canonical_json, run_id_of
from silo.config import (
    DataConfig,
    OptimizerConfig,
    PruningConfig,
    ShapeConfig,
    SwdConfig,
    TaskConfig,
)

SMOKE = TaskConfig(data=DataConfig(name="mnist1d", num_samples=1200), epochs=1,
                   shape=ShapeConfig(warmup="0.2ep", milestones=("0.8ep",)))
RESNET20 = TaskConfig(data=DataConfig(name="cifar10"), model="resnet20", epochs=50,
                      shape=ShapeConfig(warmup=20000, milestones=("25ep", "32ep")),
                      pruning=PruningConfig(rate=0.2))
RUN = dict(seed=1, cycle=0, max_lr=0.03, parent_run_id=None)


def test_pinned_run_ids():
    # These ids are the store's names: a change to any of them renames every stored run and
    # retrains whole studies. Change them only as a deliberate, documented break.
    assert RunKey(TaskConfig(), seed=0, cycle=0, max_lr=0.1, parent_run_id=None).run_id == "dfb4231b21cbbb52"
    assert RunKey(SMOKE, **RUN).run_id == "3fefadca91bb4876"
    assert RunKey(SMOKE, seed=1, cycle=1, max_lr=0.1, parent_run_id="3fefadca91bb4876").run_id == "a52c060863e38476"
    assert RunKey(RESNET20, seed=0, cycle=0, max_lr=0.03, parent_run_id=None).run_id == "2bcd761259f5640a"


def test_the_next_cycle_continues_the_run_and_a_round_member_differs_only_in_max_lr():
    first = RunKey(SMOKE, **RUN)
    child = first.next_cycle(0.1)
    assert (child.seed, child.cycle, child.max_lr, child.parent_run_id) == (1, 1, 0.1, "3fefadca91bb4876")
    assert child.run_id == "a52c060863e38476"
    member = child.at(0.3)
    assert member == RunKey(SMOKE, seed=1, cycle=1, max_lr=0.3, parent_run_id="3fefadca91bb4876")
    assert member.run_id not in {child.run_id, first.run_id}


def test_only_fields_off_their_defaults_are_hashed():
    payload = RunKey(SMOKE, **RUN).payload()
    assert payload["task"] == {"data": {"num_samples": 1200}, "epochs": 1.0,
                               "shape": {"warmup": "0.2ep", "milestones": ["0.8ep"]}}
    assert RunKey(TaskConfig(), **RUN).payload()["task"] == {}
    assert run_id_of(payload) == RunKey(SMOKE, **RUN).run_id
    assert canonical_json(payload) == canonical_json(dict(reversed(payload.items())))
    # A value given explicitly but equal to the default is the same run.
    explicit = SMOKE.model_copy(update={"optimizer": OptimizerConfig(name="sgd", momentum=0.9)})
    assert RunKey(explicit, **RUN).run_id == RunKey(SMOKE, **RUN).run_id


def test_nested_config_defaults_are_their_classes_defaults():
    # The identity rule compares nested configs with their class's defaults; a TaskConfig
    # field defaulting to, say, OptimizerConfig(momentum=0.5) would break it silently.
    for name, info in TaskConfig.model_fields.items():
        default = info.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            assert default == type(default)(), name


# A later version of the code with new settings, each with a default (the upgrade case).
class GrownData(DataConfig):
    cache_policy: str = "lru"


class GrownShape(ShapeConfig):
    jitter: float = 0.0


class GrownTask(TaskConfig):
    data: GrownData = GrownData()
    shape: GrownShape = GrownShape()
    grad_clip: float | None = None


def _grown(task: TaskConfig, **new) -> GrownTask:
    fields = {k: getattr(task, k) for k in TaskConfig.model_fields}
    fields["data"] = GrownData(**task.data.model_dump())
    fields["shape"] = GrownShape(**task.shape.model_dump())
    return GrownTask(**fields, **new)


@pytest.mark.parametrize("task", [TaskConfig(), SMOKE, RESNET20], ids=["default", "smoke", "resnet20"])
def test_a_new_setting_with_a_default_renames_no_run(task):
    grown = _grown(task)
    assert RunKey(grown, **RUN).run_id == RunKey(task, **RUN).run_id
    # Set off its default, the new setting is part of the run.
    assert RunKey(_grown(task, grad_clip=1.0), **RUN).run_id != RunKey(task, **RUN).run_id
    off = grown.model_copy(update={"data": grown.data.model_copy(update={"cache_policy": "fifo"})})
    assert RunKey(off, **RUN).run_id != RunKey(task, **RUN).run_id


@pytest.mark.parametrize("change", [
    {"epochs": 2}, {"batch_size": 32}, {"model_args": {"width": 8}}, {"label_smoothing": 0.1},
    {"data": DataConfig(name="mnist1d", num_samples=1300)},
    {"optimizer": OptimizerConfig(momentum=0.8)},
    {"shape": ShapeConfig(warmup="0.2ep", milestones=("0.9ep",))},
    {"pruning": PruningConfig(rate=0.3)}, {"pruning": PruningConfig(rewind="init")},
], ids=lambda c: next(iter(c)))
def test_a_result_changing_value_changes_the_run_id(change):
    assert RunKey(SMOKE.model_copy(update=change), **RUN).run_id != RunKey(SMOKE, **RUN).run_id


def test_seed_cycle_max_lr_and_parent_each_change_the_run_id():
    base = dict(seed=1, cycle=2, max_lr=0.03, parent_run_id="aaaaaaaaaaaaaaaa")
    ids = {RunKey(SMOKE, **base).run_id}
    for change in ({"seed": 2}, {"cycle": 3}, {"max_lr": 0.030000000000000002},
                   {"parent_run_id": "bbbbbbbbbbbbbbbb"}, {"parent_run_id": None}):
        ids.add(RunKey(SMOKE, **{**base, **change}).run_id)
    assert len(ids) == 6  # a child of another parent is another run, never reused


def test_paths_device_and_eval_batch_size_are_not_identity():
    moved = SMOKE.model_copy(update={"data": SMOKE.data.model_copy(update={"root": "/elsewhere"}),
                                     "device": "cuda:1", "eval_batch_size": 7})
    assert RunKey(moved, **RUN).payload() == RunKey(SMOKE, **RUN).payload()
    alone = TaskConfig(data=DataConfig(root="/data"), device="cpu")
    assert RunKey(alone, **RUN).payload()["task"] == {}


def test_swd_enters_the_run_key_only_through_the_settings_that_change_results():
    swd = SMOKE.model_copy(update={"pruning": PruningConfig(strategy="swd")})
    key = RunKey(swd, seed=1, cycle=1, max_lr=0.1, parent_run_id="3fefadca91bb4876")
    assert key.payload()["task"]["pruning"] == {"strategy": "swd"}  # its settings at their defaults
    assert key.run_id == "dcff07793d0e5772"  # pinned like the ids above
    assert key.run_id != RunKey(SMOKE, seed=1, cycle=1, max_lr=0.1, parent_run_id="3fefadca91bb4876").run_id
    ids = {key.run_id}
    for change in ({"a_min": 1.0}, {"a_max": 1e4}, {"criterion": "layerwise_magnitude"}):
        tuned = swd.model_copy(update={"pruning": PruningConfig(strategy="swd", swd=SwdConfig(**change))})
        ids.add(RunKey(tuned, seed=1, cycle=1, max_lr=0.1, parent_run_id="3fefadca91bb4876").run_id)
    assert len(ids) == 4
    # Under another strategy SWD's settings change nothing, so they are not part of the run.
    ignored = SMOKE.model_copy(update={"pruning": PruningConfig(swd=SwdConfig(a_max=1e4))})
    assert RunKey(ignored, **RUN).run_id == RunKey(SMOKE, **RUN).run_id
