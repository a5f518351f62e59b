"""Where the feature rows live: the daily feature table in the lake's features/ zone.

The one place of the Feast repository that reads the driftloop settings (from the DRIFTLOOP_*
environment, when Feast imports this module): the offline store (DuckDB) needs an absolute
path, and the lake's location is a setting. The path is always a local folder: the lake's own
features/ zone, or for an S3 lake its mirror under the state dir (tasks.feature_store
.sync_offline_source keeps it in sync).
"""

from feast import FileSource
from feast.data_format import ParquetFormat

from driftloop_config.settings import load_settings
from tasks.feature_store import feature_source_path

_settings = load_settings()
# Feast creates its registry and SQLite files but not their parent folders: make sure the state
# directory exists when the feast CLI loads this repository (it imports it before opening them).
_settings.state_path.mkdir(parents=True, exist_ok=True)

customer_daily = FileSource(
    name="customer_daily",  # the use case's features.table
    path=feature_source_path(_settings, "customer_daily"),
    file_format=ParquetFormat(),
    timestamp_field="event_timestamp",
    description="One row per customer and day with usage "
    "(features/customer_daily/date=YYYY-MM-DD/*.parquet); event_timestamp is the end of the day.",
)
