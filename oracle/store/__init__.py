"""The store: what a study keeps in its output folder, and how it is read back.

Owns the run store (`runs`: one folder per run id under DIR/runs/), the run key and its id
(`identity.RunKey`), the results row (`rows`), JSON-safe values (`plain`), the Optuna record
(`record`: the trials and the study's settings, written and read; `storage`: where the
record lives, opening its URL, and the folder's record.json pointer), the arm names the judge
and the report single out (`arms`), what produced a result (`provenance`) and the
driver's lock on the folder (`lock`, which `status` reads as well as the sweep holds).

May import: silo and oracle.errors; nothing of oracle.judge, oracle.study, oracle.report or
oracle.sweep (tests/test_layout.py).
"""
