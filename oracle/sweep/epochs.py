"""Per-epoch reports to Ray Tune: a trial's learning curves while it trains.

A class Trainable reports once per `step()`, and a run (or a fused round) trains all its
epochs in one call of silo. So the trial trains in a thread of its own (`EpochFeed`) and
each `step()` hands Tune what came next: an epoch's report, or the run's result. Epoch
reports carry `epoch_report: True` and no `run_id`; the ledger and the searcher pass them by
(`is_epoch_report`), so rows, the record and the Oracle's rounds see finished runs only, as
before. They land in Tune's result.json and in whatever a user attaches to Tune (a logger, a
scheduler reading `val_acc`).
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable
from typing import Any

EPOCH_REPORT = "epoch_report"


def is_epoch_report(result: dict | None) -> bool:
    return result is not None and bool(result.get(EPOCH_REPORT))


class EpochFeed:
    """`work(progress)` in a daemon thread; `next()` gives ("epoch", info) for each call of
    `progress`, in order, then ("done", work's value). An exception in `work` comes out of
    the `next()` that would have given its value, so the trial fails as it did unthreaded.

    One thread at a time trains (the trial waits in `next()` while it does), so torch's
    threads stay what the trial set."""

    def __init__(self, work: Callable[[Callable[[dict], None]], Any]):
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, args=(work,), name="silo-train", daemon=True)
        self._thread.start()

    def _run(self, work) -> None:
        try:
            self._queue.put(("done", work(lambda info: self._queue.put(("epoch", info)))))
        except BaseException as exc:  # handed to the trial's thread, raised there
            self._queue.put(("error", exc))

    def next(self) -> tuple[str, Any]:
        kind, value = self._queue.get()
        if kind == "error":
            self._thread.join()
            raise value
        if kind == "done":
            self._thread.join()
        return kind, value


def epoch_report(info: dict, *, arm: str, seed: int, node_id: str, max_lr: float | None = None) -> dict:
    """Tune's result for one epoch of a lone run (`max_lr`) or of a round (`info["max_lrs"]`:
    one val_acc/train_loss per trained member, keyed by its max_lr).

    Every result carries the searcher's metric, `val_acc` (Tune refuses one without it): the
    run's, or for a round its best member's; NaN on an epoch that `task.eval_every` skips."""
    report = {EPOCH_REPORT: True, "arm": arm, "seed": seed, "cycle": info["cycle"], "epoch": info["epoch"],
              "step": info["step"], "total_steps": info["total_steps"], "node_id": node_id,
              "done": False, "should_checkpoint": False}
    if max_lr is not None:
        report.update(max_lr=max_lr, train_loss=info["train_loss"], val_acc=_measured(info["val_acc"]))
        return report
    # A round: the members training now (None: diverged, or waiting their turn in sequence),
    # keyed by max_lr, or by seed/max_lr when seeds are fused.
    seeds = info.get("seeds") or [seed] * len(info["max_lrs"])
    several = len(set(seeds)) > 1
    report["members"] = {
        (f"{s}/{lr:g}" if several else f"{lr:g}"): {"train_loss": loss, "val_acc": acc}
        for s, lr, loss, acc in zip(seeds, info["max_lrs"], info["train_loss"], info["val_acc"])
        if loss is not None
    }
    if several:
        report["seeds"] = sorted(set(seeds))
    measured = [m["val_acc"] for m in report["members"].values() if m["val_acc"] is not None]
    report["val_acc"] = max(measured) if measured else math.nan
    return report


def _measured(val_acc: float | None) -> float:
    return math.nan if val_acc is None else val_acc
