"""The run store: one folder per run id holding weights, mask and metrics.

Every run folder has the same few files (ShrinkBench style). Writes are atomic: the folder
is assembled under a temporary name with its completion marker written last, then renamed
into place, so a reader sees a complete run or none, even after kill -9.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import torch

from silo.pruning import Mask
from silo.train import RunResult, RunState

COMPLETE = "COMPLETE"


class RunStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, run_id: str) -> Path:
        return self.root / run_id

    def is_complete(self, run_id: str) -> bool:
        return (self.path(run_id) / COMPLETE).is_file()

    def save(self, run_id: str, result: RunResult, record: dict) -> None:
        final = self.path(run_id)
        tmp = self.root / ".tmp" / f"{run_id}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            torch.save(result.state.weights, tmp / "weights.pt")
            torch.save(result.state.mask.state_dict(), tmp / "mask.pt")
            if result.state.rewind_weights is not None:
                torch.save(result.state.rewind_weights, tmp / "rewind.pt")
            (tmp / "metrics.json").write_text(json.dumps(record, indent=1, sort_keys=True))
            (tmp / COMPLETE).write_text("")
            if self.is_complete(run_id):
                return  # another worker finished the same run first; both are identical
            if final.exists():
                shutil.rmtree(final)  # an incomplete leftover from an older layout
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def load_record(self, run_id: str) -> dict:
        return json.loads((self.path(run_id) / "metrics.json").read_text())

    def load_state(self, run_id: str) -> RunState:
        if not self.is_complete(run_id):
            raise FileNotFoundError(f"run {run_id} is not complete in the store at {self.root}")
        folder = self.path(run_id)
        rewind = folder / "rewind.pt"
        record = self.load_record(run_id)
        return RunState(
            weights=torch.load(folder / "weights.pt", weights_only=True),
            mask=Mask.from_state_dict(torch.load(folder / "mask.pt", weights_only=True)),
            rewind_weights=torch.load(rewind, weights_only=True) if rewind.exists() else None,
            diverged=record.get("status") == "diverged",
        )
