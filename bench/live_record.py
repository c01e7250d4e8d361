"""What the live Optuna record costs a sweep: the same study run twice, side by side in
one invocation, recording every 15 s while it runs vs recording everything at the end.

    python bench/live_record.py [studies/quickstart.yaml]

Both runs train everything (fresh folders) on one local Ray, and both end with the record
complete and the report written; the figure is the ratio of their total wall times.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from oracle.sweep.driver import keep_ray_on_loopback

    keep_ray_on_loopback(None)
    import ray

    from oracle.study import load_study
    from oracle.sweep.driver import run_sweep

    study = load_study(argv[0] if argv else REPO / "studies" / "quickstart.yaml")
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
             logging_level="ERROR", log_to_driver=False)
    times = {}
    try:
        with tempfile.TemporaryDirectory(prefix="live-record-") as tmp:
            for name, every in (("at the end", 10**9), ("live, every 15 s", 15)):
                log = io.StringIO()
                t0 = time.perf_counter()
                assert run_sweep(study, out=Path(tmp) / name.replace(" ", "_"), stream=log,
                                 record_every_s=every, quiet=True).done
                times[name] = time.perf_counter() - t0
                done = next(line for line in log.getvalue().splitlines() if line.startswith("done in"))
                print(f"{name:>17}: {times[name]:6.1f} s in all   ({done})", flush=True)
    finally:
        ray.shutdown()
    ratio = times["live, every 15 s"] / times["at the end"]
    print(f"live / at the end: {ratio:.3f} ({100 * (ratio - 1):+.1f} % of the sweep's wall time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
