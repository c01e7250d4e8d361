"""The winners hand-off between the driver and Oracle trials released early."""

from __future__ import annotations

import os
import threading
import time

import pytest

from oracle.sweep.handoff import HEARTBEAT, STOPPED, WinnersHandoff, WinnersLost, await_winner


def test_a_waiting_trial_gets_its_seeds_parent_once_published(tmp_path):
    handoff = WinnersHandoff(tmp_path / "w")
    with handoff.beating(every_s=0.05):
        threading.Timer(0.3, handoff.publish, args=(2, {0: "run-a", 1: "run-b"})).start()
        t0 = time.monotonic()
        assert await_winner(handoff.path_for(2), 1, stale_after_s=0.2) == "run-b"
        assert time.monotonic() - t0 >= 0.25  # it waited, beyond the stale limit, while beats came
    handoff.publish(3, None)
    assert await_winner(handoff.path_for(3), 0) == STOPPED
    handoff.discard()
    assert not (tmp_path / "w").exists()


def test_a_gone_driver_frees_the_waiting_trial(tmp_path):
    handoff = WinnersHandoff(tmp_path / "w")
    handoff.folder.mkdir(parents=True)
    beat = handoff.folder / HEARTBEAT
    beat.touch()
    old = time.time() - 60
    os.utime(beat, (old, old))  # the last beat was a minute ago
    t0 = time.monotonic()
    with pytest.raises(WinnersLost, match="the driver is gone"):
        await_winner(handoff.path_for(0), 0, stale_after_s=30)
    assert time.monotonic() - t0 < 1
    with pytest.raises(WinnersLost, match="the driver is gone"):  # never beat at all
        await_winner(str(tmp_path / "nobody" / "cycle-0.json"), 0, stale_after_s=0.2)


def test_waiting_is_bounded_even_while_the_driver_beats(tmp_path):
    handoff = WinnersHandoff(tmp_path / "w")
    with handoff.beating(every_s=0.05), pytest.raises(WinnersLost, match="no winners"):
        await_winner(handoff.path_for(0), 0, limit_s=0.3)
