"""Study files: one YAML file describing a task, its pruning, the arms to compare and the seeds.

    study = load_study("studies/quickstart.yaml")    # or StudyError(problems), one line each
    study.task                 # silo.config.TaskConfig, pruning included
    study.arm_names()          # ["oracle", "silo", "lr_rewinding", ...]
    study.schedule("silo")     # silo.schedules.Schedule of a chain arm
    study.task_for_arm("cosine_decay")   # the task with that arm's shape

Owns the loader (`loader`: YAML in, Study or StudyError out), the error lines every problem
becomes (`problems`), the sections' schemas (`sections`), the Study with its checks across
sections (`model`), a study's own code (`owncode`: its `code:` on the driver's path and every
worker's) and the check of a task with its own model or data (`probe`).

May import: silo, oracle.errors and oracle.judge (the rule's default tolerance,
a calibration.json's reader); nothing of oracle.store, oracle.report or oracle.sweep
(tests/test_layout.py).
"""

from oracle.errors import StudyError
from oracle.study.loader import MAX_STUDY_BYTES, load_study, parse_study
from oracle.study.model import Study
from oracle.study.sections import (
    AnalysisSettings,
    Arms,
    BaselineArm,
    BeamSearch,
    CalibratedSiloArm,
    Execution,
    LogRange,
    OracleArm,
    Resources,
    SiloArm,
    StudyPruning,
)

__all__ = [
    "MAX_STUDY_BYTES", "AnalysisSettings", "Arms", "BaselineArm", "BeamSearch", "CalibratedSiloArm", "Execution",
    "LogRange", "OracleArm", "Resources", "SiloArm", "Study", "StudyError", "StudyPruning", "load_study",
    "parse_study",
]
