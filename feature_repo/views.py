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
        Field(
            name="plan",
            dtype=String,
            description="The customer's tariff plan on the feature day.",
        ),
        Field(
            name="contract",
            dtype=String,
            description="The customer's contract type on the feature day.",
        ),
        Field(
            name="tenure_months",
            dtype=Int64,
            description="Months the customer has been with the operator, as of the feature day.",
        ),
        Field(name="region", dtype=String, description="The customer's region on the feature day."),
        Field(
            name="payment_method",
            dtype=String,
            description="How the customer pays, as of the feature day.",
        ),
        Field(
            name="monthly_charge",
            dtype=Float64,
            description="The customer's monthly charge on the feature day.",
        ),
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
        Field(
            name="minutes_mean_7d",
            dtype=Float64,
            description="Mean call minutes per day with usage, over the 7 days ending on the day.",
        ),
        Field(
            name="minutes_mean_30d",
            dtype=Float64,
            description="Mean call minutes per day with usage, over the 30 days ending on the day.",
        ),
        Field(
            name="data_gb_mean_7d",
            dtype=Float64,
            description="Mean data (GB) per day with usage, over the 7 days ending on the day.",
        ),
        Field(
            name="data_gb_mean_30d",
            dtype=Float64,
            description="Mean data (GB) per day with usage, over the 30 days ending on the day.",
        ),
        Field(
            name="minutes_trend",
            dtype=Float64,
            description="minutes_mean_7d / minutes_mean_30d (NaN where the 30-day mean is 0).",
        ),
        Field(
            name="data_gb_trend",
            dtype=Float64,
            description="data_gb_mean_7d / data_gb_mean_30d (NaN where the 30-day mean is 0).",
        ),
        Field(
            name="dropped_calls_sum_7d",
            dtype=Int64,
            description="Dropped calls over the 7 days ending on the day.",
        ),
        Field(
            name="dropped_call_rate_7d",
            dtype=Float64,
            description="Dropped calls per 100 call minutes over 7 days (NaN without minutes).",
        ),
        Field(
            name="support_tickets_sum_30d",
            dtype=Int64,
            description="Support tickets over the 30 days ending on the day.",
        ),
        Field(
            name="bill_mean_7d",
            dtype=Float64,
            description="Mean bill amount per day with usage, over the 7 days ending on the day.",
        ),
        Field(
            name="bill_change_7d_30d",
            dtype=Float64,
            description="7-day mean bill amount / 30-day mean (NaN where the 30-day mean is 0).",
        ),
        Field(
            name="active_days_30d",
            dtype=Int64,
            description="Days with usage in the 30 days ending on the day.",
        ),
        # The feature row's own timestamp as a value: lets consumers verify what they got.
        Field(
            name="features_asof",
            dtype=UnixTimestamp,
            description="When the row became known: the end of the feature day (UTC).",
        ),
    ],
    source=customer_daily,
    online=True,
    description="Rolling usage aggregates over calendar windows ending on the feature day "
    "(days without usage are absent, not zero), plus features_asof.",
)
