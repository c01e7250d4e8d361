"""A plausible, fully structured fake study for the record/report tests: 3 cycles, a grid of
4 max_lr values, 2 seeds, arms oracle + silo + lr_rewinding, one diverged Oracle run.

The Oracle's val accuracy is a parabola in log10(max_lr) whose peak moves up with the cycle,
so its winner is 0.03, 0.1, 0.1 at cycles 0, 1, 2 and its interval [0.03, 0.03],
[0.03, 0.1], [0.1, 0.1]; SILO's max_lr (~0.03 throughout with these settings) is inside at
cycles 0 and 1 (on a boundary) and below the interval at cycle 2.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import yaml

from oracle.study import Study, parse_study
from tests._repo import REPO

ROOT = REPO
GRID = [0.01, 0.03, 0.1, 0.3]
SEEDS = [0, 1]
CYCLES = 3
NAME = "fake"


def fake_study(*, drop: str | None = None, silo_offset: float = 0.03) -> Study:
    """The fake study; `drop` an arm, or change SILO's offset, as a rerun that changed it."""
    data = copy.deepcopy(yaml.safe_load((ROOT / "studies" / "smoke.yaml").read_text()))
    data["name"] = NAME
    data["pruning"]["cycles"] = CYCLES
    data["arms"] = {
        "oracle": {"grid": GRID},
        "silo": {"offset": silo_offset, "alpha": 0.1, "beta": 5, "delay": 1},
        "baselines": [{"name": "lr_rewinding", "max_lr": 0.03}],
    }
    if drop == "lr_rewinding":
        del data["arms"]["baselines"]
    elif drop is not None:
        del data["arms"][drop]
    data["seeds"] = SEEDS
    return parse_study(data)


def accuracy(max_lr: float, cycle: int, seed: int, arm_offset: float = 0.0) -> float:
    peak = -1.6 + 0.35 * cycle
    return 0.92 - 0.08 * (math.log10(max_lr) - peak) ** 2 - 0.01 * cycle + 0.003 * (seed - 0.5) + arm_offset


def _row(arm, seed, cycle, max_lr, run_id, parent, *, offset=0.0, status="ok", chosen=False):
    val = accuracy(max_lr, cycle, seed, offset)
    diverged = status == "diverged"
    return {
        "arm": arm, "seed": seed, "cycle": cycle, "max_lr": max_lr,
        "sparsity": round(1 - 0.8 ** cycle, 6),
        "val_acc": 0.1 if diverged else val, "test_acc": 0.1 if diverged else val - 0.004,
        "train_loss": float("nan") if diverged else 0.3 + 0.1 * cycle,
        "status": status, "run_id": run_id, "parent_run_id": parent,
        "wall_s": 10.0 + cycle + (2.0 if arm == "oracle" else 0.0), "steps": 100,
        "images_per_s": 1000.0, "reused": False, "chosen": chosen,
        # 3 epochs, the val split skipped at epoch 2 (task.eval_every 2 would skip epoch 1): the
        # last point is the run's own val accuracy
        "curve": [] if diverged else [
            {"epoch": e, "step": 33 * e, "train_loss": 0.3 + 0.1 * cycle + 0.2 * (3 - e),
             "val_acc": None if e == 2 else val - 0.02 * (3 - e)} for e in (1, 2, 3)],
    }


def root_id(study: Study, arm: str, seed: int, max_lr: float) -> str:
    """A cycle-0 run's real id: the analysis checks it against the study's task (a run of
    another task has no parent to tell it by). Later cycles keep readable fake ids."""
    from oracle.store.identity import RunKey

    return RunKey(study.task_for_arm(arm), seed=seed, cycle=0, max_lr=max_lr, parent_run_id=None).run_id


def fake_rows(study: Study | None = None) -> list[dict]:
    study = study or fake_study()
    rows = []
    winners = {0: 0.03, 1: 0.1, 2: 0.1}
    parents = {s: None for s in SEEDS}
    for q in range(CYCLES):
        for v in GRID:
            for s in SEEDS:
                status = "diverged" if (q == 2 and v == 0.3 and s == 1) else "ok"
                rid = root_id(study, "oracle", s, v) if q == 0 else f"oracle-{s}-{q}-{v}"
                rows.append(_row("oracle", s, q, v, rid, parents[s], status=status, chosen=v == winners[q]))
        parents = {s: (root_id(study, "oracle", s, winners[q]) if q == 0 else f"oracle-{s}-{q}-{winners[q]}")
                   for s in SEEDS}
    for arm, offset in (("silo", -0.002), ("lr_rewinding", -0.01)):
        if arm not in study.arm_names():
            continue
        schedule = study.schedule(arm)
        parent = {s: None for s in SEEDS}
        for q in range(CYCLES):
            v = schedule.max_lr(q)
            for s in SEEDS:
                # cycle 0 from no parent: the Oracle's run where the arm trains the Oracle's task
                rid = root_id(study, arm, s, v) if q == 0 else f"{arm}-{s}-{q}"
                r = _row(arm, s, q, v, rid, parent[s], offset=0.0 if q == 0 else offset)
                rows.append(r)
                parent[s] = rid
    return rows


_TEMPLATE: dict[str, Path] = {}


def recorded_template(tmp_path_factory) -> Path:
    """An SQLite file with the fake study recorded once (per test process; copy it, never write it)."""
    if "db" not in _TEMPLATE:
        from oracle.store.record import record_study

        path = tmp_path_factory.mktemp("template") / "optuna.db"
        study = fake_study()
        record_study(study, fake_rows(study), f"sqlite:///{path}")
        _TEMPLATE["db"] = path
    return _TEMPLATE["db"]


def copy_template(tmp_path_factory, dest: Path) -> str:
    """Copy the recorded template to `dest` (a file path); return its storage URL."""
    import shutil

    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(recorded_template(tmp_path_factory), dest)
    return f"sqlite:///{dest}"


def reported_folder(tmp_path_factory, out: Path | None = None) -> Path:
    """A results folder (`out`, or a new one named after the study) whose record is its own
    optuna.db, a copy of the template, with the report the end of `run` builds (finish_study)."""
    from oracle.report.build import finish_study

    out = out or tmp_path_factory.mktemp("results") / NAME
    copy_template(tmp_path_factory, out / "optuna.db")
    assert finish_study(out, fake_study(), fake_rows()) == 0
    return out
