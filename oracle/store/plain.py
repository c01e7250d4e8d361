"""Plain, JSON-safe values: the one conversion used for summary.json, calibration.json and
the Optuna record's attributes; and `missing`, the one test for a value that is not there
(None or NaN: a table cell without a number)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd


def json_safe(value: Any) -> Any:
    """numpy scalars to Python, NaN and inf to None, containers recursively, other objects
    (paths, enums) to their string."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, str)):
        return value
    if hasattr(value, "item") and not isinstance(value, (int, float)):
        value = value.item()  # a numpy scalar
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    return str(value)


def missing(x: Any) -> bool:
    """x is None, NaN (float or numpy) or pandas' NA/NaT."""
    return x is None or bool(pd.isna(x))
