"""The driver's ledger: every run's row, progress lines a person can follow, results.csv."""

from __future__ import annotations

import csv
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import TextIO

from oracle.rows import COLUMNS
from silo.atomic import atomic_writer


class Ledger:
    def __init__(self, seeds: tuple[int, ...], stream: TextIO | None = None):
        self.seeds = seeds
        # Keyed by (arm, seed, cycle, max_lr): a chain trial retried from its checkpoint may
        # report a cycle twice, and the row must still appear once.
        self._rows: dict[tuple, dict] = {}
        self._stream = stream or sys.stdout
        self._chain_cycles: dict[tuple[str, int], list[dict]] = defaultdict(list)

    def __getstate__(self) -> dict:
        # Tune pickles its searcher (and so this ledger) into the experiment folder; an
        # output stream cannot travel, and a restored copy prints to stdout.
        state = dict(self.__dict__)
        state["_stream"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._stream = sys.stdout

    @property
    def rows(self) -> list[dict]:
        return list(self._rows.values())

    def count(self, what: str) -> int:
        """trained, reused or failed: how many rows' runs were so in this invocation."""
        if what == "failed":
            return sum(r["status"] == "failed" for r in self._rows.values())
        want_reused = what == "reused"
        return sum(
            r["status"] != "failed" and bool(r["reused"]) == want_reused for r in self._rows.values()
        )

    def add(self, row: dict) -> bool:
        """Record a row; False if that (arm, seed, cycle, max_lr) was already there."""
        row = {k: row.get(k) for k in COLUMNS}
        key = (row["arm"], int(row["seed"]), int(row["cycle"]), float(row["max_lr"]))
        new = key not in self._rows
        self._rows[key] = row
        return new

    def chain_row(self, row: dict) -> None:
        """A chain arm finished a cycle for one seed; print once every seed has."""
        if not self.add(row):
            return
        done = self._chain_cycles[(row["arm"], row["cycle"])]
        done.append(row)
        if len(done) == len(self.seeds):
            self.say(row["arm"], row["cycle"], done, max_lr=row["max_lr"])

    def oracle_round(self, cycle: int, rows: list[dict], winner: float | None) -> None:
        for r in rows:
            self.add(dict(r, chosen=winner is not None and r["max_lr"] == winner))
        chosen = [r for r in rows if winner is not None and r["max_lr"] == winner]
        if winner is None:
            self.print(f"oracle  cycle {cycle:2d}  no grid value ran ok for every seed: the Oracle stops")
        else:
            self.say("oracle", cycle, chosen, max_lr=winner, note=f"best of {len({r['max_lr'] for r in rows})}")

    def say(self, arm: str, cycle: int, rows: list[dict], *, max_lr: float, note: str = "") -> None:
        ok = [r for r in rows if r["status"] == "ok"]
        val = sum(r["val_acc"] for r in ok) / len(ok) if ok else math.nan
        sparsity = max((r["sparsity"] or 0.0) for r in rows)
        statuses = {r["status"] for r in rows} - {"ok"}
        flag = f"  [{', '.join(sorted(statuses))}]" if statuses else ""
        self.print(
            f"{arm:<14} cycle {cycle:2d}  sparsity {sparsity:6.1%}  max_lr {max_lr:<9.4g} "
            f"val {val:6.1%}{'  ' + note if note else ''}{flag}"
        )

    def print(self, line: str) -> None:
        print(line, file=self._stream, flush=True)

    def write_csv(self, path: Path) -> None:
        """Atomically, sorted by arm, seed, cycle, max_lr."""
        rows = sorted(self.rows, key=lambda r: (r["arm"], r["seed"], r["cycle"], r["max_lr"]))
        with atomic_writer(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
