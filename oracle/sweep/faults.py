"""The fault-injection hooks, for fault-tolerance tests and drills (tests/oracle/sweep/,
tests/oracle/test_cluster_cli.py). Unset, they do nothing.

SILO_ORACLE_FAULT_ONCE: when it names a file that exists, the next trial step to start deletes
it and raises: exactly once across the cluster (the file is the token), so Ray Tune's retry
of the trial can be tested end to end.

SILO_ORACLE_STALL_ONCE: the same token, but the step stalls instead (STALL_S), so a drill can
act while a trial is certainly in the middle of its work (kill its node: the lost-node drill).
Set in one node's environment only (`ray start`), it holds a trial of that node.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

FAULT_ENV = "SILO_ORACLE_FAULT_ONCE"
STALL_ENV = "SILO_ORACLE_STALL_ONCE"
STALL_S = 60.0


def maybe_inject_fault() -> None:
    if _took_token(FAULT_ENV):
        raise RuntimeError(f"injected fault ({FAULT_ENV}={os.environ[FAULT_ENV]})")
    if _took_token(STALL_ENV):
        time.sleep(STALL_S)


def _took_token(variable: str) -> bool:
    """Whether this process took the token file `variable` names (deleted it first)."""
    marker = os.environ.get(variable)
    if not marker:
        return False
    try:
        Path(marker).unlink()
    except FileNotFoundError:
        return False
    return True
