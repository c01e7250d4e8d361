"""`silo-oracle compare`: the smoke study and a variant of it, swept for real on one local Ray,
side by side; folders and storages alike; in progress, differing seeds, no silo arm and
unreadable sources; compare.html opened in headless Chromium."""

from __future__ import annotations

import csv
import html
import io
import json
import re

import pandas as pd
import pytest
import ray
import yaml

from oracle.cli import main
from oracle.store.record import record_study, study_attrs
from oracle.study import load_study
from oracle.sweep.driver import run_sweep
from tests.oracle.report.test_report import CHROMIUM, _chromium

pytestmark = pytest.mark.integration  # every test here starts Ray, a server or a driver


@pytest.fixture(scope="module")
def swept(tmp_path_factory, smoke_mapping):
    """The smoke study, and a variant (2 cycles, rewind to init, seeds 0 and 2), each swept once."""
    ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False,
             logging_level="ERROR", log_to_driver=False)
    folder = tmp_path_factory.mktemp("compare")
    variant = dict(smoke_mapping, name="variant", seeds=[0, 2])
    variant["pruning"] = dict(smoke_mapping["pruning"], cycles=2, rewind="init")
    out = {}
    try:
        for name, data in (("smoke", smoke_mapping), ("variant", variant)):
            path = folder / f"{name}.yaml"
            path.write_text(yaml.safe_dump(data))
            out[name] = (load_study(path), folder / name)
            assert run_sweep(out[name][0], out=out[name][1], stream=io.StringIO()).done
    finally:
        ray.shutdown()
    return out


