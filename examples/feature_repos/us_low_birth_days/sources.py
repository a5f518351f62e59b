"""The daily feature table in the lake; its location follows the DRIFTLOOP_* settings."""

from feast import FileSource
from feast.data_format import ParquetFormat

from driftloop_config.settings import load_settings
from tasks.feature_store import feature_source_path

_settings = load_settings()
_settings.state_path.mkdir(parents=True, exist_ok=True)  # Feast does not create it

state_daily = FileSource(
    name="state_daily",
    path=feature_source_path(_settings, "state_daily"),
    file_format=ParquetFormat(),
    timestamp_field="event_timestamp",
    description="One row per state and day; event_timestamp is the end of the day.",
)
