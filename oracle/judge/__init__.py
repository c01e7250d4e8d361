"""The judge: the Oracle's rule and what is concluded from a study's runs.

Owns the rule (`selection`: winner, optimal interval, verdict; `plan`: the round's replay
that the sweep asks what to train next), the study as it is now (`lineage`), the analysis
(`analysis`: rows and study attributes in, tables, numbers and findings (`facts`) out, no
storage and no prose; `verdicts`: one cycle's verdict row), the paired comparisons between
arms (`comparisons`) and SILO's calibration to the Oracle (`calibrate`; its files:
`calibration_file`).

May import: silo, oracle.errors and oracle.store; nothing of oracle.study, oracle.report or
oracle.sweep (tests/test_layout.py).
"""
