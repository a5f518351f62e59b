"""The feature service the retention model reads: the account's views, and its tier's
(looked up with the plan_tier that account_profile serves)."""

from feast import FeatureService
from views import account_profile, engagement, tier_reliability

retention_v1 = FeatureService(
    name="retention_v1", features=[account_profile, engagement, tier_reliability]
)
