"""Chaos drill: kill Ray workers mid-sweep and check that nothing is lost or changed.

    python bench/chaos.py [studies/smoke.yaml] [--faults 3] [--every 4]

Runs the study once undisturbed, then once while killing (SIGKILL) one of its own trial
workers every `--every` seconds, `--faults` times. Only processes descended from the driver
this script started are ever signalled. Ray Tune retries the killed trials (chain trials
resume from their last finished cycle; every finished run is in the store), so the two runs
must hold the same run ids with the same accuracies. Prints

    faults injected: N, runs lost: L, mismatches: M
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def descendants(root: int) -> list[int]:
    """Every live process whose chain of parents reaches `root` (from /proc)."""
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parent[int(entry.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    out = []
    for pid in parent:
        p = pid
        while p in parent and p not in (0, 1):
            p = parent[p]
            if p == root:
                out.append(pid)
                break
    return out


def trial_workers(driver: int) -> list[int]:
    """The driver's Ray workers that are running a trial (their title names the trainable)."""
    found = []
    for pid in descendants(driver):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::") and "Trainable" in title and ".train" in title:
            found.append(pid)
    return found


def run(study: str, out: Path, *, faults: int = 0, every: float = 4.0) -> int:
    cmd = [sys.executable, "-m", "oracle.cli", "run", study, "--out", str(out)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    injected = 0
    try:
        next_at = time.monotonic() + every
        while proc.poll() is None:
            time.sleep(0.2)
            if injected < faults and time.monotonic() >= next_at:
                workers = trial_workers(proc.pid)
                if workers:
                    os.kill(workers[0], signal.SIGKILL)
                    injected += 1
                    print(f"  killed trial worker {workers[0]}", flush=True)
                    next_at = time.monotonic() + every
        if proc.returncode != 0:
            raise SystemExit(f"the sweep into {out} exited {proc.returncode}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own process group only
        except ProcessLookupError:
            pass
    return injected


def results(out: Path) -> dict[str, tuple]:
    with (out / "results.csv").open() as f:
        return {r["run_id"]: (r["status"], r["val_acc"], r["test_acc"]) for r in csv.DictReader(f)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", nargs="?", default=str(REPO / "studies" / "smoke.yaml"))
    parser.add_argument("--faults", type=int, default=3)
    parser.add_argument("--every", type=float, default=4.0, help="seconds between faults")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        t0 = time.perf_counter()
        run(args.study, Path(tmp) / "calm")
        calm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        injected = run(args.study, Path(tmp) / "chaos", faults=args.faults, every=args.every)
        chaos_s = time.perf_counter() - t0
        calm, chaos = results(Path(tmp) / "calm"), results(Path(tmp) / "chaos")
    lost = len(set(calm) - set(chaos))
    mismatches = sum(chaos[r] != v for r, v in calm.items() if r in chaos)
    print(f"undisturbed {calm_s:.0f} s, with faults {chaos_s:.0f} s ({chaos_s / calm_s:.2f}x); "
          f"{len(calm)} runs")
    print(f"faults injected: {injected}, runs lost: {lost}, mismatches: {mismatches}")
    return 0 if injected and not lost and not mismatches else 1


if __name__ == "__main__":
    raise SystemExit(main())
