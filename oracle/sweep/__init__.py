"""The sweep: a study's runs as one Ray Tune run.

Owns the driver (`driver.run_sweep`: checks, lock, the Tuner), the searcher that schedules
the Oracle's rounds and the chain arms (`searcher`), the config it hands each trial
(`trial.TrialConfig`), the trainable and how a trial trains its runs (`trainable`, `execute`,
`epochs`: the per-epoch feed to Tune), what a sweep did (`summary.SweepSummary`), the early release's
hand-off of winners (`handoff`), the ledger and the live record (Tune callbacks: `ledger`,
`live`, on `callbacks`' pickling), Ctrl-C and SIGTERM (`preempt`), cluster auth (`cluster`) and the faults injected for
drills (`faults`).

May import: silo, oracle.errors, oracle.store, oracle.judge, oracle.study and oracle.report
(the report a sweep writes at its end); the other packages never import it
(tests/test_layout.py).
"""
