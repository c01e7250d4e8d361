"""Stall tokens (oracle.sweep.faults) laid by a test, so that what it must see happen while a
sweep runs cannot be raced past by a smoke study that trains in a few seconds."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from oracle.sweep.faults import STALL_ENV, release

# An arm no other arm waits for: a stalled Oracle round would keep the next round, released
# early into the other slot, waiting as well, and training would stop.
UNWAITED_ARM = "lr_warmup"


@dataclass(frozen=True)
class Stall:
    token: Path

    @property
    def env(self) -> dict[str, str]:
        """What a driver's environment needs for its trials to see the token."""
        return {STALL_ENV: str(self.token)}

    @property
    def taken(self) -> bool:
        return not self.token.exists()

    def release(self) -> None:
        """End the stall (or, laid before a step takes the token, let it pass at once)."""
        release(self.token).write_text("")


@contextlib.contextmanager
def stall(token: Path, arm: str = UNWAITED_ARM, *, released: bool = False) -> Iterator[Stall]:
    """Lay `token` for one step of `arm` ("" for any arm); `released`: that step goes on at
    once. On leaving, the token and its release are taken away, so that a token path reused
    by the next test (a cluster's nodes name theirs once) starts from neither."""
    laid = Stall(token)
    token.write_text(arm)
    if released:
        laid.release()
    try:
        yield laid
    finally:
        token.unlink(missing_ok=True)
        release(token).unlink(missing_ok=True)
