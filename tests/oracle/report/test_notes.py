"""The analysis' findings in words (oracle.report.notes): the judge states findings with their
numbers and writes no sentence; every finding has its words, put where the files keep them."""

from __future__ import annotations

import dataclasses

import pytest

from oracle.judge.analysis import tabulate
from oracle.judge.facts import Fact, Finding
from oracle.report.notes import STOPPED_WHY, question, said, worded
from oracle.store.record import study_attrs
from tests._fake_record import fake_rows, fake_study


@pytest.mark.parametrize("finding", list(Finding))
def test_every_finding_has_its_words(finding):
    fact = Fact(finding, cycle=2, cycles=(2, 3), values=(0.05, 0.1), labels=("diverged",), arm="silo",
                count=4, counts=(("failed", 3),), numbers=(0.01, 2.0))
    words = said(fact)
    assert isinstance(words, str) and len(words.split()) >= 3, words


def test_a_findings_numbers_are_said_as_recorded():
    assert said(Fact(Finding.PENDING, values=(0.05, 0.1))) == "not yet judged: max_lr 0.05, 0.1 pending"
    assert said(Fact(Finding.ORACLE_STOPPED, cycle=1, cycles=(1, 2))) == (
        f"The Oracle stopped at cycle 1 ({STOPPED_WHY}), as its rule says: it has no winner at cycle(s) 1, 2.")
    assert said(Fact(Finding.BAD_RUNS, arm="oracle", counts=(("diverged", 2), ("failed", 1)))).startswith(
        "oracle: 2 diverged, 1 failed run(s);")
    assert said(Fact(Finding.DROPPED_ARMS, count=5, counts=(("lr_warmup", 5),))).startswith(
        "5 run(s) in the record belong to arm(s) no longer in this study (5 of lr_warmup)")
    assert question(0.01) == ("is SILO's max_lr within 1 point of the best max_lr's expected validation "
                              "accuracy?")
    assert question(0.005).startswith("is SILO's max_lr within 0.5 points")


def test_the_judge_writes_no_words_and_worded_fills_exactly_their_places():
    study = fake_study()
    rows = fake_rows(study)
    last = max(r["cycle"] for r in rows)
    top = max(r["max_lr"] for r in rows if r["arm"] == "oracle")
    # one seed has not run the Oracle's top value of the last cycle yet: pending
    rows = [r for r in rows if not (r["arm"] == "oracle" and r["cycle"] == last and r["max_lr"] == top
                                    and r["seed"] == 1)]
    bare = tabulate(rows, study_attrs(study), superseded=2)
    assert set(bare.verdicts["note"]) == {""} and bare.messages == []
    assert bare.summary["messages"] == [] and bare.summary["verdict"]["question"] is None
    assert Fact(Finding.SUPERSEDED, count=2) in bare.facts
    assert any(f.finding in (Finding.PENDING, Finding.PROVISIONAL) for fs in bare.cycle_facts.values() for f in fs)

    a = worded(bare)
    assert a.messages == [said(f) for f in bare.facts] == a.summary["messages"]
    assert "2 older trial(s) in the storage were superseded" in " ".join(a.messages)
    for q, note in zip(a.verdicts["cycle"], a.verdicts["note"]):
        assert note == "; ".join(said(f) for f in bare.cycle_facts[int(q)])
    assert a.summary["verdict"]["question"] == question(bare.summary["tolerance"])
    # nothing but the words changed, and the keys keep their places (summary.json byte for byte)
    assert list(a.summary) == list(bare.summary) and list(a.summary["verdict"]) == list(bare.summary["verdict"])
    assert a.verdicts.drop(columns="note").equals(bare.verdicts.drop(columns="note"))
    for name in ("arms", "cost", "landscape", "rows"):
        assert getattr(a, name) is getattr(bare, name)
    assert dataclasses.replace(bare, verdicts=a.verdicts, summary=a.summary, messages=a.messages) == a


def test_why_the_oracle_stopped_is_said_in_the_progress():
    study = fake_study()
    rows = [dict(r, status="failed") if r["arm"] == "oracle" and r["cycle"] == 1 else r
            for r in fake_rows(study)]
    bare = tabulate(rows, study_attrs(study))
    assert bare.summary["progress"]["oracle_stopped"] == {"cycle": 1}
    a = worded(bare)
    assert a.summary["progress"]["oracle_stopped"] == {"cycle": 1, "why": STOPPED_WHY}
    assert Fact(Finding.STOPPED_HERE) in bare.cycle_facts[1]
    assert a.verdicts.loc[a.verdicts["cycle"] == 1, "note"].item().startswith(f"the Oracle stopped here: {STOPPED_WHY}")
