"""Is P(inside) calibrated? K disjoint seed sets judged against their pooled union.

    flock /work/heavy.lock .venv/bin/python bench/verdict_calibration.py studies/quickstart.yaml \
        --sets 10 --seeds-per-set 3 [--tolerance 0.005 0.01] [--out DIR]

Set k (k = 1..K) runs the study's Oracle on seeds 1000k .. 1000k+S-1; the pooled study runs it
on all K*S seeds. All of them on one local Ray, into one run store (DIR/runs), so a run two
of them share (every cycle-0 run; later ones while the pooled winners match a set's) is
trained once, and a second invocation with the same DIR trains nothing. Only the Oracle
arm is trained (bench/seed_sets.py): SILO's verdict judges its planned max_lr.

The pooled study stands for the truth: a set-cycle is truly inside when SILO's max_lr lies
in the pooled study's judged interval (its point estimate; the pooled P(inside) and
verdict are printed beside it, so a cycle the pooled study cannot decide either shows).
Printed per delta (`--tolerance`, analysis only: default the study's):

- per cycle: the pooled verdict and P, the pooled seed noise sigma of one run's val accuracy
  (in points), and the sets' verdicts;
- the calibration table: bins of the sets' P(inside), with count, mean P and the fraction
  truly inside;
- the Brier score of the sets' P against the truth (and that of always saying the base rate);
- decided: the share of set verdicts that are inside or outside, and how many of those agree
  with the truth; contradictions: pairs of sets, per cycle, one inside and the other outside.
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

from seed_sets import contradictions, judged_attrs, oracle_only, sweep  # noqa: E402

BINS = (0.0, 0.1, 0.2, 0.5, 0.8, 0.9, 1.0)  # the verdict's thresholds (0.2, 0.8) are edges


def set_seeds(k: int, per_set: int) -> list[int]:
    """Set k's seeds (k >= 1): 1000k .. 1000k+S-1, disjoint from every other set's and from
    the small seeds studies use."""
    return [1000 * k + j for j in range(per_set)]


def verdicts(rows, attrs, tolerance: float) -> dict[int, dict]:
    """{cycle: {p, verdict, inside, low, high, silo}} of one study's rows judged with `tolerance`."""
    from oracle.report.build import analysis_of

    a = analysis_of(rows, {**attrs, "tolerance": float(tolerance)})
    out = {}
    for v in a.verdicts.to_dict("records"):
        if not isinstance(v["verdict"], str):
            continue
        out[int(v["cycle"])] = {"p": float(v["p_inside"]), "verdict": v["verdict"],
                                "inside": bool(v["silo_in_interval"]), "low": float(v["judged_low"]),
                                "high": float(v["judged_high"]), "silo": float(v["silo_max_lr"]),
                                # one run's seed noise: sd (of a difference of two means) * sqrt(S/2)
                                "sigma": float(v["sd"]) * math.sqrt(len(attrs["seeds"]) / 2)}
    return out


def calibration(sets: list[dict[int, dict]], pooled: dict[int, dict]) -> dict:
    """The figures of one delta: bins, Brier, decided and agreement, contradictions."""
    pairs = [(s[q]["p"], s[q]["verdict"], pooled[q]["inside"]) for s in sets for q in s if q in pooled]
    n = len(pairs)
    bins = []
    for lo, hi in zip(BINS, BINS[1:]):
        hit = [(p, t) for p, _, t in pairs if lo <= p < hi or (hi == BINS[-1] and p == hi)]
        bins.append((lo, hi, len(hit), _mean([p for p, _ in hit]), _mean([float(t) for _, t in hit])))
    base = _mean([float(t) for _, _, t in pairs])
    decided = [(v, t) for _, v, t in pairs if v in ("inside", "outside")]
    found, comparisons, _, _ = contradictions([{q: s[q]["verdict"] for q in s} for s in sets])
    return {
        "n": n, "bins": bins,
        "brier": _mean([(p - t) ** 2 for p, _, t in pairs]),
        "brier_base": _mean([(base - t) ** 2 for _, _, t in pairs]),
        "decided": len(decided), "agree": sum((v == "inside") == t for v, t in decided),
        "contradictions": found, "comparisons": comparisons,
    }


