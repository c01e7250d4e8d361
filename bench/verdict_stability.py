"""Does the verdict reproduce? Run a study with disjoint seed sets and compare its verdicts.

    python bench/verdict_stability.py studies/quickstart.yaml --sets 3

Set i runs the study with its seeds shifted by 100 * i (so [0, 1, 2] becomes [100, 101, 102]
for set 1), each into its own folder under a temporary directory, on one local Ray. Then,
per cycle and per pair of sets, a contradiction is one set saying `inside` and the other
`outside`. Printed for the current rule (oracle.judge.selection) and, on the very same runs, for
the first rule (tolerance 0.005 or 2 standard errors of the winner alone, judged on the bare
grid interval [min V, max V]), since the Oracle's winners, and so its trajectory, are the
same under both (the winner is the best mean under every rule). `--out DIR` keeps the sets'
folders: a second invocation with the same DIR trains nothing and judges again:

    contradictions: k of n cycle comparisons    decided: d of m cycle verdicts

and, per set, how many cycles have a judged interval at most half the grid's log range.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from seed_sets import contradictions  # noqa: E402


def shifted(study, i: int):
    return study.model_copy(update={"seeds": tuple(s + 100 * i for s in study.seeds)})


# The first rule's own settings (every study then gave tolerance 0.005, noise_k 2).
OLD_TOLERANCE, OLD_NOISE_K = 0.005, 2.0


def old_rule(table, silo_max_lr: float, tolerance: float = OLD_TOLERANCE, noise_k: float = OLD_NOISE_K) -> str | None:
    """The first rule: tol from the winner's own standard error, inside [min V, max V]."""
    import numpy as np

    if not table.values or math.isnan(silo_max_lr):
        return None
    means = table.means
    w = int(np.flatnonzero(means >= means.max() - 1e-9)[0])
    n = table.seed_count
    se = float(table.acc[w].std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    tol = max(tolerance, noise_k * se)
    members = [v for v, m in zip(table.values, means) if m >= means[w] - tol]
    return "inside" if min(members) <= silo_max_lr <= max(members) else "outside"


def verdicts_of(out: Path, study) -> dict[str, dict[int, str | None]]:
    """{rule: {cycle: verdict}} and the judged intervals, from a finished study's files."""
    import pandas as pd

    from oracle.judge.lineage import oracle_rounds
    from oracle.report.build import analysis_of
    from oracle.store.record import study_attrs
    from oracle.store.rows import rows_frame

    rows = rows_frame(pd.read_csv(out / "results.csv").to_dict("records"))
    attrs = study_attrs(study)
    result = analysis_of(rows, attrs)
    rounds = oracle_rounds(rows, attrs, list(study.seeds), list(range(study.cycles)),
                           tolerance=study.analysis.tolerance)
    new, old, narrow = {}, {}, {}
    span = math.log(max(study.grid) / min(study.grid))
    for v in result.verdicts.to_dict("records"):
        q = int(v["cycle"])
        new[q] = v["verdict"] if isinstance(v["verdict"], str) else None
        r = rounds.get(q)
        old[q] = old_rule(r.table, v["silo_max_lr"]) if r else None
        narrow[q] = (not math.isnan(v["judged_low"])
                     and math.log(v["judged_high"] / v["judged_low"]) <= span / 2 + 1e-12)
    return {"new": new, "old": old, "narrow": narrow, "silo": dict(zip(result.verdicts["cycle"],
                                                                        result.verdicts["silo_max_lr"]))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study")
    parser.add_argument("--sets", type=int, default=3)
    parser.add_argument("--out", help="keep the sets' folders here (default: a temporary folder, removed)")
    args = parser.parse_args(argv)

    from oracle.sweep.driver import keep_ray_on_loopback

    keep_ray_on_loopback(None)
    import io

    import ray

    from oracle.study import load_study
    from oracle.sweep.driver import run_sweep

    study = load_study(args.study)
    with tempfile.TemporaryDirectory(prefix="verdict-stability-") as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                 logging_level="ERROR", log_to_driver=False)
        results = []
        try:
            for i in range(args.sets):
                s = shifted(study, i)
                t0 = time.perf_counter()
                swept = run_sweep(s, out=root / f"set-{i}", stream=io.StringIO())
                print(f"set {i}: seeds {list(s.seeds)}: {swept.outcome}, {time.perf_counter() - t0:.0f} s", flush=True)
                if not swept.done:
                    return 1
                results.append(verdicts_of(root / f"set-{i}", s))
        finally:
            ray.shutdown()

    cycles = sorted(results[0]["new"])
    print(f"\n{'cycle':>5} {'SILO max_lr':>11}  " + "  ".join(f"{'set ' + str(i):>19}" for i in range(args.sets)))
    for q in cycles:
        cells = [f"{str(r['new'][q]):>9} / {str(r['old'][q]):>7}" for r in results]
        print(f"{q:>5} {results[0]['silo'][q]:>11.4g}  " + "  ".join(cells))
    print("(each cell: current rule / first rule)\n")
    for rule, name in (("new", "current rule"), ("old", "first rule")):
        c, n, d, m = contradictions([r[rule] for r in results])
        print(f"{name:>13}: contradictions: {c} of {n} cycle comparisons    decided: {d} of {m} cycle verdicts")
    narrow = [sum(r["narrow"].values()) for r in results]
    print(f"judged interval at most half the grid's log range: {', '.join(map(str, narrow))} "
          f"of {len(cycles)} cycles (set 0..{args.sets - 1})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
