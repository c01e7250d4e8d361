"""The run store: one folder per run id holding weights, mask, metrics and identity.

Every run folder has the same few files (ShrinkBench style). Writes are atomic: the folder
is assembled under a temporary name with its completion marker written last, fsynced (every
file, then the folder: silo.atomic.fsync_tree), then renamed into place, so a reader sees a
complete run or none, even after kill -9.

The marker is a manifest (size and sha256 of every other file), so a folder damaged later
(a truncated weights file, a garbled metrics.json, a lost marker) is recognised: it is never
reused, but reported in one warning line, moved aside to `.corrupt/` and trained again.

Saving is idempotent: two trials that trained the same run (two arms sharing it) may save it
at once; the first complete folder wins and is never replaced or deleted, the other copy is
discarded. Both are the same computation, so nothing is lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from silo.atomic import fsync_tree
from silo.pruning import Mask
from silo.status import RunStatus
from silo.train import RunResult, RunState

COMPLETE = "COMPLETE"
CORRUPT = ".corrupt"
IDENTITY = "identity.json"
STATUSES = (RunStatus.OK, RunStatus.DIVERGED)  # what a trained run can be


class CorruptRunError(RuntimeError):
    """A run the store was asked to load is damaged; it has been moved aside."""


def _warn_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class RunStore:
    def __init__(self, root: str | os.PathLike[str], warn: Callable[[str], None] = _warn_stderr):
        self.root = Path(root)
        self._warn = warn

    def path(self, run_id: str) -> Path:
        return self.root / run_id

    # -- reading

    def problem(self, run_id: str) -> str | None:
        """Why the run's folder is not a sound complete run, or None if it is one."""
        return _problem(self.path(run_id), run_id)

    def find(self, run_id: str) -> dict[str, Any] | None:
        """The run's metrics (its metrics.json) if it is complete and sound in the store, else None.

        A folder that exists but is not sound is moved aside (one warning line), so the
        caller trains the run again into a clean place.
        """
        folder = self.path(run_id)
        if not folder.exists():
            return None
        why = self.problem(run_id)
        if why is None:
            return self.load_metrics(run_id)
        self._set_aside(run_id, why)
        return None

    def load_metrics(self, run_id: str) -> dict[str, Any]:
        metrics: dict[str, Any] = json.loads((self.path(run_id) / "metrics.json").read_text())  # JSON object
        return metrics

    def load_state(self, run_id: str) -> RunState:
        why = self.problem(run_id)
        if why == "no folder":
            raise FileNotFoundError(f"run {run_id} is not complete in the store at {self.root}")
        if why is not None:
            self._set_aside(run_id, why)
            raise CorruptRunError(f"run {run_id} in the store at {self.root} is corrupt ({why}); "
                                  "it was moved aside: rerun the study to train it again")
        folder = self.path(run_id)
        rewind = folder / "rewind.pt"
        metrics = self.load_metrics(run_id)
        return RunState(
            weights=torch.load(folder / "weights.pt", weights_only=True),
            mask=Mask.load(folder / "mask.pt"),
            rewind_weights=torch.load(rewind, weights_only=True) if rewind.exists() else None,
            diverged=metrics.get("status") == RunStatus.DIVERGED,
        )

    # -- writing

    def save(self, run_id: str, result: RunResult, metrics: Mapping[str, Any],
             identity: Mapping[str, Any] | None = None) -> bool:
        """Store a trained run. True if this call placed it; False if a sound copy was
        already there (kept as it is: another trial may be reading it)."""
        tmp = self.root / ".tmp" / f"{run_id}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            torch.save(result.state.weights, tmp / "weights.pt")
            result.state.mask.save(tmp / "mask.pt")
            if result.state.rewind_weights is not None:
                torch.save(result.state.rewind_weights, tmp / "rewind.pt")
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
            if identity is not None:  # the JSON the run id was hashed from
                (tmp / IDENTITY).write_text(json.dumps(identity, indent=1, sort_keys=True))
            manifest = {p.name: {"bytes": p.stat().st_size, "sha256": _digest(p)}
                        for p in sorted(tmp.iterdir())}
            (tmp / COMPLETE).write_text(json.dumps(manifest, indent=1, sort_keys=True))
            fsync_tree(tmp)  # every file and the folder on disk before the rename places it
            return self._place(run_id, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when it was placed

    def _place(self, run_id: str, tmp: Path) -> bool:
        final = self.path(run_id)
        for _ in range(3):
            why = self.problem(run_id)
            if why is None:
                return False  # the same run, complete: keep it, discard ours
            if why != "no folder":
                self._set_aside(run_id, why)
            try:
                # rename() never replaces a non-empty folder (ENOTEMPTY/EEXIST): a complete
                # run that another trial placed in the meantime is never clobbered.
                os.rename(tmp, final)
                return True
            except OSError:
                if not final.exists():
                    raise
        raise RuntimeError(f"run {run_id}: could not place it in the store at {self.root}")

    def _set_aside(self, run_id: str, why: str) -> None:
        """Move a damaged run folder to .corrupt/, where it can be inspected."""
        final = self.path(run_id)
        aside = self.root / CORRUPT / f"{run_id}-{uuid.uuid4().hex[:8]}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(final, aside)
        except FileNotFoundError:
            return  # another trial moved it first
        if _problem(aside, run_id) is None:
            # Another trial replaced the damaged folder with a sound one between our check
            # and the move: put it back (fails harmlessly if a third copy is there).
            try:
                os.rename(aside, final)
                return
            except OSError:
                pass
        self._warn(f"warning: run {run_id} in the store is corrupt ({why}): moved to {aside}; "
                   "it will be trained again")


def _problem(folder: Path, run_id: str) -> str | None:
    """Why `folder` is not a sound complete copy of run `run_id`, or None if it is one."""
    if not folder.is_dir():
        return "no folder"
    try:
        manifest = json.loads((folder / COMPLETE).read_text())
    except FileNotFoundError:
        return "no completion marker"
    except (OSError, ValueError):
        return "unreadable completion marker"
    if not isinstance(manifest, dict) or "metrics.json" not in manifest:
        return "unreadable completion marker"
    for name, want in manifest.items():
        file = folder / name
        if not isinstance(want, dict) or not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != want.get("bytes"):
            return f"{name} has {file.stat().st_size} bytes, {want.get('bytes')} were written"
        if _digest(file) != want.get("sha256"):
            return f"{name} does not match its checksum"
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return "metrics.json is not valid JSON"
    if not isinstance(metrics, dict) or metrics.get("status") not in STATUSES:
        return "metrics.json has no run status"
    if metrics.get("run_id") != run_id:
        return f"metrics.json names run {metrics.get('run_id')!r}"
    return None
