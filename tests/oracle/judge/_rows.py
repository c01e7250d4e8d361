"""One round's run rows for the rule's tests (oracle.judge.selection and oracle.judge.plan)."""

from __future__ import annotations


def rows_of(acc: dict[float, list[float]], status: dict | None = None) -> list[dict]:
    status = status or {}
    return [{"max_lr": v, "seed": s, "val_acc": a, "status": status.get((v, s), "ok")}
            for v, per_seed in acc.items() for s, a in enumerate(per_seed)]
