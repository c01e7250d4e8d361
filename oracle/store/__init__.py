"""The store: what a study keeps in its output folder, and how it is read back.

Owns the run store (`runs`: one folder per run id under DIR/runs/), the run key and its id
(`identity.RunKey`), the results row (`rows`), JSON-safe values (`plain`), the Optuna record
(`record`: all reading and writing of Optuna), what produced a result (`provenance`) and the
driver's lock on the folder (`lock`, which `status` reads as well as the sweep holds).

May import: silo and oracle.errors; nothing of oracle.judge, oracle.study, oracle.report or
oracle.sweep (tests/test_layout.py).
"""
