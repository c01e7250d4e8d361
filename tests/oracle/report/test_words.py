"""The report's words (oracle.report.words): the number formats every table and figure writes
with, a missing number as a dash, and the verdict's paragraph where a study lacks an arm."""

from __future__ import annotations

import math

from oracle.report.words import delta_points, headline, lr, pct, points, points_interval, search_text, verdict_text


def test_a_number_is_written_one_way_and_a_missing_one_as_a_dash():
    assert (pct(0.1234), points(0.012), points(-0.004), lr(0.0316228)) == ("12.3%", "+1.2 points", "-0.4 points",
                                                                           "0.03162")
    for say in (pct, points, lr):
        assert say(None) == say(math.nan) == "–"
    assert points_interval(-0.01, 0.02) == "[-1.0, +2.0]" and points_interval(math.nan, math.nan) == "no interval"
    assert (delta_points({"tolerance": 0.01}), delta_points({"tolerance": 0.005})) == ("1 point", "0.5 points")


def test_the_search_is_said_with_what_a_beam_saved():
    assert search_text(None) == search_text({"name": "grid"}) == "exhaustive (every grid value in every cycle)"
    beam = {"name": "beam", "beam": 2, "grid_runs": 24, "grid_runs_trained": 10, "saved_runs": 14}
    assert search_text(beam) == "beam of 2: trained 10 of the 24 grid runs of its cycles, 14 saved (58%)"


def test_a_study_without_silo_or_the_oracle_has_no_verdict_and_no_headline():
    assert verdict_text({"arms": ["lr_rewinding"]}).startswith("This study has neither a silo nor an oracle arm")
    assert verdict_text({"arms": ["oracle", "lr_rewinding"]}).startswith("This study has no silo arm")
    assert verdict_text({"arms": ["silo", "lr_rewinding"]}).startswith("This study has no oracle arm")
    assert headline({"arms": ["oracle", "lr_rewinding"]}, []) is None
    assert headline({"arms": ["oracle", "silo"]}, []).startswith("The Oracle has no best max_lr yet")
