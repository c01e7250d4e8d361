"""SILO's calibration on disk: calibration.json (what `silo-oracle calibrate` found, with its
per-cycle check) and calibrated_silo.yaml (the `arms.silo` block to paste into a study).

    write_calibration(c, out)      both files, each written atomically
    read_calibration(path)         calibration.json's content, its settings checked

Light on purpose: a study whose SILO says `from: calibration.json` reads it while loading,
which should not import the fit (oracle.judge.calibrate, pandas). The curve a calibration
gives is oracle.judge.calibrate.calibrated_curve.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oracle.errors import OracleError
from silo.atomic import write_atomic

if TYPE_CHECKING:
    from oracle.judge.calibrate import Calibration

CALIBRATION_FILE, YAML_FILE = "calibration.json", "calibrated_silo.yaml"
SCHEMA = 1


def write_calibration(c: Calibration, out: str | os.PathLike[str], *,
                      source: Mapping[str, Any] | None = None) -> list[Path]:
    """calibration.json and calibrated_silo.yaml in `out`, each written atomically; a folder
    that cannot be written is one line (OracleError)."""
    out = Path(out)
    body = {**c.to_json(), **({"source": dict(source)} if source else {})}
    try:
        return [write_atomic(out / CALIBRATION_FILE, json.dumps(body, indent=2, allow_nan=False) + "\n"),
                write_atomic(out / YAML_FILE, c.yaml_block(str(out / CALIBRATION_FILE)))]
    except OSError as exc:
        raise OracleError(f"cannot write the calibration in {out}: {exc.strerror or exc}") from None


def read_calibration(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A calibration.json's content; OracleError naming the field if it cannot be used."""
    path = Path(path)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OracleError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise OracleError(f"{path}: unreadable ({exc})") from None
    settings = body.get("settings") if isinstance(body, dict) else None
    if not isinstance(settings, dict):
        raise OracleError(f"{path}: settings: missing; not a calibration.json written by silo-oracle calibrate")
    for key in ("offset", "alpha", "beta"):
        v = settings.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (
                key == "beta" and v == 0):
            bound = "> 0" if key == "beta" else ">= 0"
            raise OracleError(f"{path}: settings.{key}: must be a finite number {bound}, got {v!r}")
    d = settings.get("delay")
    if isinstance(d, bool) or not isinstance(d, int) or d < 0:
        raise OracleError(f"{path}: settings.delay: must be an int >= 0, got {d!r}")
    calibration: dict[str, Any] = body  # a JSON object: it has settings
    return calibration
