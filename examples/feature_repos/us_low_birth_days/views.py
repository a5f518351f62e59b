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
        Field(
            name="births_1d",
            dtype=Int64,
            description="Births reported by the state for the feature day.",
        ),
        Field(
            name="births_mean_7d",
            dtype=Float64,
            description="Mean births per reported day over the 7 days ending on the day.",
        ),
        Field(
            name="births_mean_28d",
            dtype=Float64,
            description="Mean births per reported day over the 28 days ending on the day.",
        ),
        Field(
            name="births_ratio_1d",
            dtype=Float64,
            description="Births on the day / mean of the same weekday in the 4 weeks before.",
        ),
        Field(
            name="weekend_ratio_28d",
            dtype=Float64,
            description="Mean births on weekend days / on working days, over the 28 days.",
        ),
        Field(
            name="births_cv_28d",
            dtype=Float64,
            description="Standard deviation / mean of daily births over the 28 days.",
        ),
        Field(
            name="days_reported_28d",
            dtype=Int64,
            description="Days the state reported in the 28 days ending on the day.",
        ),
        Field(
            name="features_asof",
            dtype=UnixTimestamp,
            description="When the row became known: the end of the feature day (UTC).",
        ),
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
        Field(
            name="weekday_next",
            dtype=Int64,
            description="Weekday of the day after the feature day (0 = Monday).",
        ),
        Field(
            name="month_next",
            dtype=Int64,
            description="Month of the day after the feature day (1-12).",
        ),
        Field(
            name="days_to_holiday",
            dtype=Int64,
            description="Days from the day after to the next US holiday (at most 60).",
        ),
        Field(
            name="holidays_next_7d",
            dtype=Int64,
            description="US holidays in the 7 days after the feature day.",
        ),
    ],
    source=state_daily,
    online=True,
    description="The calendar of the days ahead, the same for every state (drift context).",
)
