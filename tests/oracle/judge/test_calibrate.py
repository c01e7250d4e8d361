"""silo-oracle calibrate: SILO's settings fitted to the Oracle's rounds, on synthetic records
whose Oracle follows a known curve; the report draws it; a study can run it as an arm."""

from __future__ import annotations

import copy
import html
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from oracle.cli import main
from oracle.errors import OracleError, StudyError
from oracle.judge.calibrate import calibrate_rows, objective, targets
from oracle.judge.calibration_file import CALIBRATION_FILE, YAML_FILE, read_calibration, write_calibration
from oracle.judge.lineage import oracle_rounds
from oracle.judge.selection import (
    IntervalDraws,
    at_least,
    geometric_midpoint,
    judge,
    p_inside,
    round_table,
)
from oracle.store.identity import RunKey
from oracle.store.record import record_rows
from oracle.store.rows import rows_frame
from oracle.study import parse_study
from silo.schedules import silo_max_lr
from tests._fake_record import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
GRID = [float(f"{0.003 * (1 / 0.003) ** (i / 9):.6g}") for i in range(10)]  # 0.003 .. 1, 10 values
# Records that go through an Optuna storage (the command's tests) are smaller: recording costs
# a fraction of a second per run.
SMALL = GRID[::2]
RATE = 0.3
TRUE = {"offset": 0.01, "alpha": 0.2, "beta": 4.0, "delay": 1}  # the curve the Oracle follows
SILO = {"offset": 0.03, "alpha": 0.1, "beta": 5.0, "delay": 1}  # the study's own SILO


def s_curve(q: int) -> float:
    return silo_max_lr(q, prune_rate=RATE, **TRUE)


def _run(arm, seed, cycle, max_lr, val, run_id_, parent):
    return {"arm": arm, "seed": seed, "cycle": cycle, "max_lr": max_lr, "sparsity": 1 - (1 - RATE) ** cycle,
            "val_acc": val, "test_acc": val - 0.01, "train_loss": 0.3, "status": "ok", "run_id": run_id_,
            "parent_run_id": parent, "wall_s": 1.0, "steps": 10, "images_per_s": 1.0, "reused": False,
            "chosen": False}


def record(optimum, *, seeds=(0, 1, 2), cycles=6, shifted=None, silo=True, name="synth", grid=GRID):
    """Oracle rows whose val accuracy peaks (in log max_lr) at optimum(q), plus a seed effect and
    small seeded noise; each seed continues from the rule's winner of the previous cycle (the
    lineage a sweep leaves). shifted[s]: seed s's own optimum is shifted by that factor."""
    rows, parents = [], {s: None for s in seeds}
    for q in range(cycles):
        mine = []
        for s in seeds:
            rng = np.random.default_rng(1000 * q + s)
            peak = optimum(q) * (shifted or {}).get(s, 1.0)
            for v in grid:
                acc = 0.9 - 0.05 * math.log10(v / peak) ** 2 + 0.004 * (s - 1) + 0.002 * rng.standard_normal()
                mine.append(_run("oracle", s, q, v, acc, f"o-{s}-{q}-{v}", parents[s]))
        winner = judge(round_table(mine, seeds), grid=grid, tolerance=0.005).winner
        parents = {s: f"o-{s}-{q}-{winner}" for s in seeds}
        rows += mine
    plan = [silo_max_lr(q, prune_rate=RATE, **SILO) for q in range(cycles)]
    if silo:
        rows += [_run("silo", s, q, plan[q], 0.85, f"s-{s}-{q}", f"s-{s}-{q - 1}" if q else None)
                 for s in seeds for q in range(cycles)]
    attrs = {"study": name, "arms": ["oracle", "silo"] if silo else ["oracle"], "cycles": cycles,
             "seeds": list(seeds), "grid": grid, "tolerance": 0.005, "prune_rate": RATE,
             "planned_max_lr": {"silo": plan} if silo else {}, "silo_max_lr": plan if silo else None,
             "study_yaml": yaml.safe_dump({"name": name, "pruning": {"rate": RATE}, "arms": {"silo": SILO}})}
    return rows, attrs


@pytest.fixture(scope="module")
def s_record():
    return record(s_curve)


