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
        Field(
            name="carrier",
            dtype=String,
            description="The carrier of the aircraft's last departure of the day.",
        ),
        Field(
            name="origin",
            dtype=String,
            description="The NYC airport the aircraft left most often that day (ties: first A-Z).",
        ),
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
        Field(
            name="departures_1d",
            dtype=Int64,
            description="Scheduled departures of the aircraft from NYC that day.",
        ),
        Field(
            name="cancelled_1d",
            dtype=Int64,
            description="Cancelled departures that day (no departure delay).",
        ),
        Field(
            name="delayed60_1d",
            dtype=Int64,
            description="Departures that day delayed by 60 minutes or more.",
        ),
        Field(
            name="dep_delay_mean_1d",
            dtype=Float64,
            description="Mean departure delay that day, minutes (NaN: all cancelled).",
        ),
        Field(
            name="dep_delay_max_1d",
            dtype=Float64,
            description="Largest departure delay that day, minutes (NaN: all cancelled).",
        ),
        Field(
            name="last_dep_hour_1d",
            dtype=Int64,
            description="Hour of the day's last scheduled departure (0-23).",
        ),
        Field(
            name="distance_mean_1d",
            dtype=Float64,
            description="Mean distance of the day's flights, miles.",
        ),
        Field(
            name="departures_7d",
            dtype=Int64,
            description="Departures over the 7 days ending on the day.",
        ),
        Field(
            name="delayed60_7d",
            dtype=Int64,
            description="Departures delayed by 60 minutes or more over the 7 days.",
        ),
        Field(
            name="delay_days_28d",
            dtype=Int64,
            description="Days with a 60-minute delay over the 28 days ending on the day.",
        ),
        Field(
            name="dep_delay_mean_7d",
            dtype=Float64,
            description="Mean departure delay over the 7 days ending on the day, minutes.",
        ),
        Field(
            name="dep_delay_mean_28d",
            dtype=Float64,
            description="Mean departure delay over the 28 days ending on the day, minutes.",
        ),
        Field(
            name="cancelled_28d",
            dtype=Int64,
            description="Cancelled departures over the 28 days.",
        ),
        Field(
            name="active_days_28d",
            dtype=Int64,
            description="Days with a departure from NYC over the 28 days.",
        ),
        Field(
            name="features_asof",
            dtype=UnixTimestamp,
            description="When the row became known: the end of the feature day (UTC).",
        ),
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
        Field(
            name="origin_precip_1d",
            dtype=Float64,
            description="The airport's total precipitation that day, inches.",
        ),
        Field(
            name="origin_wind_max_1d",
            dtype=Float64,
            description="The airport's strongest wind speed reported that day, mph.",
        ),
        Field(
            name="origin_visib_min_1d",
            dtype=Float64,
            description="The airport's lowest visibility reported that day, miles.",
        ),
        Field(
            name="origin_temp_mean_1d",
            dtype=Float64,
            description="The airport's mean temperature over the day's reports, °F.",
        ),
        Field(
            name="weekday_next",
            dtype=Int64,
            description="Weekday of the day after the feature day (0 = Monday).",
        ),
    ],
    source=airport_daily,
    online=True,
    description="The airport's weather that day and the weekday ahead: shared by every aircraft "
    "leaving it (drift context).",
)