def _mean(xs) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def show(tolerance: float, sets: list[dict[int, dict]], pooled: dict[int, dict], k: int, s: int) -> None:
    c = calibration(sets, pooled)
    print(f"\n== delta (analysis.tolerance) {tolerance:g}: {k} sets of {s} seeds against their pooled {k * s}")
    print(f"{'cycle':>5} {'SILO':>7} {'pooled judged interval':>24} {'pooled':>18} {'sigma':>6}  sets: "
          "inside/outside/uncertain, mean P")
    for q in sorted(pooled):
        x = pooled[q]
        mine = [st[q] for st in sets if q in st]
        counts = "/".join(str(sum(m["verdict"] == v for m in mine)) for v in ("inside", "outside", "uncertain"))
        interval = f"[{x['low']:.4g}, {x['high']:.4g}]"
        said = f"{x['verdict']} {x['p']:.2f}"
        print(f"{q:>5} {x['silo']:>7.4g} {interval:>24} {said:>18} {100 * x['sigma']:>6.2f}  {counts:>9}, "
              f"{_mean([m['p'] for m in mine]):.3f}")
    print(f"\n{'P(inside)':>11} {'count':>6} {'mean P':>7} {'inside (pooled)':>16}")
    for lo, hi, count, mean_p, truly in c["bins"]:
        bracket = "]" if hi == BINS[-1] else ")"
        print(f"[{lo:.1f}, {hi:.1f}{bracket:<1} {count:>6} {_fmt(mean_p):>7} {_fmt(truly):>16}")
    n, d = c["n"], c["decided"]
    print(f"Brier score: {c['brier']:.3f} over {n} set-cycles (always the base rate: {c['brier_base']:.3f})")
    print(f"decided: {d} of {n} ({d / n:.0%}); agree with the pooled study: {c['agree']} of {d} "
          f"({(c['agree'] / d) if d else math.nan:.0%})")
    print(f"contradictions between sets: {c['contradictions']} of {c['comparisons']} cycle comparisons")


def _fmt(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:.3f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study")
    parser.add_argument("--sets", type=int, default=10, help="K disjoint seed sets (default 10)")
    parser.add_argument("--seeds-per-set", type=int, default=3, help="S seeds per set (default 3)")
    parser.add_argument("--tolerance", type=float, nargs="+", default=None,
                        help="delta(s) to judge with (analysis only; default the study's analysis.tolerance)")
    parser.add_argument("--out", help="keep the run store here (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    if args.sets < 2 or args.seeds_per_set < 1:
        print("error: --sets must be at least 2 and --seeds-per-set at least 1", file=sys.stderr)
        return 2

    from oracle.sweep.driver import keep_ray_on_loopback

    keep_ray_on_loopback(None)
    import ray

    from oracle.errors import StudyError
    from oracle.study import load_study

    try:
        base = load_study(args.study)
        studies = [oracle_only(base, seeds=set_seeds(k, args.seeds_per_set), name=f"{base.name}-set{k}")
                   for k in range(1, args.sets + 1)]
        union = oracle_only(base, seeds=[x for st in studies for x in st.seeds], name=f"{base.name}-pooled")
    except StudyError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="verdict-calibration-") as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                 logging_level="ERROR", log_to_driver=False)
        rows = []
        try:
            for study in [union, *studies]:  # the union first: every set's cycle 0 is then reused
                got = sweep(study, root)
                if got is None:
                    return 1
                rows.append(got)
        finally:
            ray.shutdown()
    wall = time.perf_counter() - t0
    trained = sum(int((~r["reused"] & (r["status"] != "failed")).sum()) for r in rows)
    distinct = len({rid for r in rows for rid in r["run_id"].dropna()})
    print(f"study {base.name}: {args.sets} sets x {args.seeds_per_set} seeds + their pooled "
          f"{args.sets * args.seeds_per_set}; {distinct} distinct runs, {trained} trained now, "
          f"{wall:.0f} s wall")
    pooled_rows, set_rows = rows[0], rows[1:]
    for tolerance in args.tolerance or [base.analysis.tolerance]:
        pooled = verdicts(pooled_rows, judged_attrs(union, base), tolerance)
        sets = [verdicts(r, judged_attrs(st, base), tolerance) for st, r in zip(studies, set_rows)]
        show(tolerance, sets, pooled, args.sets, args.seeds_per_set)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
