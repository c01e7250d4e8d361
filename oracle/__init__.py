"""silo-oracle: Oracle vs SILO, the peak learning rate across iterative-pruning cycles.

The public Python API is oracle.api (load_study, validate, run_study, read_record, analyse,
build_report, compare, calibrate, status, dashboard), re-exported here lazily: `import oracle` imports nothing
else, so `import oracle.study` or `oracle.errors` costs no more than the module itself.

The packages, in the order a study flows through them (docs/design.md): oracle.study (the
study file), oracle.sweep (Ray Tune), oracle.store (run store and Optuna record),
oracle.judge (the rule, the analysis), oracle.report (what a person reads); oracle.cli is
the `silo-oracle` command.
"""

from __future__ import annotations

from importlib import import_module

API = ("analyse", "build_report", "calibrate", "compare", "dashboard", "load_study", "read_record", "run_study",
       "status", "validate")

__all__ = list(API)


def __getattr__(name: str):
    if name in API:
        return getattr(import_module("oracle.api"), name)
    raise AttributeError(f"module 'oracle' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])
