"""The record's study settings (oracle.store.settings): written by the record, read back through
StudySettings.from_attrs in every form a record has been written in, and refused, in one line
naming the field, in a form no writer wrote."""

from __future__ import annotations

import optuna
import pandas as pd
import pytest

from oracle.errors import OracleError
from oracle.report.build import analysis_of
from oracle.store.record import (
    SETTINGS,
    USER_ATTRS,
    frozen_trial,
    load_record,
    optuna_name,
    record_rows,
    study_attrs,
    study_settings,
)
from oracle.store.settings import StudySettings
from oracle.store.storage import quiet_optuna
from tests._fake_record import NAME, fake_rows, fake_study


@pytest.fixture(scope="module")
def study():
    return fake_study()


def first_form(attrs: dict) -> dict:
    """The settings as the first record (2026-11) wrote them: no refine, search or
    task_identity, and noise_k always a number."""
    old = {k: v for k, v in attrs.items() if k not in ("refine", "search", "task_identity")}
    return old | {"noise_k": 2.0}


def write_pre_settings_record(url: str, attrs: dict, rows: list[dict]) -> None:
    """A record as written before `<study>/@study` existed: every arm's Optuna study carries
    the settings (and its own arm name) as user attrs."""
    settings = StudySettings.from_attrs(attrs)
    storage = optuna.storages.RDBStorage(url)
    with quiet_optuna():
        for arm in attrs["arms"]:
            ostudy = optuna.create_study(storage=storage, study_name=optuna_name(NAME, arm), direction="maximize")
            for key, value in (attrs | {"arm": arm}).items():
                ostudy.set_user_attr(key, value)
            ostudy.add_trials([frozen_trial(r, settings) for r in rows if r["arm"] == arm])


def test_the_settings_written_are_the_attrs_the_record_has_always_kept(study):
    attrs = study_attrs(study)
    assert list(attrs) == ["schema", "study", "arms", "cycles", "seeds", "grid", "refine", "search", "tolerance",
                           "noise_k", "prune_rate", "planned_max_lr", "silo_max_lr", "task_identity", "study_yaml",
                           "recorded_with"]
    assert attrs["search"] == "exhaustive" and attrs["arms"] == ["oracle", "silo", "lr_rewinding"]
    assert StudySettings.from_attrs(attrs) == study_settings(study)  # a round trip loses nothing
    assert StudySettings.from_attrs(attrs).to_attrs() == attrs


def test_a_record_of_the_first_layout_reads_and_is_judged_as_the_current_one(study, tmp_path):
    rows = fake_rows(study)
    attrs = study_attrs(study)
    old_url, new_url = f"sqlite:///{tmp_path / 'old.db'}", f"sqlite:///{tmp_path / 'new.db'}"
    write_pre_settings_record(old_url, first_form(attrs), rows)
    record_rows(new_url, NAME, attrs, rows)
    with quiet_optuna():
        assert optuna_name(NAME, SETTINGS) not in optuna.get_all_study_names(old_url)

    old, new = load_record(old_url, NAME), load_record(new_url, NAME)
    s = old.settings
    assert (s.arms, s.cycles, s.seeds, s.grid) == (("oracle", "silo", "lr_rewinding"), 3, (0, 1),
                                                   (0.01, 0.03, 0.1, 0.3))
    assert (s.refine, s.beam, s.task_identity, s.noise_k) == (0, None, None, 2.0)  # the first form's gaps
    assert s.silo_plan == new.settings.silo_plan and len(s.silo_plan) == 3

    before, now = analysis_of(old.rows, s), analysis_of(new.rows, new.settings)
    verdicts = ["oracle_max_lr", "judged_low", "judged_high", "silo_max_lr", "p_inside", "verdict"]
    pd.testing.assert_frame_equal(before.verdicts[verdicts], now.verdicts[verdicts])
    assert list(before.verdicts["verdict"]) == ["inside", "inside", "outside"]
    # the first form's noise_k is the retired rule's: the analysis says so first, and only then
    assert before.messages[0].startswith("analysis.noise_k (2) is no longer used")
    assert before.messages[1:] == now.messages


def test_a_record_with_a_beam_and_without_prune_rate_reads_both_from_their_older_forms(study):
    attrs = study_attrs(study)
    attrs = {k: v for k, v in attrs.items() if k != "prune_rate"} | {"search": {"beam": 2}}
    s = StudySettings.from_attrs(attrs)
    assert s.beam == 2 and s.prune_rate == pytest.approx(study.pruning.rate)
    assert StudySettings.from_attrs({"search": {"beam": 0}}).beam is None  # read as exhaustive, as before
    assert StudySettings.from_attrs({}).cycles is None and StudySettings.from_attrs({"cycles": 0}).cycles is None


@pytest.mark.parametrize("change, field", [
    ({"search": "random"}, "search"),
    ({"search": {"beam": -1}}, "search"),
    ({"seeds": ["one", 2]}, "seeds.0"),
    ({"cycles": "three"}, "cycles"),
    ({"planned_max_lr": {"silo": "fast"}}, "planned_max_lr.silo"),
    ({"tolerance": [0.01]}, "tolerance"),
])
def test_a_form_no_writer_wrote_is_one_line_naming_the_field(study, change, field):
    with pytest.raises(OracleError) as err:
        StudySettings.from_attrs(study_attrs(study) | change)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"the record's study settings: {field}"), message


def test_unknown_keys_from_a_newer_writer_are_read_past(study):
    attrs = study_attrs(study) | {"a_setting_from_the_future": 1}
    assert StudySettings.from_attrs(attrs) == study_settings(study)


def test_the_trial_attrs_are_unchanged_by_the_settings_model(study):
    """The trials' user attrs are the row's columns, whatever the settings hold."""
    row = fake_rows(study)[0]
    trial = frozen_trial(row, study_settings(study))
    assert set(trial.user_attrs) <= set(USER_ATTRS) | {"curve"}
    assert trial.distributions["cycle"].high == study.cycles - 1
