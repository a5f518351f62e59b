"""Feature services: the feature sets models read, by name."""

from feast import FeatureService
from views import customer_profile, usage_aggregates

churn_v1 = FeatureService(
    name="churn_v1",
    features=[customer_profile, usage_aggregates],
    description="Churn model inputs: profile + usage aggregates, with features_asof.",
)
