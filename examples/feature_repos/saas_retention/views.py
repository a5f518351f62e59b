"""Feature views over the weekly feature table."""

from datetime import timedelta

from entities import account, tier
from feast import FeatureView, Field
from feast.types import Float64, Int64, String, UnixTimestamp
from sources import account_weekly, tier_weekly

# Two missed weekly reports and the account's features count as missing.
TTL = timedelta(days=21)

account_profile = FeatureView(
    name="account_profile",
    entities=[account],
    ttl=TTL,
    schema=[
        Field(name="account_id", dtype=String),
        Field(name="plan_tier", dtype=String),
        Field(name="billing_cycle", dtype=String),
        Field(name="seats", dtype=Int64),
    ],
    source=account_weekly,
    online=True,
)

engagement = FeatureView(
    name="engagement",
    entities=[account],
    ttl=TTL,
    schema=[
        Field(name="account_id", dtype=String),
        Field(name="seat_utilisation", dtype=Float64),
        Field(name="logins_per_seat", dtype=Float64),
        Field(name="logins_trend_4w", dtype=Float64),
        Field(name="api_calls_mean_4w", dtype=Float64),
        Field(name="support_tickets_sum_4w", dtype=Int64),
        Field(name="overdue_weeks_4w", dtype=Int64),
        Field(name="weeks_reported_4w", dtype=Int64),
        Field(name="features_asof", dtype=UnixTimestamp),
    ],
    source=account_weekly,
    online=True,
)

tier_reliability = FeatureView(
    name="tier_reliability",
    entities=[tier],
    ttl=TTL,
    schema=[
        Field(name="plan_tier", dtype=String),
        Field(name="incidents_4w", dtype=Int64),
        Field(name="outage_minutes_4w", dtype=Float64),
    ],
    source=tier_weekly,
    online=True,
)
