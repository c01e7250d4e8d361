"""Study files: every malformed file exits 2 through the CLI with one line naming the field,
writes nothing, and never shows a traceback; good files resolve and round-trip. Besides the
hand-written cases, every field of every shipped study is mutated (tests/_study_mutations.py)."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from oracle.cli import main
from oracle.judge.selection import DEFAULT_TOLERANCE
from oracle.study import Study, load_study, parse_study
from silo.schedules import silo_max_lr
from tests._repo import REPO
from tests._study_mutations import STUDIES, unique_mutations

ROOT = REPO
SMOKE = ROOT / "studies" / "smoke.yaml"
QUICKSTART = ROOT / "studies" / "quickstart.yaml"


def _smoke() -> dict:
    return yaml.safe_load(SMOKE.read_text())


def _mutated(change) -> str:
    data = copy.deepcopy(_smoke())
    change(data)
    return yaml.safe_dump(data, sort_keys=False)


def _set(*path, value):
    """A mutation setting data[path...] = value."""
    def change(data):
        for key in path[:-1]:
            data = data[key]
        data[path[-1]] = value
    return change


def _add_baseline(entry):
    return lambda data: data["arms"]["baselines"].append(entry)


SMOKE_TEXT = SMOKE.read_text()

# (id, file text, the field path the error line must start with, a phrase it must contain)
BAD = [
    ("unknown top-level key", _mutated(_set("arm", value={})), "arm", "did you mean 'arms'"),
    ("typo in task", _mutated(_set("task", "epoch", value=3)), "task.epoch", "allowed: data, model"),
    ("wrong type", _mutated(_set("task", "batch_size", value="big")), "task.batch_size", "integer"),
    ("eval_every a word", _mutated(_set("task", "eval_every", value="often")), "task.eval_every",
     "whole number of epochs >= 0 (0: only the final evaluation) or 'auto', got 'often'"),
    ("eval_every negative", _mutated(_set("task", "eval_every", value=-1)), "task.eval_every", "or 'auto', got -1"),
    ("rate out of range", _mutated(_set("pruning", "rate", value=1.5)), "pruning.rate", "> 0 and < 1"),
    ("negative momentum", _mutated(_set("task", "optimizer", "momentum", value=-1)),
     "task.optimizer.momentum", ">= 0 and < 1, got -1"),
    ("negative seed", _mutated(_set("seeds", value=[0, -1])), "seeds[1]", ">= 0"),
    ("zero seeds", _mutated(_set("seeds", value=0)), "seeds", ">= 1"),
    ("duplicate seeds", _mutated(_set("seeds", value=[1, 1])), "seeds", "duplicate"),
    ("empty grid", _mutated(_set("arms", "oracle", "grid", value=[])), "arms.oracle.grid", "must not be empty"),
    ("log range low >= high",
     _mutated(_set("arms", "oracle", "grid", value={"low": 0.3, "high": 0.01, "count": 3})),
     "arms.oracle.grid.high", "must be > low"),
    ("log range count 1",
     _mutated(_set("arms", "oracle", "grid", value={"low": 0.01, "high": 0.3, "count": 1})),
     "arms.oracle.grid.count", ">= 2"),
    ("duplicate grid values", _mutated(_set("arms", "oracle", "grid", value=[0.1, 0.01, 0.1])),
     "arms.oracle.grid", "duplicate"),
    ("non-positive grid value", _mutated(_set("arms", "oracle", "grid", value=[0.1, 0.0])),
     "arms.oracle.grid[1]", "> 0"),
    ("unknown model", _mutated(_set("task", "model", value="resnet21")), "task.model", "mnist1d_cnn"),
    ("unknown model option", _mutated(_set("task", "model_args", value={"widht": 8})),
     "task.model_args", "width"),
    ("unknown dataset", _mutated(_set("task", "data", "name", value="mnist2d")), "task.data.name", "mnist1d"),
    ("unknown strategy", _mutated(_set("pruning", "strategy", value="random")),
     "pruning.strategy", "global_magnitude"),
    ("bad rewind", _mutated(_set("pruning", "rewind", value="early:x")), "pruning.rewind", "early:K"),
    ("swd a_min 0", _mutated(lambda d: d["pruning"].update(strategy="swd", swd={"a_min": 0})),
     "pruning.swd.a_min", "> 0, got 0"),
    ("swd a_max below a_min",
     _mutated(lambda d: d["pruning"].update(strategy="swd", swd={"a_min": 10, "a_max": 1})),
     "pruning.swd.a_max", ">= a_min (10"),
    ("swd unknown criterion",
     _mutated(lambda d: d["pruning"].update(strategy="swd", swd={"criterion": "lookahead"})),
     "pruning.swd.criterion", "'layerwise_magnitude', got 'lookahead'"),
    ("swd settings for another strategy", _mutated(_set("pruning", "swd", value={"a_max": 10})),
     "pruning.swd", "only used by strategy swd"),
    ("swd without weight decay",
     _mutated(lambda d: (d["pruning"].update(strategy="swd"), d["task"]["optimizer"].update(weight_decay=0))),
     "task.optimizer.weight_decay", "> 0 with pruning.strategy swd"),
    ("missing cycles", _mutated(lambda d: d["pruning"].pop("cycles")), "pruning.cycles", "required"),
    ("pruning inside task", _mutated(_set("task", "pruning", value={"rate": 0.1})),
     "task.pruning", "top-level `pruning`"),
    ("unknown baseline", _mutated(_add_baseline({"name": "lr_rewind", "max_lr": 0.1})),
     "arms.baselines[2].name", "lr_rewinding"),
    ("unknown baseline setting",
     _mutated(_add_baseline({"name": "cosine_decay", "max_lr": 0.1, "warmup": 3})),
     "arms.baselines[2]", "unknown setting(s) warmup"),
    ("missing baseline setting", _mutated(_add_baseline({"name": "cosine_decay"})),
     "arms.baselines[2]", "missing setting(s) max_lr"),
    ("bad baseline max_lr", _mutated(_add_baseline({"name": "cosine_decay", "max_lr": -1})),
     "arms.baselines[2].max_lr", "> 0"),
    ("bad baseline duration",
     _mutated(_add_baseline({"name": "lr_warmup", "label": "w2", "max_lr": 0.1, "warmup": "3 weeks"})),
     "arms.baselines[2].warmup", "'<x>ep'"),
    ("s_cyc given a prune rate",
     _mutated(_add_baseline({"name": "s_cyc", "prune_rate": 0.1, "offset": 0.03, "alpha": 0.04,
                             "beta": 5, "delay": 1})),
     "arms.baselines[2].prune_rate", "pruning.rate"),
    ("no arms", _mutated(_set("arms", value={})), "arms", "at least one"),
    ("duplicate arm names", _mutated(_add_baseline({"name": "lr_rewinding", "max_lr": 0.1})),
     "arms.baselines[2]", "already used"),
    ("label clashing with silo", _mutated(_add_baseline({"name": "cosine_decay", "max_lr": 0.1, "label": "silo"})),
     "arms.baselines[2]", "already used"),
    ("silo peak always zero", _mutated(_set("arms", "silo", value={"offset": 0, "alpha": 0})),
     "arms.silo", "offset + alpha"),
    ("silo offset 0", _mutated(_set("arms", "silo", "offset", value=0)),
     "arms.silo.offset", "planned max_lr is 0.0 at cycle 0, 0.0 at cycle 1; it must be a finite number > 0"),
    ("s_cyc offset 0",
     _mutated(_add_baseline({"name": "s_cyc", "offset": 0, "alpha": 0.04, "beta": 5, "delay": 0})),
     "arms.baselines[2].offset", "planned max_lr is 0.0 at cycle 0;"),
    ("beam width 0", _mutated(_set("arms", "oracle", value={"grid": [0.01, 0.03, 0.1, 0.3], "search": {"beam": 0}})),
     "arms.oracle.search.beam", ">= 1, got 0"),
    ("beam width not an int", _mutated(_set("arms", "oracle", value={"grid": [0.01, 0.03, 0.1, 0.3],
                                                                      "search": {"beam": 1.5}})),
     "arms.oracle.search.beam", "integer, got 1.5"),
    ("beam without a width", _mutated(_set("arms", "oracle", "search", value="beam")),
     "arms.oracle.search", "`exhaustive` or {beam: W} with W an int >= 1, got 'beam'"),
    ("beam on a 3-value grid", _mutated(_set("arms", "oracle", "search", value={"beam": 1})),
     "arms.oracle.search", "a beam needs a grid of at least 4 values, got 3"),
    ("bad duration", _mutated(_set("task", "shape", "warmup", value="3 weeks")),
     "task.shape.warmup", "'<x>ep'"),
    ("unknown shape", _mutated(_set("task", "shape", "name", value="cosin")), "task.shape.name", "'cosine'"),
    ("bad resources", _mutated(_set("resources", value={"cpu": 0})), "resources.cpu", "> 0"),
    ("retired noise_k unreadable", _mutated(_set("analysis", value={"tolerance": 0.005, "noise_k": "two"})),
     "analysis.noise_k", "number"),
    ("task not a mapping", _mutated(_set("task", value="mnist")), "task", "mapping"),
    ("name with a slash", _mutated(_set("name", value="a/b")), "name", "letters, digits"),
    ("not YAML", "name: x\ntask: [1, 2\n", "{file}", "not valid YAML (line 3, column 1)"),
    ("duplicate key", SMOKE_TEXT + "seeds: [3]\n", "{file}", "duplicate key 'seeds'"),
    ("top-level list", "- name: x\n- task: {}\n", "{file}", "must be a mapping"),
    ("empty file", "", "{file}", "empty file"),
]


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("text,path,phrase", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_study_exits_2_naming_the_field(tmp_path, monkeypatch, capsys, text, path, phrase):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "study.yaml").write_text(text)
    before = _listing(tmp_path)
    assert main(["validate", "study.yaml"]) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == ""
    assert lines and all(line.startswith("error: ") for line in lines), err
    prefix = f"error: {path.format(file='study.yaml')}: "
    assert any(line.startswith(prefix) and phrase in line for line in lines), err
    assert _listing(tmp_path) == before


def test_every_problem_is_reported_at_once(tmp_path, capsys):
    study = tmp_path / "s.yaml"
    study.write_text(_mutated(lambda d: (d["task"].update(batch_size=0, model="nope"),
                                         d["pruning"].update(rate=0))))
    assert main(["validate", str(study)]) == 2
    err = capsys.readouterr().err
    # One line each, in file order (task before pruning).
    assert [line.split(":")[1].strip() for line in err.splitlines()] == [
        "task.batch_size", "task.model", "pruning.rate"]


def test_missing_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "nope.yaml"]) == 2
    assert capsys.readouterr().err == "error: nope.yaml: no such file\n"
    assert _listing(tmp_path) == []


def test_run_with_a_bad_study_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(_mutated(_set("pruning", "rate", value=2)))
    assert main(["run", "s.yaml", "--out", "out"]) == 2
    assert "error: pruning.rate: " in capsys.readouterr().err
    assert _listing(tmp_path) == ["s.yaml"]


def test_a_study_for_the_retired_rule_validates_with_one_warning_and_keeps_its_run_ids(tmp_path, capsys):
    old = tmp_path / "old.yaml"
    old.write_text(_mutated(_set("analysis", value={"tolerance": 0.005, "noise_k": 2})))
    assert main(["validate", str(old)]) == 0
    out, err = capsys.readouterr()
    assert err == ("warning: analysis.noise_k (2) is no longer used: the optimal interval is now every max_lr "
                   "within analysis.tolerance = 0.005 (delta, accuracy as a fraction) of the best's expected "
                   "accuracy, whatever the number of seeds (it was a floor under noise_k x sd); check that 0.005 "
                   f"is the practical difference you mean (default {DEFAULT_TOLERANCE:g}) and remove noise_k\n")
    assert "noise_k: 2" in out  # the resolved study keeps it, so the record and report say it too
    # the analysis is not part of a run's identity: the same runs as the study without it
    study, new = load_study(old), parse_study(_smoke())
    assert parse_study(yaml.safe_load(study.resolved_yaml())).analysis == study.analysis
    assert study.task_for_arm("silo").identity() == new.task_for_arm("silo").identity()
    assert main(["validate", str(SMOKE)]) == 0 and capsys.readouterr().err == ""


def test_usage_errors_exit_2(capsys):
    assert main([]) == 2
    assert main(["run", "x.yaml", "--max-concurrent", "0"]) == 2
    assert main(["dashboard", "d", "--port", "http"]) == 2
    assert main(["--help"]) == 0


@pytest.mark.parametrize("text,path", [
    (_mutated(_set("task", "epoch", value=3)), "task.epoch"),
    ("name: [unclosed\n", "s.yaml"),
], ids=["unknown key", "not YAML"])
@pytest.mark.integration
def test_real_cli_exit_code_and_no_traceback(tmp_path, text, path):
    (tmp_path / "s.yaml").write_text(text)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "oracle.cli", "validate", "s.yaml"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.startswith(f"error: {path}: ")
    assert "Traceback" not in proc.stderr
    assert _listing(tmp_path) == ["s.yaml"]
    if path == "task.epoch":  # the allowed keys are what a study may set: not the computed fingerprint
        assert "'epoch' (allowed: data, model, model_args, epochs, " in proc.stderr
        assert "model_fingerprint" not in proc.stderr and "did you mean 'epochs'?" in proc.stderr


# ----------------------------------------------------------------------------- good files


@pytest.mark.parametrize("path", [SMOKE, QUICKSTART], ids=["smoke", "quickstart"])
def test_shipped_studies_validate_and_round_trip(path, tmp_path, capsys):
    assert main(["validate", str(path)]) == 0
    resolved = capsys.readouterr().out
    study = load_study(path)
    assert resolved == study.resolved_yaml()
    assert f"name: {study.name}" in resolved
    (tmp_path / "resolved.yaml").write_text(resolved)
    assert load_study(tmp_path / "resolved.yaml") == study  # resolving is idempotent
    assert parse_study(study.to_mapping()) == study


def test_quickstart_shape():
    study = load_study(QUICKSTART)
    assert study.cycles == 8 and study.seeds == (0, 1, 2) and len(study.grid) == 6
    assert study.pruning.rewind == "init" and study.pruning.rate == 0.3  # a landscape with a signal
    assert study.arm_names() == ["oracle", "silo", "lr_rewinding", "lr_warmup"]
    silo_range = [study.schedule("silo").max_lr(q) for q in range(study.cycles)]
    assert min(study.grid) <= min(silo_range) and max(silo_range) <= max(study.grid)


def test_seed_count_means_range():
    study = parse_study({**_smoke(), "seeds": 3})
    assert study.seeds == (0, 1, 2)
    assert parse_study({**_smoke(), "seeds": [5, 2]}).seeds == (2, 5)


def test_log_grid_expands_from_low_to_high():
    data = _smoke()
    data["arms"]["oracle"]["grid"] = {"low": 1e-3, "high": 0.3, "count": 6}
    grid = parse_study(data).grid
    assert len(grid) == 6 and grid[0] == 1e-3 and grid[-1] == 0.3
    ratios = [b / a for a, b in zip(grid, grid[1:])]
    assert all(math.isclose(r, ratios[0], rel_tol=1e-5) for r in ratios)
    assert all(float(f"{v:.6g}") == v for v in grid)  # 6 significant digits: prints well


def test_explicit_grid_is_sorted_and_exponents_parse(tmp_path):
    text = SMOKE_TEXT.replace("grid: {low: 0.01, high: 0.3, count: 3}", "grid: [1e-1, 3e-3, 1e-2]")
    assert text != SMOKE_TEXT
    (tmp_path / "s.yaml").write_text(text)
    assert load_study(tmp_path / "s.yaml").grid == (0.003, 0.01, 0.1)  # 1e-3 is a float here


def test_arms_schedules_and_shapes():
    data = _smoke()
    data["arms"]["baselines"] += [
        {"name": "cosine_decay", "max_lr": 0.05},
        {"name": "s_cyc", "offset": 0.03, "alpha": 0.04, "beta": 5, "delay": 1, "label": "s_cyc_wide"},
    ]
    study = parse_study(data)
    assert study.arm_names() == ["oracle", "silo", "lr_rewinding", "lr_warmup", "cosine_decay", "s_cyc_wide"]
    task = study.task
    assert task.pruning.rate == 0.2 and task.pruning == study.pruning.config()
    # The shape is part of what a run trains: a baseline with its own shape gets its own task.
    assert study.task_for_arm("cosine_decay").shape.name == "cosine"
    assert study.task_for_arm("cosine_decay") != task
    assert study.task_for_arm("silo") == task and study.task_for_arm("oracle") == task
    assert study.task_for_arm("lr_rewinding") == task
    silo = study.arms.silo
    assert study.schedule("silo").max_lr(2) == silo_max_lr(
        2, prune_rate=0.2, offset=silo.offset, alpha=silo.alpha, beta=silo.beta, delay=silo.delay)
    assert study.schedule("s_cyc_wide").shape.name == "cyclical"
    assert study.schedule("cosine_decay").max_lr(5) == 0.05
    # Baseline defaults are filled in, so the resolved study shows every setting.
    assert study.arms.baselines[2].settings == {"max_lr": 0.05, "floor": 0.0}
    with pytest.raises(ValueError, match="grid-searches"):
        study.schedule("oracle")
    with pytest.raises(ValueError, match="no arm 'nope'"):
        study.schedule("nope")


def test_optional_arms_and_defaults():
    data = _smoke()
    data["arms"] = {"silo": {}}
    data.pop("resources")
    study = parse_study(data)
    assert study.grid == () and study.arm_names() == ["silo"]
    assert study.arms.silo.offset == 0.03 and study.arms.silo.beta == 5  # the paper's ResNet-20
    assert study.resources.max_concurrent is None and study.analysis.noise_k is None
    assert study.analysis.tolerance == DEFAULT_TOLERANCE and study.analysis.changes() == []
    assert isinstance(study, Study) and study.model_config["frozen"]


# ----------------------------------------------------------------------------- generated bad files

MUTATIONS = unique_mutations()


def _refused(tmp_path, capsys, name: str) -> str | None:
    """Why `validate name` did not refuse the file as it must, or None if it did."""
    before = _listing(tmp_path)
    code = main(["validate", name])
    out, err = capsys.readouterr()
    lines = err.splitlines()
    if code != 2:
        return f"exit {code}"
    if out or not lines or not all(line.startswith("error: ") for line in lines):
        return f"output {out[:80]!r} / {err[:200]!r}"
    if "Traceback" in err:
        return "a traceback"
    if _listing(tmp_path) != before:
        return "wrote files"
    return None


def test_mutations_cover_every_shipped_study_and_kind():
    assert len(STUDIES) >= 10 and len(MUTATIONS) > 60
    assert {m.rsplit(": ", 1)[1] for _, m, _ in MUTATIONS} == {
        "wrong type", "out of range", "missing", "unknown key", "empty", "given twice"}


@pytest.mark.parametrize("stem", sorted({s for s, _, _ in MUTATIONS}))
def test_every_mutated_field_of_a_shipped_study_is_refused(stem, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    failures = []
    for study, mutation, text in MUTATIONS:
        if study != stem:
            continue
        (tmp_path / "study.yaml").write_text(text)
        why = _refused(tmp_path, capsys, "study.yaml")
        if why:
            failures.append(f"{mutation}: {why}")
    assert failures == []


def _write(path: Path, content) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


ODD_FILES = {
    "a list": ("- a\n- b\n", "must be a mapping"),
    "a string": ("just words\n", "must be a mapping"),
    "a number": ("42\n", "must be a mapping"),
    "null": ("~\n", "empty file"),
    "only a comment": ("# nothing here\n", "empty file"),
    "binary, not UTF-8": (bytes(range(256)) * 64, "not UTF-8 text"),
    "NUL bytes in UTF-8": (b"name: a\x00b\n", "not valid YAML"),
    "10 MB": ("# " + "x" * 10_000_000 + "\n", "10.0 MB is too large for a study file"),
    "a directory": (None, "is a directory"),
    "a missing path": (..., "no such file"),
}


@pytest.mark.parametrize("content,phrase", ODD_FILES.values(), ids=ODD_FILES.keys())
def test_odd_files_are_refused(tmp_path, monkeypatch, capsys, content, phrase):
    monkeypatch.chdir(tmp_path)
    if content is None:
        (tmp_path / "study.yaml").mkdir()
    elif content is not ...:
        _write(tmp_path / "study.yaml", content)
    before = _listing(tmp_path)
    assert main(["validate", "study.yaml"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: study.yaml: ") and phrase in err, err
    assert len(err.splitlines()) == 1
    assert _listing(tmp_path) == before
