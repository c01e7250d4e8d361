"""The report: what a person reads of a study.

Owns the report files (`build`: verdicts.csv, summary.json, report.html, report.md ...;
`finish_study`, which a sweep calls at its end), the words (`words`: number formats, the verdict
and the search in words; `notes`: the analysis' findings in words), the tables (`tables`), the
pages (`render`: report.html, report.md), the figures (`plots`), studies side by side
(`compare`), where a study stands (`status`) and optuna-dashboard on a study's record
(`dashboard`).

May import: silo, oracle.errors, oracle.store and oracle.judge; nothing of oracle.study or
oracle.sweep (tests/test_layout.py).
"""