def _csv(path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _results(folder) -> list[dict]:
    """results.csv's rows, typed, as the ledger hands them to the record."""
    df = pd.read_csv(folder / "results.csv")
    return [{k: (None if isinstance(v, float) and v != v and k.endswith("run_id") else v) for k, v in r.items()}
            for r in df.to_dict("records")]


def test_compare_puts_the_smoke_study_and_its_variant_side_by_side(swept, tmp_path, capsys):
    smoke_dir, variant_dir = swept["smoke"][1], swept["variant"][1]
    out = tmp_path / "cmp"
    assert main(["compare", str(smoke_dir), str(variant_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"compare: {out / 'compare.html'}" in printed and "seeds differ" in printed
    rows = {r["study"]: r for r in _csv(out / "compare.csv")}
    assert set(rows) == {"smoke", "variant"}
    for name, folder in (("smoke", smoke_dir), ("variant", variant_dir)):
        summary = json.loads((folder / "summary.json").read_text())
        r = rows[name]
        assert r["network"] == "mnist1d_cnn" and r["dataset"] == "mnist1d" and r["status"] == "complete"
        assert int(r["judged"]) == summary["verdict"]["judged"] and int(r["inside"]) == summary["verdict"]["inside"]
        last = {(p["arm"], p["reference"]): p["last"] for p in summary["comparisons"]["pairs"]}
        assert float(r["lr_rewinding_diff"]) == pytest.approx(last[("lr_rewinding", "silo")]["mean_diff"])
        assert float(r["lr_warmup_low"]) == pytest.approx(last[("lr_warmup", "silo")]["t_low"])
        assert r["lr_warmup_reading"] == last[("lr_warmup", "silo")]["reading"]
        assert float(r["oracle_gap_diff"]) == pytest.approx(summary["gap"]["final_gap_test_acc"])
        ratio = summary["cost_ratio_oracle_to_silo"]["run_seconds"]
        assert float(r["cost_ratio_oracle_to_silo"]) == pytest.approx(ratio)
        arms = pd.read_csv(folder / "arms.csv")
        silo = arms[arms["arm"] == "silo"].sort_values("cycle")
        assert float(r["silo_test_acc_final"]) == pytest.approx(silo["test_acc_mean"].iloc[-1])
        assert float(r["final_sparsity"]) == pytest.approx(silo["sparsity"].iloc[-1])
        # the common sparsity is the variant's last (cycle 1: 20 %), the smoke's cycle 1 too
        assert float(r["common_sparsity"]) == pytest.approx(0.2, abs=1e-3)
        assert float(r["silo_test_acc_common"]) == pytest.approx(silo["test_acc_mean"].iloc[1])
    assert rows["smoke"]["seeds"] == "0 1" and rows["variant"]["seeds"] == "0 2"
    assert rows["variant"]["pruning"] == "global_magnitude 0.2/cycle, rewind init"
    md = (out / "compare.md").read_text()
    # the sweep carried every run's curve from its trial to the record (smoke: 1 epoch, one point)
    import optuna
    trials = optuna.load_study(study_name="smoke/oracle", storage=f"sqlite:///{smoke_dir / 'optuna.db'}").get_trials()
    ok = [t for t in trials if t.user_attrs["status"] == "ok"]
    assert ok and all(t.intermediate_values == {1: t.user_attrs["val_acc"]} for t in ok)
    assert (smoke_dir / "curves.png").stat().st_size > 5_000
    assert "| smoke | mnist1d_cnn |" in md and "The studies' seeds differ (smoke: 0 1; variant: 0 2)" in md


def test_storages_and_folders_alike_and_a_study_in_progress(swept, tmp_path, capsys):
    smoke, smoke_dir = swept["smoke"]
    # a study still running: part of its runs recorded, in a storage of its own
    rows = _results(smoke_dir)
    url = f"sqlite:///{tmp_path / 'partial.db'}"
    record_study(smoke, [r for r in rows if int(r["cycle"]) == 0], url)
    out = tmp_path / "cmp"
    assert main(["compare", "--storage", url, "--study", "smoke", str(smoke_dir), "--out", str(out)]) == 0
    assert "still in progress" in capsys.readouterr().out
    got = _csv(out / "compare.csv")
    # folders first, then the storages, each in the order given
    assert [(r["source"], r["status"]) for r in got] == [(str(smoke_dir), "complete"), (f"{url}#smoke", "in progress")]
    assert got[1]["judged"] == "1" and float(got[1]["final_sparsity"]) == 0.0


def test_bad_sources_are_one_line_exit_2_and_nothing_written(swept, tmp_path, capsys):
    smoke, smoke_dir = swept["smoke"]
    out = tmp_path / "never"
    nosilo = tmp_path / "nosilo.db"
    attrs = study_attrs(smoke) | {"arms": ["oracle", "lr_rewinding"]}
    from oracle.store.record import record_rows
    record_rows(f"sqlite:///{nosilo}", "nosilo",
                attrs, [r for r in _results(smoke_dir) if r["arm"] in ("oracle", "lr_rewinding")])
    cases = [
        ([str(tmp_path)], f"error: {tmp_path}: no Optuna record here"),
        ([str(smoke_dir), "--storage", f"sqlite:///{nosilo}", "--study", "nosilo"],
         f"error: sqlite:///{nosilo}#nosilo: study nosilo has no silo arm"),
        (["--storage", f"sqlite:///{nosilo}"], "error: --storage and --study come in pairs"),
        ([], "error: give studies to compare"),
        (["--storage", f"sqlite:///{nosilo}", "--study", "other"],
         f"error: sqlite:///{nosilo}#other: no study 'other'"),
    ]
    for argv, says in cases:
        assert main(["compare", *argv, "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(says), (argv, err)
        assert not out.exists()
    # An --out that cannot be a folder (a file is there): one line, from the CLI and the API alike.
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert main(["compare", str(smoke_dir), "--out", str(blocked / "cmp")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot write the comparison in {blocked / 'cmp'}: "), err
    import oracle
    from oracle.errors import OracleError

    with pytest.raises(OracleError, match="cannot write the comparison in"):
        oracle.compare([smoke_dir], out=blocked / "cmp")


_CHECK = """<script>
window.addEventListener("load", () => {
  const t = document.getElementById("compare");
  document.body.setAttribute("data-check", JSON.stringify({
    scripts: document.scripts.length, links: document.querySelectorAll("link, img").length,
    headers: Array.from(t.tHead.rows[0].cells).map(c => c.textContent),
    studies: Array.from(t.tBodies[0].rows).map(r => r.cells[0].textContent),
    width: t.getBoundingClientRect().width,
  }));
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed: apt-get install chromium")
def test_compare_html_opens_in_a_browser(swept, tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", str(swept["smoke"][1]), str(swept["variant"][1]), "--out", str(out)]) == 0
    page = (out / "compare.html").read_text()
    assert "<script" not in page and "<link" not in page and "http" not in page
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", _CHECK + "</body>"))
    dom = _chromium(f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
                    probe.as_uri())
    found = re.search(r'data-check="([^"]*)"', dom)
    assert found, "the check script did not run"
    check = json.loads(html.unescape(found.group(1)))
    assert check["studies"] == ["smoke", "variant"] and check["links"] == 0 and check["scripts"] == 1
    assert check["headers"][-3:] == ["lr_warmup − SILO", "SILO − Oracle", "cost Oracle / SILO"]
    assert "SILO test % at 20.0%" in check["headers"] and check["width"] > 600


def test_studies_that_share_only_the_dense_network_say_so():
    # Prune rates 0.2 and 0.3: the only sparsity both reach is 0 %, the dense network; the
    # column must not read as if a pruned sparsity were compared.
    from oracle.report.build import analyse_record
    from oracle.report.compare import Compared, compare_table, render_table
    from oracle.store.rows import rows_frame
    from tests._fake_record import fake_rows, fake_study

    def analysed(name: str, rate: float):
        study = fake_study()
        rows = [dict(r, sparsity=round(1 - (1 - rate) ** r["cycle"], 6)) for r in fake_rows(study)]
        attrs = dict(study_attrs(study), study=name, prune_rate=rate)
        record = type("R", (), {"rows": rows_frame(rows), "attrs": attrs, "superseded": 0})
        return Compared(name, analyse_record(record))

    df, baselines, notes = compare_table([analysed("gentle", 0.2), analysed("steep", 0.3)])
    assert df["common_sparsity"].tolist() == [0.0, 0.0]
    table = render_table(df, baselines, notes)
    assert "SILO test %, dense (the only common sparsity)" in table.headers
    assert "SILO test % at 0.0%" not in table.headers
    assert "The only sparsity every study reached is the dense network's (0 %)" in table.note
