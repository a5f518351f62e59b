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
        Field(
            name="plan_tier",
            dtype=String,
            description="The account's plan tier in the weekly report.",
        ),
        Field(
            name="billing_cycle",
            dtype=String,
            description="The account's billing cycle (monthly or annual) in the report.",
        ),
        Field(name="seats", dtype=Int64, description="Seats the account pays for in the report."),
    ],
    source=account_weekly,
    online=True,
    description="The account's plan, billing cycle and seats as of its weekly report.",
)

engagement = FeatureView(
    name="engagement",
    entities=[account],
    ttl=TTL,
    schema=[
        Field(name="account_id", dtype=String),
        Field(
            name="seat_utilisation",
            dtype=Float64,
            description="Seats used / seats paid for, that week (NaN without seats).",
        ),
        Field(
            name="logins_per_seat",
            dtype=Float64,
            description="Logins per paid seat, that week (NaN without seats).",
        ),
        Field(
            name="logins_trend_4w",
            dtype=Float64,
            description="Logins that week / their weekly mean over the reports of the 28 days.",
        ),
        Field(
            name="api_calls_mean_4w",
            dtype=Float64,
            description="Mean weekly API calls over the reports of the 28 days ending on it.",
        ),
        Field(
            name="support_tickets_sum_4w",
            dtype=Int64,
            description="Support tickets over the reports of the 28 days ending on it.",
        ),
        Field(
            name="overdue_weeks_4w",
            dtype=Int64,
            description="Reports with an overdue invoice in the 28 days ending on it.",
        ),
        Field(
            name="weeks_reported_4w",
            dtype=Int64,
            description="Weekly reports in the 28 days ending on the report.",
        ),
        Field(
            name="features_asof",
            dtype=UnixTimestamp,
            description="When the row became known: the end of the report's Sunday (UTC).",
        ),
    ],
    source=account_weekly,
    online=True,
    description="The account's use of its seats and its support and billing record over four "
    "weeks, plus features_asof.",
)

tier_reliability = FeatureView(
    name="tier_reliability",
    entities=[tier],
    ttl=TTL,
    schema=[
        Field(name="plan_tier", dtype=String),
        Field(
            name="incidents_4w",
            dtype=Int64,
            description="The tier's incidents over its status reports of the 28 days ending on it.",
        ),
        Field(
            name="outage_minutes_4w",
            dtype=Float64,
            description="The tier's outage minutes over its status reports of the 28 days.",
        ),
    ],
    source=tier_weekly,
    online=True,
    description="The reliability of the account's plan tier over four weeks: context shared by "
    "the tier's accounts.",
)
