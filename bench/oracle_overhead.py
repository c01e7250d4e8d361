"""What Ray Tune costs the Oracle.

Runs a study's Oracle arm through Ray Tune (the real `run_sweep`, local Ray on 127.0.0.1)
with and without reuse_actors, then the very same trainings (same winners, same parents)
back to back in one fresh Python process, and prints

    ratio = wall(Tune) / (wall(sequential) / workers)       goal <= 1.15

plus the overhead per run (wall(Tune) - wall(sequential) / workers) / runs. The Oracle's
trials are its rounds, one per (cycle, seed), executed as the study's `execution` says
(fused on a CPU for the MNIST-1D models), so this also measures what fusion saves. Both sides
start cold: each Tune worker, like the sequential process, pays for importing torch, the
first optimizer step (torch._dynamo) and generating the data once. Ray's own start-up is
timed separately and left out of the ratio.

    .venv/bin/python bench/oracle_overhead.py --study studies/smoke.yaml
    .venv/bin/python bench/oracle_overhead.py --study studies/quickstart.yaml
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from oracle.study import parse_study
from oracle.sweep.driver import keep_ray_on_loopback, run_sweep
from silo.data import DataCache
from silo.train import train_run


def oracle_only(path: Path):
    data = yaml.safe_load(path.read_text())
    data["arms"] = {"oracle": data["arms"]["oracle"]}
    return parse_study(data, str(path))


def tune_wall(study, out: Path, reuse: bool) -> tuple[float, float]:
    """Wall seconds of the sweep, and CPU seconds the driver (Tune's loop) spent meanwhile."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    swept = run_sweep(study, out=out, finish=False, reuse_actors=reuse, stream=io.StringIO())
    assert swept.done, f"run_sweep ended {swept.outcome}"
    return time.perf_counter() - t0, time.process_time() - cpu0


def sequential(study_path: Path, results: Path, seeds: list[int] | None) -> None:
    """The same runs, in the same order of cycles, in this process with one thread."""
    torch.set_num_threads(1)  # as each Tune trial (1 CPU) runs
    study = oracle_only(study_path)
    with results.open() as f:
        rows = [r for r in csv.DictReader(f) if seeds is None or int(r["seed"]) in seeds]
    task = study.task_for_arm("oracle")
    cache = DataCache()
    states: dict[str, object] = {}
    for q in range(study.cycles):
        for r in (r for r in rows if int(r["cycle"]) == q):
            parent = states[r["parent_run_id"]] if r["parent_run_id"] else None
            result = train_run(task, seed=int(r["seed"]), cycle=q, max_lr=float(r["max_lr"]),
                               parent=parent, cache=cache)
            if r["chosen"] == "True":
                states[r["run_id"]] = result.state


def sequential_wall(study_path: Path, results: Path, split: list[list[int]] | None = None) -> float:
    """Wall time of `sequential` in fresh interpreters, start-up included.

    With `split`, one process per group of seeds, all at once: the plain-processes
    reference for what the machine itself gives in parallel, without Ray.
    """
    cmd = [sys.executable, __file__, "--study", str(study_path), "--sequential", str(results)]
    t0 = time.perf_counter()
    groups = split or [None]
    procs = [subprocess.Popen(cmd + (["--seeds", *map(str, g)] if g else [])) for g in groups]
    assert all(p.wait() == 0 for p in procs)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=Path("studies/smoke.yaml"))
    parser.add_argument("--workers", type=int, default=2, help="Ray CPUs (1 CPU per trial)")
    parser.add_argument("--no-compare-reuse", dest="compare_reuse", action="store_false",
                        help="skip the run without reuse_actors (slow: a new worker per trial)")
    parser.add_argument("--sequential", type=Path, help=argparse.SUPPRESS)  # the baseline's own process
    parser.add_argument("--seeds", type=int, nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sequential:
        sequential(args.study, args.sequential, args.seeds)
        return
    study = oracle_only(args.study)
    runs = len(study.grid) * len(study.seeds) * study.cycles  # trials: one per (cycle, seed)

    keep_ray_on_loopback(None)
    import ray  # after the loopback switch, which Ray reads on import

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=args.workers, _node_ip_address="127.0.0.1", include_dashboard=False,
             logging_level="ERROR", log_to_driver=False)
    startup = time.perf_counter() - t0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            walls = {}
            for reuse in (True, False) if args.compare_reuse else (True,):
                walls[reuse] = tune_wall(study, Path(tmp) / f"reuse-{reuse}", reuse)
            ray.shutdown()
            results = Path(tmp) / "reuse-True" / "results.csv"
            seq = sequential_wall(args.study, results)
            seeds = list(study.seeds)
            split = [seeds[i :: args.workers] for i in range(args.workers)] if len(seeds) >= args.workers else None
            plain = sequential_wall(args.study, results, split) if split else None
    finally:
        ray.shutdown()
    ideal = seq / args.workers

    print(f"study {study.name} (oracle only): {runs} runs in {study.cycles * len(study.seeds)} round trials, "
          f"execution.fuse {study.execution.fuse}, {args.workers} workers, "
          f"{torch.__version__} on CPU")
    print(f"ray start-up (not in the ratio):        {startup:7.1f} s")
    print(f"sequential, one fresh process:          {seq:7.1f} s  -> / {args.workers} workers = {ideal:.1f} s")
    if plain is not None:
        print(f"{args.workers} plain processes, seeds split:        {plain:7.1f} s  "
              f"(what {args.workers} cores give without Ray: {seq / plain:.2f}x speed-up)")
    for reuse, (wall, cpu) in walls.items():
        print(f"ray tune, reuse_actors={str(reuse):<5}:          {wall:7.1f} s  "
              f"ratio {wall / ideal:5.2f}x  overhead per run {(wall - ideal) / runs:5.2f} s  "
              f"(driver CPU {cpu:.1f} s)")
    if False in walls:
        print(f"reuse_actors saves {(walls[False][0] - walls[True][0]) / runs:.2f} s per run")


if __name__ == "__main__":
    main()
