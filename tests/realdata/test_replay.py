"""The loop driver's own rules, without running flows: which day a feed object belongs to, how a
day's outcome is recorded, and that a replay refuses settings the flows would not use."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from driftloop.replay import DayOutcome, TrainingRun, day_of_key, feed_by_day, replay, summarise
from driftloop.settings import load_settings
from driftloop.usecase import load_usecase
from tasks.storage import LocalStorage


@pytest.mark.parametrize(
    ("key", "day"),
    [
        ("usage/2026-01-05.csv", date(2026, 1, 5)),
        ("departures/2013-10-07-reexport.csv", date(2013, 10, 7)),
        ("activity/week-2026-01-04.parquet", date(2026, 1, 4)),
        ("archive/2025-12-31/births/1977-10-01.csv", date(1977, 10, 1)),  # the last one counts
        ("births/1977-09-31.csv", None),  # no such day
        ("births/1977-09-31-2026-02-03.csv", date(2026, 2, 3)),
        ("README.md", None),
    ],
)
def test_the_day_of_a_feed_object_is_the_last_date_in_its_key(key: str, day: date | None) -> None:
    assert day_of_key(key) == day


def test_feed_objects_are_grouped_by_day(tmp_path: Path) -> None:
    feed = LocalStorage(tmp_path)
    for key in ("b/2026-01-02.csv", "a/2026-01-02.csv", "a/2026-01-01.csv", "notes.txt"):
        feed.write_bytes(key, b"x\n")
    assert feed_by_day(feed) == {
        date(2026, 1, 1): ["a/2026-01-01.csv"],
        date(2026, 1, 2): ["a/2026-01-02.csv", "b/2026-01-02.csv"],
    }


def test_an_outcome_survives_its_record() -> None:
    outcome = DayOutcome(
        day=date(2013, 10, 15),
        objects=["departures/2013-10-15.csv"],
        rows_validated=977,
        rows_quarantined=4,
        champion="1",
        scored=700,
        drift_status="drift",
        drift_detected=True,
        drift_severity="severe",
        drift_signals=["prediction-drift"],
        drift_drifted=["prediction"],
        trainings=[
            TrainingRun("training.due", "new-labels", "2013-10-15", True, None, "3", False),
            TrainingRun("drift.detected", "drift", "2013-10-15", False, deferred="already"),
        ],
    )
    again = DayOutcome.from_dict(outcome.to_dict())
    assert again == outcome
    assert [t.version for t in again.trained] == ["3"]
    assert [t.deferred for t in again.deferred] == ["already"]
    counts = summarise([again, DayOutcome(day=date(2013, 10, 16), champion="1")])
    assert counts["alarm_days"] == ["2013-10-15"]
    assert (counts["trained"], counts["promoted"], counts["rejected"], counts["deferred"]) == (
        1,
        0,
        1,
        1,
    )


def test_a_replay_refuses_settings_the_flows_would_not_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(tmp_path / "lake"))
    settings = load_settings()
    usecase = load_usecase(settings.usecase)
    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(tmp_path / "another"))
    with pytest.raises(ValueError, match="DRIFTLOOP_DATA_ROOT"):
        replay(
            settings, usecase, LocalStorage(tmp_path / "feed"), date(2026, 1, 1), date(2026, 1, 2)
        )
    assert not (tmp_path / "lake").exists() and not (tmp_path / "another").exists()
