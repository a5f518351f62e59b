"""The telco churn use case's feature function (``usecases/telco_churn.yaml``,
``features.builder``): one row per customer and day with usage, the customer's profile as of that
day and rolling aggregates over calendar windows ending that day.

A pure function of pandas and numpy (the build, :mod:`tasks.features`, reads the validated rows
and writes what it returns). Its source is part of the build fingerprint: a change here rebuilds
every feature day, and nothing else in the project does.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd

# The features telco_daily_features writes, with the dtypes it needs. Each feature is declared
# once, with its type and description, by the Feast views of feature_repo/views.py; the builder
# does not import Feast, and tests check that these lists equal the views'
# (tests/tasks/test_feature_declarations.py).
PROFILE_COLUMNS = (  # feature view customer_profile
    "plan",
    "contract",
    "tenure_months",
    "region",
    "payment_method",
    "monthly_charge",
)
AGGREGATE_COLUMNS: dict[str, str] = {  # feature view usage_aggregates (and features_asof)
    "minutes_mean_7d": "float64",
    "minutes_mean_30d": "float64",
    "data_gb_mean_7d": "float64",
    "data_gb_mean_30d": "float64",
    "minutes_trend": "float64",
    "data_gb_trend": "float64",
    "dropped_calls_sum_7d": "int64",
    "dropped_call_rate_7d": "float64",
    "support_tickets_sum_30d": "int64",
    "bill_mean_7d": "float64",
    "bill_change_7d_30d": "float64",
    "active_days_30d": "int64",
}
FEATURE_COLUMNS = (
    "customer_id",
    "date",
    "event_timestamp",
    "features_asof",
    *PROFILE_COLUMNS,
    *AGGREGATE_COLUMNS,
)
LOOKBACK_DAYS = 30  # the longest window of telco_daily_features


def telco_daily_features(usage: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """Daily features of every customer with usage on a day in ``[start, end]``.

    ``usage`` holds validated usage rows (one per customer and day) and must cover
    ``[start - 29 days, end]`` for the 30-day windows to be complete; rows outside that range
    are ignored. Returns one row per (customer_id, date) with ``date`` in ``[start, end]`` and a
    usage row that day, sorted by customer_id and date, with the columns
    :data:`FEATURE_COLUMNS`:

    * ``event_timestamp`` and ``features_asof``: ``date + 1 day`` at 00:00 UTC.
    * the profile (plan, contract, tenure_months, region, payment_method, monthly_charge) of the
      day's own row;
    * aggregates over calendar windows ending on (and including) the day: the 7-day window is
      ``[date - 6, date]``, the 30-day window ``[date - 29, date]``. A day without a usage row is
      *absent*, not zero: means are taken over the days with usage in the window, sums add up
      the days with usage, ``active_days_30d`` counts them. Ratios (``*_trend``,
      ``bill_change_7d_30d``: 7-day mean / 30-day mean; ``dropped_call_rate_7d``: dropped calls
      per 100 minutes over 7 days) are NaN where the denominator is 0.

    Only rows dated on or before a feature date enter its features. Duplicate
    (customer_id, date) rows keep the last one in input order. Pure and deterministic: each
    window is summed in a fixed order, so a day's values do not depend on ``start``/``end``.
    """
    start, end = _as_date(start), _as_date(end)
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    if usage.empty:
        return _empty_features(usage)
    base = LOOKBACK_DAYS - 1  # grid column of `start`
    first = start - timedelta(days=base)
    n_out = (end - start).days + 1
    n_days = n_out + base

    # day of every row on a grid starting at `first`; rows outside the grid are ignored
    stamps = pd.to_datetime(usage["date"])
    if stamps.dt.tz is not None:
        stamps = stamps.dt.tz_convert(UTC).dt.tz_localize(None)
    offsets = stamps.to_numpy(dtype="datetime64[ns]") - np.datetime64(first, "ns")
    day_all = offsets // np.timedelta64(1, "D")
    pos = np.flatnonzero((day_all >= 0) & (day_all < n_days))
    codes, ids = pd.factorize(usage["customer_id"].to_numpy(dtype=object)[pos], sort=True)
    day = day_all[pos].astype(np.int64)

    # duplicate (customer, day) rows: the last one in input order wins
    key = codes.astype(np.int64) * n_days + day
    _, last_rev = np.unique(key[::-1], return_index=True)
    keep = np.sort(len(key) - 1 - last_rev)
    pos, codes, day = pos[keep], codes[keep], day[keep]

    # only customers with a row in [start, end] get output rows
    wanted = np.zeros(len(ids), dtype=bool)
    wanted[codes[day >= base]] = True
    if not wanted.any():
        return _empty_features(usage)
    remap = np.cumsum(wanted) - 1
    rows_kept = wanted[codes]
    pos, cust, day = pos[rows_kept], remap[codes[rows_kept]], day[rows_kept]
    ids = np.asarray(ids, dtype=object)[wanted]
    shape = (len(ids), n_days)

    row_of = np.full(shape, -1, dtype=np.int64)
    row_of[cust, day] = pos

    def grid(column: str) -> tuple[np.ndarray, np.ndarray]:
        values = pd.to_numeric(usage[column], errors="coerce").to_numpy(
            dtype="float64", na_value=np.nan
        )[pos]
        present = ~np.isnan(values)
        val = np.zeros(shape)
        cnt = np.zeros(shape)
        val[cust[present], day[present]] = values[present]
        cnt[cust[present], day[present]] = 1.0
        return val, cnt

    def window(g: np.ndarray, width: int) -> np.ndarray:
        """Sum over the ``width`` days ending on each output day (fixed summation order)."""
        total = g[:, base : base + n_out].copy()
        for lag in range(1, width):
            total += g[:, base - lag : base - lag + n_out]
        return total

    def ratio(num: np.ndarray, den: np.ndarray, scale: float = 1.0) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = scale * num / den
        return np.where((den == 0) | ~np.isfinite(out), np.nan, out)

    minutes, minutes_n = grid("minutes")
    data_gb, data_gb_n = grid("data_gb")
    dropped, _ = grid("dropped_calls")
    tickets, _ = grid("support_tickets")
    bill, bill_n = grid("bill_amount")
    active = (row_of >= 0).astype(np.float64)

    minutes_sum_7 = window(minutes, 7)
    minutes_mean_7 = ratio(minutes_sum_7, window(minutes_n, 7))
    minutes_mean_30 = ratio(window(minutes, 30), window(minutes_n, 30))
    data_mean_7 = ratio(window(data_gb, 7), window(data_gb_n, 7))
    data_mean_30 = ratio(window(data_gb, 30), window(data_gb_n, 30))
    bill_mean_7 = ratio(window(bill, 7), window(bill_n, 7))
    bill_mean_30 = ratio(window(bill, 30), window(bill_n, 30))
    dropped_7 = window(dropped, 7)

    out_rows = row_of[:, base:]
    c_idx, d_idx = np.nonzero(out_rows >= 0)  # row-major: sorted by customer, then day
    src = out_rows[c_idx, d_idx]

    def pick(a: np.ndarray) -> np.ndarray:
        return a[c_idx, d_idx]

    out_day = pd.Timestamp(start) + pd.to_timedelta(d_idx, unit="D")
    asof = (out_day + pd.Timedelta(days=1)).tz_localize(UTC)
    result = pd.DataFrame(
        {
            "customer_id": ids[c_idx],
            "date": out_day.astype("datetime64[ns]"),
            "event_timestamp": asof,
            "features_asof": asof,
        }
    )
    for col in PROFILE_COLUMNS:
        result[col] = usage[col].iloc[src].to_numpy()
    result["tenure_months"] = result["tenure_months"].astype("Int64")
    result["monthly_charge"] = result["monthly_charge"].astype("float64")
    result["minutes_mean_7d"] = pick(minutes_mean_7)
    result["minutes_mean_30d"] = pick(minutes_mean_30)
    result["data_gb_mean_7d"] = pick(data_mean_7)
    result["data_gb_mean_30d"] = pick(data_mean_30)
    result["minutes_trend"] = pick(ratio(minutes_mean_7, minutes_mean_30))
    result["data_gb_trend"] = pick(ratio(data_mean_7, data_mean_30))
    result["dropped_calls_sum_7d"] = pick(dropped_7).round().astype("int64")
    result["dropped_call_rate_7d"] = pick(ratio(dropped_7, minutes_sum_7, 100.0))
    result["support_tickets_sum_30d"] = pick(window(tickets, 30)).round().astype("int64")
    result["bill_mean_7d"] = pick(bill_mean_7)
    result["bill_change_7d_30d"] = pick(ratio(bill_mean_7, bill_mean_30))
    result["active_days_30d"] = pick(window(active, 30)).round().astype("int64")
    return result


def _empty_features(usage: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "customer_id": pd.Series(dtype="object"),
            "date": pd.Series(dtype="datetime64[ns]"),
            "event_timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
            "features_asof": pd.Series(dtype="datetime64[ns, UTC]"),
        }
    )
    for col in PROFILE_COLUMNS:
        out[col] = pd.Series(dtype=usage[col].dtype if col in usage else "object")
    out["tenure_months"] = out["tenure_months"].astype("Int64")
    out["monthly_charge"] = out["monthly_charge"].astype("float64")
    for col, dtype in AGGREGATE_COLUMNS.items():
        out[col] = pd.Series(dtype=dtype)
    return out


def _as_date(value: date | datetime | str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))
