"""The fault-injection hooks (oracle.sweep.faults): each token is taken once, by one step."""

from __future__ import annotations

import threading
import time

import pytest

from oracle.sweep import faults


def _laid(tmp_path, monkeypatch, variable: str, text: str = ""):
    """A token file named by `variable`, for a step of the arm `text` names (any if "")."""
    token = tmp_path / variable.lower()
    token.write_text(text)
    monkeypatch.setenv(variable, str(token))
    return token


def test_the_fault_token_raises_once_and_is_gone(tmp_path, monkeypatch):
    token = _laid(tmp_path, monkeypatch, faults.FAULT_ENV)
    with pytest.raises(RuntimeError, match="injected fault"):
        faults.maybe_inject_fault("silo")
    assert not token.exists()
    faults.maybe_inject_fault("silo")  # the token is gone: the retry runs


def test_the_stall_token_holds_one_step_for_stall_s(tmp_path, monkeypatch):
    token = _laid(tmp_path, monkeypatch, faults.STALL_ENV)
    monkeypatch.setattr(faults, "STALL_S", 0.3)
    t0 = time.monotonic()
    faults.maybe_inject_fault("silo")
    assert time.monotonic() - t0 >= 0.3 and not token.exists()
    t0 = time.monotonic()
    faults.maybe_inject_fault("silo")  # taken: the next step does not stall
    assert time.monotonic() - t0 < 0.1


def test_a_token_that_names_an_arm_is_taken_by_that_arm_only(tmp_path, monkeypatch):
    token = _laid(tmp_path, monkeypatch, faults.STALL_ENV, "lr_warmup\n")
    monkeypatch.setattr(faults, "STALL_S", 0.3)
    t0 = time.monotonic()
    faults.maybe_inject_fault("oracle")
    faults.maybe_inject_fault("silo")
    assert time.monotonic() - t0 < 0.1 and token.exists()
    faults.maybe_inject_fault("lr_warmup")
    assert time.monotonic() - t0 >= 0.3 and not token.exists()
    fault = _laid(tmp_path, monkeypatch, faults.FAULT_ENV, "silo")  # a fault token alike
    faults.maybe_inject_fault("oracle")
    assert fault.exists()
    with pytest.raises(RuntimeError, match="injected fault"):
        faults.maybe_inject_fault("silo")


def test_the_stall_ends_when_its_release_is_laid(tmp_path, monkeypatch):
    token = _laid(tmp_path, monkeypatch, faults.STALL_ENV)
    monkeypatch.setattr(faults, "STALL_S", 30.0)
    released = threading.Timer(0.3, faults.release(token).write_text, args=("",))
    released.start()
    t0 = time.monotonic()
    faults.maybe_inject_fault("silo")
    took = time.monotonic() - t0
    released.join()
    assert 0.3 <= took < 5 and not token.exists(), took


def test_the_hold_waits_while_its_file_exists_and_at_most_hold_s(tmp_path, monkeypatch):
    hold = _laid(tmp_path, monkeypatch, faults.HOLD_ENV)
    gone = threading.Timer(0.3, hold.unlink)
    gone.start()
    t0 = time.monotonic()
    faults.maybe_inject_fault("silo")
    took = time.monotonic() - t0
    gone.join()
    assert 0.3 <= took < 5, took
    t0 = time.monotonic()
    faults.maybe_inject_fault("silo")  # the file is gone: no wait
    assert time.monotonic() - t0 < 0.1
    hold.write_text("")  # never taken away: the step goes on after HOLD_S
    monkeypatch.setattr(faults, "HOLD_S", 0.3)
    t0 = time.monotonic()
    faults.maybe_inject_fault("silo")
    assert 0.3 <= time.monotonic() - t0 < 5 and hold.exists()


def test_unset_or_without_a_token_nothing_happens(tmp_path, monkeypatch):
    monkeypatch.delenv(faults.FAULT_ENV, raising=False)
    monkeypatch.delenv(faults.STALL_ENV, raising=False)
    monkeypatch.delenv(faults.HOLD_ENV, raising=False)
    faults.maybe_inject_fault("silo")
    monkeypatch.setenv(faults.FAULT_ENV, str(tmp_path / "never-laid"))
    monkeypatch.setenv(faults.STALL_ENV, str(tmp_path / "never-laid"))
    monkeypatch.setenv(faults.HOLD_ENV, str(tmp_path / "never-laid"))
    t0 = time.monotonic()
    faults.maybe_inject_fault("silo")
    assert time.monotonic() - t0 < 0.1
