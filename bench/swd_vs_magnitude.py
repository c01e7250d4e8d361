"""Selective Weight Decay against global magnitude pruning on one study's task, same budget.

    python bench/swd_vs_magnitude.py studies/swd_quickstart.yaml --seeds 0 1 2 --max-lr 0.03 0.1

For each max_lr and seed, the study's task is trained as a chain of its cycles twice, in one
process, side by side: once with the study's SWD settings, once with the same task pruned by
global magnitude at the start of each cycle (`pruning.strategy: global_magnitude`, nothing
else changed: same epochs per cycle, shape, rewinding, rate, seeds, batches). Printed per
cycle: the sparsity (equal in both, by construction), the mean over seeds of the val and
test accuracy right after the cut (SWD: at the end of the cycle, no fine-tuning; magnitude:
after the cycle's retraining of the pruned network), the difference, and the seconds per run
of each, whose ratio is the cost of the penalty (a sort of the prunable weights per step).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    import torch

    from oracle.study import load_study
    from silo.chain import run_chain
    from silo.data import load_data
    from silo.pruning import swd

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-lr", type=float, nargs="+", default=[0.03, 0.1])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    study = load_study(args.study)
    if not swd.is_swd(study.task.pruning):
        print(f"{args.study}: pruning.strategy is {study.task.pruning.strategy!r}, not swd", file=sys.stderr)
        return 2
    tasks = {
        "swd": study.task.model_copy(update={"device": "cpu"}),
        "magnitude": study.task.model_copy(update={
            "device": "cpu",
            "pruning": study.task.pruning.model_copy(update={"strategy": "global_magnitude"})}),
    }
    print(f"{study.name}: {study.cycles} cycles of {study.task.epochs:g} epochs, rate {study.task.pruning.rate}, "
          f"rewind {study.task.pruning.rewind}, swd {study.task.pruning.swd.model_dump()}, seeds {args.seeds}, "
          f"{args.threads} thread(s)")
    for max_lr in args.max_lr:
        acc: dict[str, list[list[tuple[float, float, float]]]] = {k: [] for k in tasks}
        seconds: dict[str, float] = {k: 0.0 for k in tasks}
        for seed in args.seeds:
            data = load_data(study.task.data, seed=seed, device=torch.device("cpu"))
            for name, task in tasks.items():  # side by side, seed by seed
                t0 = time.perf_counter()
                chain = run_chain(task, seed=seed, cycles=study.cycles, peak=lambda q, v=max_lr: v, data=data)
                seconds[name] += time.perf_counter() - t0
                acc[name].append([(r.metrics.sparsity, r.metrics.val_acc, r.metrics.test_acc) for r in chain])
                bad = [r.metrics.cycle for r in chain if r.metrics.status != "ok"]
                if bad:
                    print(f"  max_lr {max_lr} seed {seed} {name}: diverged at cycle(s) {bad}")
        print(f"\nmax_lr {max_lr}: mean over {len(args.seeds)} seeds, accuracy right after the cut (%)")
        print(f"{'cycle':>5} {'sparsity':>8} | {'SWD val':>7} {'test':>6} | {'mag val':>7} {'test':>6} | "
              f"{'d val':>6} {'d test':>6}")
        for q in range(study.cycles):
            rows = {k: [chains[q] for chains in acc[k]] for k in tasks}
            sparsity = {k: {round(r[0], 12) for r in rows[k]} for k in tasks}
            assert sparsity["swd"] == sparsity["magnitude"], (q, sparsity)
            mean = {k: (100 * statistics.fmean(r[1] for r in rows[k]), 100 * statistics.fmean(r[2] for r in rows[k]))
                    for k in tasks}
            print(f"{q:>5} {rows['swd'][0][0]:>8.3f} | {mean['swd'][0]:>7.2f} {mean['swd'][1]:>6.2f} | "
                  f"{mean['magnitude'][0]:>7.2f} {mean['magnitude'][1]:>6.2f} | "
                  f"{mean['swd'][0] - mean['magnitude'][0]:>+6.2f} {mean['swd'][1] - mean['magnitude'][1]:>+6.2f}")
        runs = len(args.seeds) * study.cycles
        print(f"seconds per run: SWD {seconds['swd'] / runs:.2f}, magnitude {seconds['magnitude'] / runs:.2f}, "
              f"ratio {seconds['swd'] / seconds['magnitude']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
