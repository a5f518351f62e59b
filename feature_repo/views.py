"""Feature views over the daily feature table."""

from datetime import timedelta

from entities import customer
from feast import FeatureView, Field
from feast.types import Float64, Int64, String, UnixTimestamp
from sources import customer_daily

# A feature row older than this is treated as missing (a customer gone quiet for 5 weeks).
FEATURE_TTL = timedelta(days=35)

customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    ttl=FEATURE_TTL,
    schema=[
        Field(name="customer_id", dtype=String),
        Field(name="plan", dtype=String),
        Field(name="contract", dtype=String),
        Field(name="tenure_months", dtype=Int64),
        Field(name="region", dtype=String),
        Field(name="payment_method", dtype=String),
        Field(name="monthly_charge", dtype=Float64),
    ],
    source=customer_daily,
    online=True,
    description="The customer's plan, contract and billing profile as of the feature day.",
)

usage_aggregates = FeatureView(
    name="usage_aggregates",
    entities=[customer],
    ttl=FEATURE_TTL,
    schema=[
        Field(name="customer_id", dtype=String),
        Field(name="minutes_mean_7d", dtype=Float64),
        Field(name="minutes_mean_30d", dtype=Float64),
        Field(name="data_gb_mean_7d", dtype=Float64),
        Field(name="data_gb_mean_30d", dtype=Float64),
        Field(name="minutes_trend", dtype=Float64),
        Field(name="data_gb_trend", dtype=Float64),
        Field(name="dropped_calls_sum_7d", dtype=Int64),
        Field(name="dropped_call_rate_7d", dtype=Float64),
        Field(name="support_tickets_sum_30d", dtype=Int64),
        Field(name="bill_mean_7d", dtype=Float64),
        Field(name="bill_change_7d_30d", dtype=Float64),
        Field(name="active_days_30d", dtype=Int64),
        # The feature row's own timestamp as a value: lets consumers verify what they got.
        Field(name="features_asof", dtype=UnixTimestamp),
    ],
    source=customer_daily,
    online=True,
    description="Rolling usage aggregates over calendar windows ending on the feature day "
    "(days without usage are absent, not zero), plus features_asof.",
)
