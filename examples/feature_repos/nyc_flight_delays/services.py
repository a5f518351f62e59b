"""The feature service the delay model reads."""

from feast import FeatureService
from views import aircraft_activity, aircraft_profile, origin_conditions

delays_v1 = FeatureService(
    name="delays_v1",
    features=[aircraft_profile, aircraft_activity, origin_conditions],
    description="Delay model inputs: profile, activity and airport conditions, with features_asof.",
)
