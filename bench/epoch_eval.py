"""What the learning curve's per-epoch val evaluation costs (silo.curves), side by side.

    python bench/epoch_eval.py [studies/quickstart.yaml] [--repeats 3]

Trains the study's dense run (cycle 0) and one fused Oracle round of its grid (cycle 1, as
`silo-oracle run` trains it on a CPU for the MNIST-1D models), each with task.eval_every 1
(a val point every epoch), auto (the default: as often as about 3 % of training allows) and 0
(only the final evaluation), alternating, and prints each mode's median wall time and its
cost against 0. Goal: under 3 % of a run's wall time. It also checks that all give the same
run (metrics and weights), which is the curve's promise.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from oracle.study import load_study
from silo.data import DataCache
from silo.round import train_round
from silo.train import train_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", nargs="?", default="studies/quickstart.yaml")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)  # as a trial gets it (resources.cpu: 1)
    study = load_study(args.study)
    base = study.task.model_copy(update={"device": "cpu"})
    modes = (1, "auto", 0)
    tasks = {k: base.model_copy(update={"eval_every": k}) for k in modes}
    cache = DataCache()
    grid = list(study.grid)
    train_run(tasks[0], seed=0, cycle=0, max_lr=grid[2], cache=cache)  # warm: data, oneDNN
    times = {(what, k): [] for what in ("run", "round") for k in modes}
    results = {}
    for _ in range(args.repeats):
        for k in modes:
            t = time.perf_counter()
            dense = train_run(tasks[k], seed=0, cycle=0, max_lr=grid[2], cache=cache)
            times[("run", k)].append(time.perf_counter() - t)
            t = time.perf_counter()
            members = train_round(tasks[k], seed=0, cycle=1, max_lrs=grid, parent=dense.state, cache=cache,
                                  mode="fused")
            times[("round", k)].append(time.perf_counter() - t)
            results[k] = (dense, members)
    flat = {k: [results[k][0], *results[k][1]] for k in modes}
    same = all(_same(a, b) for k in (1, "auto") for a, b in zip(flat[k], flat[0]))
    auto = results["auto"][0].metrics.curve
    print(f"study {study.name}: {base.epochs:g} epochs per cycle, grid of {len(grid)}, {args.repeats} repeats, "
          f"1 thread; auto evaluates epochs {[p['epoch'] for p in auto if p['val_acc'] is not None]}; "
          f"the same runs with and without the curve: {same}")
    for what in ("run", "round"):
        off = statistics.median(times[(what, 0)])
        label = "one dense run" if what == "run" else f"a fused round of {len(grid)}"
        costs = ", ".join(f"eval_every {k}: {100 * (statistics.median(times[(what, k)]) / off - 1):+.1f} %"
                          for k in (1, "auto"))
        print(f"{label:>22}: eval_every 0 {off:7.2f} s; the curve costs {costs} of the wall time")


def _same(a, b) -> bool:
    drop = {"wall_s": 0, "images_per_s": 0, "curve": 0}
    return (a.metrics.as_dict() | drop == b.metrics.as_dict() | drop
            and all(torch.equal(v, b.state.weights[k]) for k, v in a.state.weights.items()))


if __name__ == "__main__":
    main()
