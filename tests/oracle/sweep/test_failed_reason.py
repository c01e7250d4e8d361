"""A trial that fails for good leaves failed rows that say why, in one line (oracle.sweep.ledger).

The worker's bf16 refusal needs a GPU without bf16, which this machine lacks; the refusal is
raised here by silo.accel.check_precision itself, told the device's capability (a T4's), in
a real Ray task, and travels as Ray and Tune carry a trial's error (RayTaskError, pickled
into the trial's folder) to the ledger's rows."""

from __future__ import annotations

import io

import pytest
import torch

from oracle.store.identity import RunKey
from oracle.study import load_study
from oracle.sweep.ledger import Ledger

T4 = "task.precision bf16: Tesla T4 (compute capability 7.5) has no bfloat16 support (needs 8.0 or newer)"


def _refuse_on_a_t4():
    """The worker's check on a pre-Ampere GPU: check_precision with the capability a T4
    reports (what is patched is the device's answer, not the check or its message)."""
    from silo.accel import check_precision

    cuda = torch.cuda
    cuda.is_bf16_supported = lambda including_emulation=True: False
    cuda.get_device_capability = lambda device=None: (7, 5)
    cuda.get_device_name = lambda device=None: "Tesla T4"
    check_precision("bf16", torch.device("cuda"))


def _config(study, arm: str, max_lrs) -> dict:
    """A one-seed trial's config as the searcher writes it (oracle.sweep.trial.TrialConfig)."""
    from oracle.sweep.trial import TrialConfig
    from silo.accel import ExecutionConfig

    return TrialConfig(arm=arm, seed=0, first_cycle=0, max_lrs=tuple(max_lrs), parent_run_id=None,
                       wait_for_winners=None, task=study.task_for_arm(arm), store="runs", threads=1,
                       round=arm == "oracle", fuse=study.execution.fuse, execution=ExecutionConfig(),
                       seeds=(0,), parent_run_ids=(None,)).to_tune()


def _failed_trial(tmp_path, config: dict):
    """A Tune trial whose worker raised the refusal, its error kept as Tune keeps it."""
    import sys

    import ray
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not on the worker's path
    with pytest.raises(ray.exceptions.RayTaskError) as raised:
        ray.get(ray.remote(_refuse_on_a_t4).remote())
    trial = Trial("RunTrainable", config=config, stub=True,
                  storage=StorageContext(storage_path=str(tmp_path / "ray"), experiment_dir_name="exp"))
    trial.init_local_path()
    trial.handle_error(raised.value)
    return trial


def test_failed_rows_carry_the_workers_refusal_in_one_line(local_ray, write_study, tmp_path):
    study = load_study(write_study("refused", {"seeds": [0], "task": {"precision": "bf16"}}))
    stream = io.StringIO()
    ledger = Ledger(study, stream=stream)
    grid = [float(v) for v in study.grid]
    oracle = _failed_trial(tmp_path, _config(study, "oracle", grid))
    ledger.on_trial_error(0, [], oracle)
    chain = _failed_trial(tmp_path, _config(study, "silo", [0.03, 0.04]))
    ledger.on_trial_error(0, [], chain)
    rows = ledger.rows
    assert len(rows) == len(grid) + 2 and {r["status"] for r in rows} == {"failed"}
    line = f"PrecisionUnsupported: {T4}; use fp16 or fp32"
    assert {r["error"] for r in rows} == {line}
    # The rows are the runs that failed, with the ids they would have had.
    first = RunKey(study.task_for_arm("oracle"), seed=0, cycle=0, max_lr=grid[0], parent_run_id=None)
    assert {r["run_id"] for r in rows if r["arm"] == "oracle"} >= {first.run_id}
    # Said once, not once per trial or row; and results.csv carries it.
    assert stream.getvalue().count(line) == 1
    ledger.write_csv(tmp_path / "results.csv")
    assert (tmp_path / "results.csv").read_text().count(line) == len(rows)
