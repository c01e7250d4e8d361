"""The winners hand-off: how the driver tells trials released early whom to continue from.

An Oracle round may be handed out before the previous round's winners are known, so that its
trials wait in warm actors across the round's barrier (oracle.sweep.searcher). The driver then
publishes each round's winners as a small JSON file in a folder of its own invocation, and
the waiting trials poll for it. The driver also touches a heartbeat file in that folder
while it runs; a trial gives up waiting, with a clear status, when the heartbeat goes stale
(the driver is gone) or after a generous limit, instead of holding a slot forever.

    driver:  handoff = WinnersHandoff(folder); with handoff.beating(): ... handoff.publish(q, parents)
    trial:   parent = await_winner(handoff.path_for(q), seed)   # run id, STOPPED, WITHDRAWN, or raises
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from pathlib import Path

from silo.atomic import write_atomic

HEARTBEAT = "heartbeat"
BEAT_EVERY_S = 10.0
STALE_AFTER_S = 120.0  # 12 missed beats: the driver is gone, not busy
WAIT_LIMIT_S = 7 * 24 * 3600.0  # a round of ImageNet runs can take days; a week is a bug
STOPPED = "stopped"  # the Oracle stopped before this cycle: nothing to train
WITHDRAWN = "withdrawn"  # released too early: give the slot back, the round is handed out again


class WinnersLost(RuntimeError):
    """A waiting trial's driver is gone, or its winners never came."""


class WinnersHandoff:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path_for(self, q: int) -> str:
        return str(self.folder / f"cycle-{q}.json")

    def publish(self, q: int, parents: dict[int, str] | None) -> None:
        """Winners of cycle q (seed -> run id), or None: the Oracle stops, nothing follows."""
        self._write(q, {"stop": True} if parents is None else {"parents": {str(s): r for s, r in parents.items()}})

    def withdraw(self, q: int) -> None:
        """The trials waiting for cycle q's winners are to end now and free their slots.

        A trial of round q is being retried (its node was lost) and needs a slot that the
        trials released early hold while they wait: without this, each waits for the other.
        The searcher hands their round out again, with known parents, once round q closes.
        """
        self._write(q, {"withdrawn": True})

    def _write(self, q: int, payload: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(Path(self.path_for(q)), json.dumps(payload))

    @contextlib.contextmanager
    def beating(self, every_s: float = BEAT_EVERY_S):
        """Touch the heartbeat every `every_s` seconds while the driver runs the sweep."""
        self.folder.mkdir(parents=True, exist_ok=True)
        beat = self.folder / HEARTBEAT
        stop = threading.Event()

        def loop() -> None:
            while True:
                beat.touch()
                if stop.wait(every_s):
                    return

        thread = threading.Thread(target=loop, name="winners-heartbeat", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(timeout=5)

    def discard(self) -> None:
        """The files only served this invocation's waiting trials."""
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.folder.parent.rmdir()  # only if no other invocation is using it


def await_winner(path: str, seed: int, *, poll_s: float = 0.05, stale_after_s: float = STALE_AFTER_S,
                 limit_s: float = WAIT_LIMIT_S) -> str:
    """Block until the winners of the previous round appear; this seed's parent run id.

    Returns STOPPED if the Oracle stopped, WITHDRAWN if the driver wants the slot back.
    Raises WinnersLost if the driver's heartbeat is older than `stale_after_s` (or was never
    written within it), or after `limit_s`.
    """
    winners = Path(path)
    beat = winners.parent / HEARTBEAT
    start = time.monotonic()
    while not winners.exists():
        now = time.monotonic()
        try:
            age = time.time() - beat.stat().st_mtime
        except FileNotFoundError:
            age = now - start
        if age > stale_after_s:
            raise WinnersLost(f"the driver is gone: no heartbeat in {winners.parent} for {age:.0f} s")
        if now - start > limit_s:
            raise WinnersLost(f"no winners in {winners} after {limit_s:.0f} s")
        time.sleep(poll_s)
    payload = json.loads(winners.read_text())
    if payload.get("withdrawn"):
        return WITHDRAWN
    return STOPPED if payload.get("stop") else payload["parents"][str(seed)]
