"""`DIR/plan.json`: what the driver that holds the folder plans, written the moment it takes
the folder's lock, before Ray starts and long before the live record's first write.

It holds the study's settings as the record keeps them (oracle.store.record.study_attrs), so
`silo-oracle status` can say from the first second what is planned and how much of it is
done, from the plan alone while the record has no trial yet.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from oracle.store.plain import json_safe
from silo.atomic import write_atomic

PLAN_FILE = "plan.json"


def write_plan(folder: str | os.PathLike[str], attrs: Mapping[str, Any]) -> Path:
    return write_atomic(Path(folder) / PLAN_FILE, json.dumps(json_safe(attrs), indent=1) + "\n")


def read_plan(folder: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """The folder's plan, or None when there is none (or it cannot be read)."""
    if folder is None:
        return None
    try:
        plan = json.loads((Path(folder) / PLAN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return plan if isinstance(plan, dict) else None
