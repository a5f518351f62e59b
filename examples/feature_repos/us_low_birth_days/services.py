"""The feature services: the quiet-day model's and the next-week births model's."""

from feast import FeatureService
from views import birth_counts, calendar_ahead

low_days_v1 = FeatureService(
    name="low_days_v1",
    features=[birth_counts, calendar_ahead],
    description="Quiet-day model inputs: birth counts and the calendar ahead, with features_asof.",
)

births_v1 = FeatureService(
    name="births_v1",
    features=[birth_counts, calendar_ahead],
    description="Next-week births model inputs (usecases/us_state_births.yaml): the same birth "
    "counts and calendar, with features_asof.",
)
