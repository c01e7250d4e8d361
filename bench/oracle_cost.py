"""The beam over the grid against the exhaustive Oracle, measured side by side in one run.

    flock /work/wt/heavy.lock .venv/bin/python bench/oracle_cost.py studies/quickstart.yaml [--beam 1]
        [--grid-count 12] [--cycles Q] [--prune-rate R] [--model NAME] [--seeds 3 4 5] [--out DIR]

Trains the study's Oracle exhaustively, then with `arms.oracle.search: {beam: W}`, both into
one run store (DIR/runs). Whenever each winner lies inside the beam, the beam's runs are the
exhaustive runs (same ids), so the beam sweep reuses them all and costs nothing extra to
measure; any run it does train is counted and printed. Then prints, from this one run:

- runs and run-seconds of each search (the Oracle's distinct runs on its own trajectory; a
  run's seconds are what it took when it was trained, as the report counts them), and the
  ratio beam / exhaustive;
- per cycle, whether the winner, the judged interval (both ends, and which are open) and
  SILO's verdict agree, with each verdict's P(inside).

Only the Oracle arm is trained: SILO's verdict judges SILO's planned max_lr per cycle
against the Oracle's interval (what the report judges), which needs no SILO run.
`--grid-count N` replaces the grid by N log-spaced values over the same range (the dense
grid of issue 20: 12); `--model NAME` trains another registered model (its default options)
on the study's task, e.g. `mnist1d_mlp` on the quickstart's. A second invocation with the
same DIR trains nothing.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path

import yaml
from seed_sets import judged_attrs, sweep


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study")
    p.add_argument("--beam", default="1", help="W: grid neighbours each side (default 1)")
    p.add_argument("--grid-count", default=None, help="N log-spaced grid values over the study's range")
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--cycles", default=None, help="pruning.cycles instead of the study's")
    p.add_argument("--prune-rate", default=None, help="pruning.rate instead of the study's")
    p.add_argument("--model", default=None, help="task.model instead of the study's (its default model_args)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    from oracle.errors import StudyError
    from oracle.study import load_study, parse_study

    try:
        base = load_study(args.study)
        exhaustive, beam = (parse_study(_variant(base, args, search), args.study)
                            for search in ("exhaustive", {"beam": _number(args.beam)}))
    except StudyError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        return 2
    out = Path(args.out or Path("results") / "oracle_cost" / exhaustive.name)
    rows = {}
    for study in (exhaustive, beam):
        rows[study.beam] = sweep(study, out, label="exhaustive" if study.beam is None else f"beam {study.beam}")
        if rows[study.beam] is None:
            return 1
    _compare(base, exhaustive, beam, rows[None], rows[beam.beam])
    return 0


def _number(text: str):
    """W as given: an int when it reads as one, else as YAML reads it (for the study to judge)."""
    try:
        return int(text)
    except ValueError:
        return yaml.safe_load(text)


def _variant(base, args, search) -> dict:
    """The study with only its Oracle arm, the search, and the grid or seeds asked for."""
    data = copy.deepcopy(base.to_mapping())
    oracle = dict(data["arms"]["oracle"], search=search)
    name = base.name
    if args.grid_count is not None:
        grid = base.grid
        oracle["grid"] = {"low": min(grid), "high": max(grid), "count": _number(args.grid_count)}
        name += f"-grid{args.grid_count}"
    if args.prune_rate is not None:
        data["pruning"]["rate"] = _number(args.prune_rate)
        name += f"-rate{args.prune_rate}"
    if args.model is not None:
        data["task"]["model"] = args.model
        data["task"].pop("model_args", None)  # the study's are its own model's
        name += f"-{args.model}"
    if args.cycles is not None:
        data["pruning"]["cycles"] = _number(args.cycles)
        name += f"-cycles{args.cycles}"
    if args.seeds:
        data["seeds"] = list(args.seeds)
        name += "-seeds" + "_".join(map(str, args.seeds))
    data["arms"] = {"oracle": oracle}
    data["name"] = name
    return data


def _compare(base, exhaustive, beam, ex_rows, beam_rows) -> None:
    from oracle.report.build import analysis_of

    a = analysis_of(ex_rows, judged_attrs(exhaustive, base))
    b = analysis_of(beam_rows, judged_attrs(beam, base))
    cost = {k: x.cost.set_index("arm").loc["oracle"] for k, x in (("ex", a), ("beam", b))}
    trained = int((~beam_rows["reused"] & (beam_rows["status"] != "failed")).sum())
    runs = (int(cost["ex"]["runs"]), int(cost["beam"]["runs"]))
    secs = (float(cost["ex"]["run_seconds"]), float(cost["beam"]["run_seconds"]))
    print(f"study {exhaustive.name}: grid of {len(exhaustive.grid)}, {len(exhaustive.seeds)} seeds, "
          f"{exhaustive.cycles} cycles, beam W={beam.beam}")
    print(f"{'':<12}{'runs':>8}{'run-seconds':>14}")
    print(f"{'exhaustive':<12}{runs[0]:>8}{secs[0]:>14.1f}")
    print(f"{'beam':<12}{runs[1]:>8}{secs[1]:>14.1f}")
    print(f"{'ratio':<12}{runs[1] / runs[0]:>8.3f}{(secs[1] / secs[0]) if secs[0] else math.nan:>14.3f}")
    print(f"runs the beam sweep trained itself (not in the exhaustive store): {trained}")
    va, vb = a.verdicts.set_index("cycle"), b.verdicts.set_index("cycle")
    print(f"{'cycle':>5}  {'winner':>17}  {'judged interval (exhaustive | beam)':<44}  {'verdict, P(inside)':<33}  "
          f"{'values':>6}  agree")
    agree_all = {"winner": 0, "interval": 0, "verdict": 0}
    for q in va.index:
        x, y = va.loc[q], vb.loc[q]
        same = {"winner": _same(x["oracle_max_lr"], y["oracle_max_lr"]),
                "interval": all(_same(x[c], y[c]) for c in ("judged_low", "judged_high"))
                and (x["open_low"], x["open_high"]) == (y["open_low"], y["open_high"]),
                "verdict": _same(x["verdict"], y["verdict"])}
        for k, v in same.items():
            agree_all[k] += v
        print(f"{q:>5}  {_lr(x['oracle_max_lr']):>8} {_lr(y['oracle_max_lr']):>8}  "
              f"{_interval(x):<21} {_interval(y):<22}  {_verdict(x):<16} {_verdict(y):<16}  "
              f"{int(y['grid_values_run']):>3}/{len(beam.grid):<2}  "
              f"{'yes' if all(same.values()) else 'NO: ' + ', '.join(k for k, v in same.items() if not v)}")
    n = len(va)
    print("agreement over " + f"{n} cycles: " + ", ".join(f"{k} {v}/{n}" for k, v in agree_all.items()))


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _same(x, y) -> bool:
    if _missing(x) and _missing(y):
        return True
    try:
        return math.isclose(float(x), float(y), rel_tol=1e-9)
    except (TypeError, ValueError):
        return x == y


def _lr(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def _verdict(r) -> str:
    """The verdict and its P(inside), which says how near it is to the 0.2 / 0.8 thresholds."""
    return "–" if _missing(r["verdict"]) else f"{r['verdict']} {float(r['p_inside']):.3f}"


def _interval(r) -> str:
    if r["judged_low"] is None or math.isnan(r["judged_low"]):
        return "–"
    return (f"[{'open ' if r['open_low'] else ''}{r['judged_low']:.4g}, "
            f"{r['judged_high']:.4g}{' open' if r['open_high'] else ''}]")


if __name__ == "__main__":
    sys.exit(main())
