"""The feature service the quiet-day model reads."""

from feast import FeatureService
from views import birth_counts, calendar_ahead

low_days_v1 = FeatureService(
    name="low_days_v1",
    features=[birth_counts, calendar_ahead],
    description="Quiet-day model inputs: birth counts and the calendar ahead, with features_asof.",
)
