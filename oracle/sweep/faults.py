"""The one fault-injection hook, for fault-tolerance tests and drills (tests/oracle/sweep/test_sweep.py).

When SILO_ORACLE_FAULT_ONCE names a file that exists, the next trial step to start deletes
it and raises: exactly once across the cluster (the file is the token), so Ray Tune's retry
of the trial can be tested end to end. Unset, it does nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

FAULT_ENV = "SILO_ORACLE_FAULT_ONCE"


def maybe_inject_fault() -> None:
    marker = os.environ.get(FAULT_ENV)
    if not marker:
        return
    try:
        Path(marker).unlink()
    except FileNotFoundError:
        return
    raise RuntimeError(f"injected fault ({FAULT_ENV}={marker})")
