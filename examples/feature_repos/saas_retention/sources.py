"""The weekly feature table in the lake (its location follows the DRIFTLOOP_* settings)."""

from feast import FileSource
from feast.data_format import ParquetFormat

from driftloop_config.settings import load_settings
from tasks.feature_store import feature_source_path

_settings = load_settings()
_settings.state_path.mkdir(parents=True, exist_ok=True)

account_weekly = FileSource(
    name="account_weekly",
    path=feature_source_path(_settings, "account_weekly"),
    file_format=ParquetFormat(),
    timestamp_field="event_timestamp",
)

tier_weekly = FileSource(
    name="tier_weekly",
    path=feature_source_path(_settings, "tier_weekly"),
    file_format=ParquetFormat(),
    timestamp_field="event_timestamp",
)
