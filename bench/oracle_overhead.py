"""What Ray Tune costs the Oracle.

Runs a study's Oracle arm through Ray Tune (the real `run_study`, local Ray on 127.0.0.1)
with and without reuse_actors, then the very same trainings back to back in this process
(same winners, same parents), and prints

    ratio = wall(Tune) / (wall(sequential) / workers)       goal <= 1.15

plus the per-trial overhead (wall(Tune) - wall(sequential) / workers) / trials.
Ray's start-up is timed separately and left out of the ratio.

    .venv/bin/python bench/oracle_overhead.py --study studies/smoke.yaml
    .venv/bin/python bench/oracle_overhead.py --study studies/quickstart.yaml
"""

from __future__ import annotations

import argparse
import csv
import io
import tempfile
import time
from pathlib import Path

import torch
import yaml

from oracle.study import parse_study
from oracle.sweep import keep_ray_on_loopback, run_study
from silo.data import DataCache
from silo.train import train_run


def oracle_only(path: Path):
    data = yaml.safe_load(path.read_text())
    data["arms"] = {"oracle": data["arms"]["oracle"]}
    return parse_study(data, str(path))


def tune_wall(study, out: Path, reuse: bool) -> tuple[float, list[dict]]:
    t0 = time.perf_counter()
    code = run_study(study, out=out, finish=False, reuse_actors=reuse, stream=io.StringIO())
    wall = time.perf_counter() - t0
    assert code == 0, f"run_study exited {code}"
    with (out / "results.csv").open() as f:
        return wall, list(csv.DictReader(f))


def sequential_wall(study, rows: list[dict]) -> float:
    """The same runs, in the same order of cycles, in this process with one thread."""
    torch.set_num_threads(1)  # as each Tune trial (1 CPU) runs
    task = study.task_for_arm("oracle")
    cache = DataCache()
    train_run(task, seed=study.seeds[0], cycle=0, max_lr=0.01, cache=cache)  # one-off warm-up
    states: dict[str, object] = {}
    t0 = time.perf_counter()
    for q in range(study.cycles):
        for r in (r for r in rows if int(r["cycle"]) == q):
            parent = states[r["parent_run_id"]] if r["parent_run_id"] else None
            result = train_run(task, seed=int(r["seed"]), cycle=q, max_lr=float(r["max_lr"]),
                               parent=parent, cache=cache)
            if r["chosen"] == "True":
                states[r["run_id"]] = result.state
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=Path("studies/smoke.yaml"))
    parser.add_argument("--workers", type=int, default=2, help="Ray CPUs (1 CPU per trial)")
    args = parser.parse_args()
    study = oracle_only(args.study)
    trials = len(study.grid) * len(study.seeds) * study.cycles

    keep_ray_on_loopback(None)
    import ray  # after the loopback switch, which Ray reads on import

    t0 = time.perf_counter()
    ray.init(num_cpus=args.workers, _node_ip_address="127.0.0.1", include_dashboard=False,
             logging_level="ERROR", log_to_driver=False)
    startup = time.perf_counter() - t0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            walls = {}
            for reuse in (True, False):
                walls[reuse], rows = tune_wall(study, Path(tmp) / f"reuse-{reuse}", reuse)
    finally:
        ray.shutdown()
    seq = sequential_wall(study, rows)
    ideal = seq / args.workers

    print(f"study {study.name} (oracle only): {trials} trials, {args.workers} workers, "
          f"{torch.__version__} on CPU")
    print(f"ray start-up (not in the ratio):        {startup:7.1f} s")
    print(f"sequential, one process:                {seq:7.1f} s  -> / {args.workers} workers = {ideal:.1f} s")
    for reuse in (True, False):
        wall = walls[reuse]
        print(f"ray tune, reuse_actors={str(reuse):<5}:          {wall:7.1f} s  "
              f"ratio {wall / ideal:5.2f}x  overhead per trial {(wall - ideal) / trials:5.2f} s")
    print(f"reuse_actors saves {(walls[False] - walls[True]) / trials:.2f} s per trial")


if __name__ == "__main__":
    main()
