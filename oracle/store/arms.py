"""The names of the two arms the judge and the report treat apart from the baselines.

The Oracle's rows are a grid per cycle, one value of each chosen (docs/design.md, "The Oracle,
exactly"); SILO's max_lr is the one every verdict judges. Every other arm is a chain arm known
only by the name the study gives it.
"""

ORACLE = "oracle"
SILO = "silo"
