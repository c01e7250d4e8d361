"""Print the mutation score of the last `mutmut run` (from `mutmut results --all true`)."""

from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path


def main() -> int:
    mutmut = Path(sys.executable).with_name("mutmut")
    out = subprocess.run([str(mutmut), "results", "--all", "true"], capture_output=True, text=True).stdout
    states = collections.Counter(line.rsplit(":", 1)[1].strip() for line in out.splitlines() if ":" in line)
    total = sum(states.values())
    killed = states.get("killed", 0)
    print(", ".join(f"{n} {state}" for state, n in states.most_common()))
    print(f"mutation score: {killed} of {total} mutants killed ({100 * killed / max(total, 1):.1f} %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
