"""Feature views over the daily state table."""

from datetime import timedelta

from entities import us_state
from feast import FeatureView, Field
from feast.types import Float64, Int64, String, UnixTimestamp
from sources import state_daily

# Every state reports every day; three missing days and its features count as missing.
TTL = timedelta(days=3)

birth_counts = FeatureView(
    name="birth_counts",
    entities=[us_state],
    ttl=TTL,
    schema=[
        Field(name="state", dtype=String),
        Field(name="births_1d", dtype=Int64),
        Field(name="births_mean_7d", dtype=Float64),
        Field(name="births_mean_28d", dtype=Float64),
        Field(name="births_ratio_1d", dtype=Float64),
        Field(name="weekend_ratio_28d", dtype=Float64),
        Field(name="births_cv_28d", dtype=Float64),
        Field(name="days_reported_28d", dtype=Int64),
        Field(name="features_asof", dtype=UnixTimestamp),
    ],
    source=state_daily,
    online=True,
    description="The state's births that day, their level, weekly shape and spread over 28 days.",
)

calendar_ahead = FeatureView(
    name="calendar_ahead",
    entities=[us_state],
    ttl=TTL,
    schema=[
        Field(name="state", dtype=String),
        Field(name="weekday_next", dtype=Int64),
        Field(name="month_next", dtype=Int64),
        Field(name="days_to_holiday", dtype=Int64),
        Field(name="holidays_next_7d", dtype=Int64),
    ],
    source=state_daily,
    online=True,
    description="The calendar of the days ahead, the same for every state (drift context).",
)
