"""The fault-injection hooks, for fault-tolerance tests and drills (tests/oracle/sweep/,
tests/oracle/test_cluster_cli.py). Unset, they do nothing; each is checked once per trial step.

SILO_ORACLE_FAULT_ONCE: when it names a file that exists, the next trial step to start deletes
it and raises: exactly once across the cluster (the file is the token), so Ray Tune's retry
of the trial can be tested end to end. A token whose text names an arm is taken by a step of
that arm only (both kinds of token).

SILO_ORACLE_STALL_ONCE: the same token, but the step stalls instead, so a test can act while a
trial is certainly in the middle of its work (kill its node: the lost-node drill; read a record
that is certainly partial: the live-record test; restart a database while the sweep still
runs: the PostgreSQL outage test). The stall lasts until the test lays `<token>.go` (`release`),
at most STALL_S. Name an arm no other waits for (tests/_faults.py): a stalled Oracle round
would keep the next round, released early into the other slot, waiting too. Set in one node's
environment only (`ray start`), it holds a trial of that node.

SILO_ORACLE_HOLD_WHILE: every step waits while the file it names exists (at most HOLD_S). Set on
a cluster's head and naming the worker node's stall token, it keeps the head's trials waiting
until the worker node has started one: which node Ray gives a trial is otherwise a race that
a fast head wins on a busy machine (seen in CI: the head trained the whole smoke study alone).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

FAULT_ENV = "SILO_ORACLE_FAULT_ONCE"
STALL_ENV = "SILO_ORACLE_STALL_ONCE"
HOLD_ENV = "SILO_ORACLE_HOLD_WHILE"
STALL_S = 300.0  # a bound: a test releases the stall, or kills the node, well before
HOLD_S = 120.0
POLL_S = 0.05


def maybe_inject_fault(arm: str) -> None:
    """At the start of a trial step of `arm`."""
    hold = os.environ.get(HOLD_ENV)
    if hold:
        _wait(Path(hold).exists, HOLD_S)
    if _took_token(FAULT_ENV, arm):
        raise RuntimeError(f"injected fault ({FAULT_ENV}={os.environ[FAULT_ENV]})")
    stalled = _took_token(STALL_ENV, arm)
    if stalled:
        _wait(lambda: not release(stalled).exists(), STALL_S)


def release(token: Path) -> Path:
    """The file that ends the stall of the step that took `token`."""
    return token.with_name(token.name + ".go")


def _wait(condition: Callable[[], bool], limit_s: float) -> None:
    """Sleep while `condition()` holds, at most `limit_s`."""
    deadline = time.monotonic() + limit_s
    while condition() and time.monotonic() < deadline:
        time.sleep(POLL_S)


def _took_token(variable: str, arm: str) -> Path | None:
    """The token file `variable` names, if this step of `arm` took it (deleted it first); a
    token whose text names an arm is left to a step of that arm."""
    marker = os.environ.get(variable)
    if not marker:
        return None
    token = Path(marker)
    try:
        meant_for = token.read_text().strip()
        if meant_for and meant_for != arm:
            return None
        token.unlink()
    except FileNotFoundError:
        return None
    return token
