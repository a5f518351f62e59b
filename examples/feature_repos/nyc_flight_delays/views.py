"""Feature views over the daily aircraft table."""

from datetime import timedelta

from entities import aircraft, airport
from feast import FeatureView, Field
from feast.types import Float64, Int64, String, UnixTimestamp
from sources import aircraft_daily, airport_daily

# A snapshot holds the aircraft that departed the day before, so a day-old row is always there;
# a week covers serving an aircraft between its visits to NYC.
TTL = timedelta(days=7)

aircraft_profile = FeatureView(
    name="aircraft_profile",
    entities=[aircraft],
    ttl=TTL,
    schema=[
        Field(name="tailnum", dtype=String),
        Field(name="carrier", dtype=String),
        Field(name="origin", dtype=String),
    ],
    source=aircraft_daily,
    online=True,
    description="The aircraft's carrier and the airport it left most often that day (the key "
    "its airport's conditions are looked up with).",
)

aircraft_activity = FeatureView(
    name="aircraft_activity",
    entities=[aircraft],
    ttl=TTL,
    schema=[
        Field(name="tailnum", dtype=String),
        Field(name="departures_1d", dtype=Int64),
        Field(name="cancelled_1d", dtype=Int64),
        Field(name="delayed60_1d", dtype=Int64),
        Field(name="dep_delay_mean_1d", dtype=Float64),
        Field(name="dep_delay_max_1d", dtype=Float64),
        Field(name="last_dep_hour_1d", dtype=Int64),
        Field(name="distance_mean_1d", dtype=Float64),
        Field(name="departures_7d", dtype=Int64),
        Field(name="delayed60_7d", dtype=Int64),
        Field(name="delay_days_28d", dtype=Int64),
        Field(name="dep_delay_mean_7d", dtype=Float64),
        Field(name="dep_delay_mean_28d", dtype=Float64),
        Field(name="cancelled_28d", dtype=Int64),
        Field(name="active_days_28d", dtype=Int64),
        Field(name="features_asof", dtype=UnixTimestamp),
    ],
    source=aircraft_daily,
    online=True,
    description="The aircraft's departures and delays that day and over 7 and 28 days.",
)

origin_conditions = FeatureView(
    name="origin_conditions",
    entities=[airport],
    # a snapshot reads the weather of the day before it; a day without reports falls back to
    # the day before that, never further
    ttl=timedelta(days=2),
    schema=[
        Field(name="origin", dtype=String),
        Field(name="origin_precip_1d", dtype=Float64),
        Field(name="origin_wind_max_1d", dtype=Float64),
        Field(name="origin_visib_min_1d", dtype=Float64),
        Field(name="origin_temp_mean_1d", dtype=Float64),
        Field(name="weekday_next", dtype=Int64),
    ],
    source=airport_daily,
    online=True,
    description="The airport's weather that day and the weekday ahead: shared by every aircraft "
    "leaving it (drift context).",
)