@pytest.fixture(scope="module")
def fitted(s_record):
    return calibrate_rows(*s_record)


def recorded(folder: Path, rows, attrs) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    record_rows(f"sqlite:///{folder / 'optuna.db'}", attrs["study"], attrs, rows)
    return folder


CYCLES = 4  # of the recorded study


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    """A results folder holding an S-curve record as its own optuna.db (copy it to write in it)."""
    return recorded(tmp_path_factory.mktemp("calib") / "synth", *record(s_curve, cycles=CYCLES, grid=SMALL))


def copied(study_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "synth"
    shutil.copytree(study_dir, out)
    return out


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# ----------------------------------------------------------------------------- the fit


def test_a_folder_that_cannot_be_written_is_one_line(fitted, tmp_path):
    from oracle.errors import OracleError

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(OracleError, match=f"cannot write the calibration in {blocked / 'cal'}: "):
        write_calibration(fitted, blocked / "cal")


def test_the_vectorized_p_inside_counts_the_same_draws_as_the_direct_test():
    rng = np.random.default_rng(7)
    acc = 0.9 - 0.05 * (np.log10(np.array(GRID)) + 1.2)[:, None] ** 2 + 0.004 * rng.standard_normal((10, 3))
    rows = [_run("oracle", s, 0, v, float(acc[i, s]), f"r{i}{s}", None) for i, v in enumerate(GRID) for s in range(3)]
    table = round_table(rows, [0, 1, 2])
    j = judge(table, grid=GRID, tolerance=0.002)
    assert j.sigma > 0 and len(j.members) >= 2
    xs = np.geomspace(0.002, 1.5, 400)
    # The direct test: every draw's judged interval against every max_lr.
    lows = [v if i == 0 else geometric_midpoint(GRID[i - 1], v) for i, v in enumerate(GRID)]
    highs = [v if i == 9 else geometric_midpoint(v, GRID[i + 1]) for i, v in enumerate(GRID)]
    # sigma drawn from its scaled-inverse-chi-square posterior, then the means
    draws = np.random.default_rng(2212_06144)
    sigma = j.sigma * np.sqrt(j.dof / draws.chisquare(j.dof, 2000))
    drawn = table.means[None, :] + (sigma / math.sqrt(3))[:, None] * draws.standard_normal((2000, 10))
    member = at_least(drawn, drawn.max(axis=1, keepdims=True) - j.delta)
    first, last = member.argmax(axis=1), 9 - member[:, ::-1].argmax(axis=1)
    direct = [float(((np.array(lows)[first] <= x) & (x <= np.array(highs)[last])).mean()) for x in xs]
    many = IntervalDraws.of(j, table, grid=GRID).share(xs)
    assert many.tolist() == direct
    assert [p_inside(j, table, x, grid=GRID) for x in xs[::40]] == direct[::40]
    assert 0 < min(d for d in direct if d > 0) < 1  # the draws do differ


def test_calibrate_recovers_a_known_s_curve(s_record, fitted):
    rows, attrs = s_record
    assert fitted.fit == {"judged": 6, "inside": 6, "outside": 0, "uncertain": 0, "fraction_inside": 1.0}
    assert all(r["verdict"] == "inside" for r in fitted.per_cycle)
    # The curve the Oracle follows scores nearly every draw inside, and the fit at least as much.
    ts = targets(oracle_rounds(rows_frame(rows), attrs, [0, 1, 2], list(range(6)), tolerance=0.005),
                 [0, 1, 2], tolerance=0.005)
    true_sum, _ = objective(ts, [s_curve(t.cycle) for t in ts])
    assert [t.cycle for t in ts] == list(range(6)) and true_sum > 5.9
    assert fitted.sum_p_inside >= true_sum
    # It rises like the truth: the calibrated max_lr at the last cycle is > 10x the first.
    curve = [r["max_lr"] for r in fitted.per_cycle]
    assert curve[-1] > 10 * curve[0] and all(b >= a for a, b in zip(curve, curve[1:]))
    # The study's own SILO (a curve from 0.03 to 0.13) is judged the same way, beside it.
    assert fitted.study_silo["settings"] == SILO
    assert fitted.study_silo["fit"]["inside"] < 6


def test_a_constant_optimum_gives_alpha_near_zero():
    c = calibrate_rows(*record(lambda q: GRID[5]))  # on a grid value: the Oracle's winner never moves
    assert {r["oracle_max_lr"] for r in c.per_cycle} == {GRID[5]}
    s = c.settings
    assert s.alpha < 1e-3 * s.offset, s
    curve = [r["max_lr"] for r in c.per_cycle]
    assert max(curve) / min(curve) < 1.001
    assert c.fit["inside"] == c.fit["judged"] == 6
    assert s.offset == pytest.approx(GRID[5], rel=1e-3)


def test_calibrate_is_deterministic(s_record, fitted):
    again = calibrate_rows(*s_record)
    assert json.dumps(again.to_json(), sort_keys=True) == json.dumps(fitted.to_json(), sort_keys=True)


def test_held_out_seeds_are_disjoint_from_the_fit():
    # Seed 2's own optimum is 6x higher: the held-out rounds disagree with the fit's.
    rows, attrs = record(s_curve, shifted={2: 6.0})
    c = calibrate_rows(rows, attrs, holdout_seeds=1)
    assert c.fit_seeds == (0, 1) and c.held_out_seeds == (2,)
    # The fit never saw seed 2: it equals the fit of a record with seeds 0 and 1 only.
    alone = calibrate_rows(*record(s_curve, seeds=(0, 1), shifted={2: 6.0}))
    assert c.settings == alone.settings and c.sum_p_inside == alone.sum_p_inside
    assert [r["verdict"] for r in c.per_cycle] == [r["verdict"] for r in alone.per_cycle]
    # ... and the check is on seed 2 alone: its own winners (one seed: a point estimate).
    rounds_2 = {r["cycle"]: r for r in c.per_cycle}
    for q in range(6):
        mine = [r for r in rows if r["arm"] == "oracle" and r["cycle"] == q and r["seed"] == 2]
        best = max(mine, key=lambda r: r["val_acc"])["max_lr"]
        assert rounds_2[q]["held_out_oracle_max_lr"] == best
        assert rounds_2[q]["held_out_p_inside"] in (0.0, 1.0)
    assert any(r["held_out_oracle_max_lr"] != r["oracle_max_lr"] for r in c.per_cycle)
    assert c.held_out["judged"] == 6 and c.held_out["inside"] < c.fit["inside"]
    assert c.line().endswith(f"inside {c.fit['inside']} of 6 cycles (held out: {c.held_out['inside']} of 6)")


def test_unusable_records_are_one_message():
    rows, attrs = record(s_curve, cycles=1)
    with pytest.raises(OracleError, match="1 judged cycle"):
        calibrate_rows(rows, attrs)
    rows, attrs = record(s_curve, cycles=3)
    silo_only = [r for r in rows if r["arm"] == "silo"]
    with pytest.raises(OracleError, match="no oracle arm"):
        calibrate_rows(silo_only, {**attrs, "arms": ["silo"]})
    for n in (3, 4, -1):
        with pytest.raises(OracleError, match=r"--holdout-seeds: must be an int from 0 to 2"):
            calibrate_rows(rows, attrs, holdout_seeds=n)


# ----------------------------------------------------------------------------- the command


def test_the_command_writes_the_calibration_and_prints_one_line(study_dir, tmp_path, capsys):
    out = copied(study_dir, tmp_path)
    assert main(["calibrate", str(out), "--holdout-seeds", "1"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("calibrated SILO: offset ")
    assert re.search(rf"inside \d of {CYCLES} cycles \(held out: \d of {CYCLES}\)$", printed[0])
    body = json.loads((out / CALIBRATION_FILE).read_text())
    assert body == read_calibration(out / CALIBRATION_FILE)
    assert body["fit"]["seeds"] == [0, 1] and body["held_out"]["seeds"] == [2]
    assert [r["cycle"] for r in body["per_cycle"]] == list(range(CYCLES))
    assert {"max_lr", "verdict", "p_inside", "held_out_verdict", "study_silo_verdict"} <= set(body["per_cycle"][0])
    assert body["source"]["study"] == "synth"
    block = yaml.safe_load((out / YAML_FILE).read_text())
    assert block == {"arms": {"silo": body["settings"]}}
    assert str(out / CALIBRATION_FILE) in (out / YAML_FILE).read_text()  # how to run it as an arm
    assert not list(out.glob("*.tmp"))
    # --storage/--study read any storage, and write into DIR.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert main(["calibrate", str(elsewhere), "--storage", f"sqlite:///{out / 'optuna.db'}", "--study", "synth",
                 "--holdout-seeds", "1"]) == 0
    assert json.loads((elsewhere / CALIBRATION_FILE).read_text())["settings"] == body["settings"]


@pytest.mark.parametrize("case", ["no folder", "no record", "no oracle", "one cycle", "holdout 3", "holdout -1"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, study_dir, tmp_path, capsys):
    rows, attrs = record(s_curve, cycles=3, grid=SMALL)
    folder, args = tmp_path / "d", []
    if case == "no folder":
        folder = tmp_path / "missing"
    elif case == "no record":
        folder.mkdir()
    elif case == "no oracle":
        recorded(folder, [r for r in rows if r["arm"] == "silo"], {**attrs, "arms": ["silo"]})
    elif case == "one cycle":
        recorded(folder, *record(s_curve, cycles=1, grid=SMALL))
    else:
        folder = copied(study_dir, tmp_path)
        args = ["--holdout-seeds", case.split()[1]]
    before = sorted(p.name for p in folder.iterdir()) if folder.exists() else None
    assert main(["calibrate", str(folder), *args]) == 2
    line = one_error_line(capsys)
    says = {"no folder": "no such folder", "no record": "no Optuna record here", "no oracle": "no oracle arm",
            "one cycle": "judged cycle", "holdout 3": "--holdout-seeds", "holdout -1": "--holdout-seeds"}[case]
    assert says in line, line
    assert (sorted(p.name for p in folder.iterdir()) if folder.exists() else None) == before


# ----------------------------------------------------------------------------- the report


_PURPLE = """<script>
window.addEventListener("load", () => {
  const img = document.getElementById("fig-landscape");
  const c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext("2d"); g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let purple = 0;
  for (let i = 0; i < d.length; i += 4)
    if (Math.abs(d[i] - 0x5e) < 14 && Math.abs(d[i + 1] - 0x3c) < 14 && Math.abs(d[i + 2] - 0x99) < 14) purple++;
  const t = document.getElementById("calibration");
  document.body.setAttribute("data-check", JSON.stringify({
    loaded: img.complete && img.naturalWidth > 0, purple: purple,
    rows: t ? Array.from(t.tBodies[0].rows).map(r => r.cells[0].textContent) : [],
  }));
});
</script>"""


def _browser_check(page: Path, tmp_path: Path) -> dict:
    probe = tmp_path / f"probe-{page.parent.name}.html"
    probe.write_text(page.read_text().replace("</body>", _PURPLE + "</body>"))
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--no-first-run",
         "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
         "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'data-check="([^"]*)"', proc.stdout)
    assert found, "the check script did not run"
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.integration  # starts headless Chromium
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed: apt-get install chromium")
def test_the_report_draws_the_calibrated_curve_beside_silo(study_dir, tmp_path, capsys):
    plain = copied(study_dir, tmp_path / "plain")
    assert main(["report", str(plain)]) == 0
    out = copied(study_dir, tmp_path / "cal")
    assert main(["calibrate", str(out), "--holdout-seeds", "1"]) == 0
    assert main(["report", str(out)]) == 0
    capsys.readouterr()
    body = json.loads((out / CALIBRATION_FILE).read_text())
    md = (out / "report.md").read_text()
    assert "## Calibrated SILO" in md and "## Calibrated SILO" not in (plain / "report.md").read_text()
    settings = body["settings"]
    assert f"| offset | 0.03 | {settings['offset']:.4g} |" in md
    assert (f"| inside, fit seeds (0, 1) | {body['study_silo']['fit']['inside']} of {CYCLES}" in md
            and f"| {body['fit']['inside']} of {CYCLES} (" in md)
    assert "inside, held-out seeds (2)" in md

    with_cal, without = _browser_check(out / "report.html", tmp_path), _browser_check(plain / "report.html", tmp_path)
    assert with_cal["loaded"] and without["loaded"]
    assert with_cal["rows"] == ["offset", "alpha", "beta", "delay", "inside, fit seeds (0, 1)",
                                "inside, held-out seeds (2)"]
    assert without["rows"] == []
    assert with_cal["purple"] > 300 and without["purple"] < with_cal["purple"] / 10, (with_cal, without)


def test_a_calibration_of_another_study_is_not_drawn(study_dir, tmp_path, capsys):
    out = copied(study_dir, tmp_path)
    assert main(["calibrate", str(out)]) == 0
    body = json.loads((out / CALIBRATION_FILE).read_text())
    (out / CALIBRATION_FILE).write_text(json.dumps({**body, "study": "other"}))
    assert main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "## Calibrated SILO" not in md and "is a calibration of study 'other'" in md


# ----------------------------------------------------------------------------- the arm


def _study_with(calibrated: dict):
    data = copy.deepcopy(yaml.safe_load((ROOT / "studies" / "smoke.yaml").read_text()))
    data["pruning"]["rate"] = RATE
    data["arms"]["silo_calibrated"] = calibrated
    return parse_study(data)


def test_the_calibrated_arm_runs_the_fitted_curve(fitted, tmp_path):
    write_calibration(fitted, tmp_path)
    study = _study_with({"from": str(tmp_path / CALIBRATION_FILE)})
    assert "silo_calibrated" in study.arm_names()
    fitted_curve = [r["max_lr"] for r in fitted.per_cycle]
    assert [study.schedule("silo_calibrated").max_lr(q) for q in range(study.cycles)] == fitted_curve[:study.cycles]
    assert parse_study(study.to_mapping()) == study  # the resolved study lists the settings it read
    assert study.to_mapping()["arms"]["silo_calibrated"]["offset"] == fitted.settings.offset


def test_the_calibrated_arm_shares_runs_with_silo_by_run_identity(tmp_path):
    # A calibration equal to the study's SILO: both arms train the very same runs.
    (tmp_path / "same.json").write_text(json.dumps({"settings": {"offset": 0.03, "alpha": 0.1, "beta": 5.0,
                                                                 "delay": 1}}))
    study = _study_with({"from": str(tmp_path / "same.json")})
    parent = {"silo": None, "silo_calibrated": None}
    for q in range(study.cycles):
        ids = {arm: RunKey(study.task_for_arm(arm), seed=0, cycle=q, max_lr=study.schedule(arm).max_lr(q),
                           parent_run_id=parent[arm]).run_id for arm in parent}
        assert ids["silo"] == ids["silo_calibrated"]
        parent = ids


@pytest.mark.parametrize("content, says", [
    (None, "no such file"),
    ("not json", "unreadable"),
    ({"nothing": 1}, "settings: missing"),
    ({"settings": {"offset": 0.03, "alpha": 0.1, "beta": 0, "delay": 1}}, "settings.beta: must be a finite number > 0"),
    ({"settings": {"offset": 0.03, "alpha": 0.1, "beta": 5, "delay": 1.5}}, "settings.delay: must be an int >= 0"),
])
def test_a_bad_calibration_file_names_the_field(content, says, tmp_path):
    path = tmp_path / "c.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(StudyError) as err:
        _study_with({"from": str(path)})
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith(f"arms.silo_calibrated.from: {path}") and says in err.value.problems[0]


def test_a_setting_that_contradicts_the_file_is_named(fitted, tmp_path, capsys):
    write_calibration(fitted, tmp_path)
    with pytest.raises(StudyError) as err:
        _study_with({"from": str(tmp_path / CALIBRATION_FILE), "beta": 99.0})
    assert err.value.problems == [f"arms.silo_calibrated.beta: 99.0 differs from {fitted.settings.beta!r} in "
                                  f"{tmp_path / CALIBRATION_FILE}: give only `from`"]
    # And on the command line: exit 2, one line per problem.
    data = copy.deepcopy(yaml.safe_load((ROOT / "studies" / "smoke.yaml").read_text()))
    data["arms"]["silo_calibrated"] = {"from": str(tmp_path / "missing.json")}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    assert main(["validate", str(tmp_path / "s.yaml")]) == 2
    assert one_error_line(capsys) == f"error: arms.silo_calibrated.from: {tmp_path / 'missing.json'}: no such file"
