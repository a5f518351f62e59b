"""The embedded online store: one SQLite row per entity, written in bulk from Arrow.

Feast's own SQLite store keeps one row per (entity, feature) holding a serialised ``ValueProto``,
and its materialisation turns every value into a protobuf first: for a day of 1M customers and
19 features that is 19M protobufs and 19M single-row ``INSERT``\\ s (P1 in BENCHMARKS.md). This
store keeps Feast's interface (``feast materialize``, ``get_online_features``, pushes and
``write_to_online_store`` all work) with a layout a hand-written store would use:

* one table per feature view, one row per entity key (Feast's serialised key), a column per
  feature holding the plain value (REAL, INTEGER, TEXT; other types as a serialised
  ``ValueProto``), and the row's event and created timestamps;
* :class:`Provider` materialises a plain feature view by reading the latest row per entity from
  the offline store as Arrow and writing the columns with one ``executemany``, no protobuf;
* a row whose timestamps and values equal what the store holds is not written again, so
  re-materialising a window (after a rebuild, or a retry) only writes the entities that changed.

Select it with ``DRIFTLOOP_ONLINE_STORE=sqlite`` (the default); Redis stays the production store.
"""

from __future__ import annotations

import logging
import sqlite3
import struct
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from feast import Entity, FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.online_store import OnlineStore
from feast.infra.passthrough_provider import PassthroughProvider
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.protos.feast.types.Value_pb2 import ValueType as KeyType
from feast.repo_config import FeastConfigBaseModel, RepoConfig
from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values
from feast.value_type import ValueType
from pydantic import StrictStr

log = logging.getLogger(__name__)

BATCH_ROWS = 100_000  # Arrow rows turned into Python values at a time (bounds memory)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# how a plain value becomes the ValueProto Feast's own store would have returned
_TO_PROTO: dict[ValueType, Callable[[Any], ValueProto]] = {
    ValueType.DOUBLE: lambda v: ValueProto(double_val=float(v)),
    ValueType.FLOAT: lambda v: ValueProto(float_val=float(v)),
    ValueType.INT64: lambda v: ValueProto(int64_val=int(v)),
    ValueType.INT32: lambda v: ValueProto(int32_val=int(v)),
    ValueType.STRING: lambda v: ValueProto(string_val=str(v)),
    ValueType.BOOL: lambda v: ValueProto(bool_val=bool(v)),
    ValueType.BYTES: lambda v: ValueProto(bytes_val=bytes(v)),
    ValueType.UNIX_TIMESTAMP: lambda v: ValueProto(unix_timestamp_val=int(v)),
}


class EntitySqliteOnlineStoreConfig(FeastConfigBaseModel):
    """``online_store`` of ``feature_store.yaml``: ``type: tasks.online_sqlite.EntitySqliteOnlineStore``."""

    type: Literal["tasks.online_sqlite.EntitySqliteOnlineStore"] = (
        "tasks.online_sqlite.EntitySqliteOnlineStore"
    )
    path: StrictStr = "data/online.db"
    """Path to the SQLite file (relative paths are resolved against the feature repo)."""


def table_name(project: str, view: FeatureView) -> str:
    """The table of a feature view (the name Feast's own SQLite store uses)."""
    return f"{project}_{view.name}"


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _kinds(view: FeatureView) -> dict[str, ValueType]:
    return {f.name: f.dtype.to_value_type() for f in view.features}


def _to_proto(value: Any, kind: ValueType) -> ValueProto:
    if value is None:
        return ValueProto()
    convert = _TO_PROTO.get(kind)
    return convert(value) if convert else ValueProto.FromString(value)


def _micros(ts: datetime | None) -> int | None:
    if ts is None:
        return None
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    return (ts - _EPOCH) // timedelta(microseconds=1)


def _from_micros(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


def entity_keys(join_key: str, values: pa.Array, version: int) -> list[bytes]:
    """Feast's serialised entity keys (``serialize_entity_key``) of one join key's column,
    built without a protobuf per row for string and integer keys."""
    name = join_key.encode()
    head = struct.pack("<II", 1, KeyType.STRING) + struct.pack("<I", len(name)) + name
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        tag = struct.pack("<I", KeyType.STRING)
        out = []
        for v in values.to_pylist():
            raw = v.encode()
            out.append(head + tag + struct.pack("<I", len(raw)) + raw)
        return out
    if pa.types.is_integer(values.type):
        tag = struct.pack("<II", KeyType.INT64, 8)
        return [head + tag + struct.pack("<q", v) for v in values.cast(pa.int64()).to_pylist()]
    return [  # any other key type: Feast's own conversion
        serialize_entity_key(
            EntityKeyProto(join_keys=[join_key], entity_values=[value]),
            entity_key_serialization_version=version,
        )
        for value in python_values_to_proto_values(values.to_pylist())
    ]


def _column_values(values: pa.ChunkedArray | pa.Array, kind: ValueType) -> list[Any]:
    """Plain values of one feature column, as this store keeps them."""
    if kind == ValueType.UNIX_TIMESTAMP and pa.types.is_timestamp(values.type):
        seconds = values.cast(pa.timestamp("s", values.type.tz), safe=False)
        return seconds.cast(pa.int64()).to_pylist()
    if kind in (ValueType.INT64, ValueType.INT32) and pa.types.is_floating(values.type):
        values = pc.if_else(pc.is_nan(values), None, values).cast(pa.int64(), safe=False)
    if kind in _TO_PROTO:
        return values.to_pylist()
    protos = python_values_to_proto_values(values.to_pylist(), kind)
    return [p.SerializeToString() if p.WhichOneof("val") else None for p in protos]


class EntitySqliteOnlineStore(OnlineStore):
    """Feast online store in one SQLite file, one row per entity (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._columns: dict[str, set[str]] = {}  # table -> columns known to exist

    # ---- connection and schema ----

    @staticmethod
    def db_path(config: RepoConfig) -> Path:
        path = Path(config.online_store.path)
        if config.repo_path and not path.is_absolute():
            path = Path(config.repo_path) / path
        return path

    def _conn_for(self, config: RepoConfig) -> sqlite3.Connection:
        if self._conn is None:
            path = self.db_path(config)
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, check_same_thread=False, timeout=60)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        return self._conn

    def _ensure_table(self, conn: sqlite3.Connection, table: str, features: Iterable[str]) -> None:
        """Create the view's table, or add the columns of features added since (another
        process may have added them first)."""
        names = list(features)
        known = self._columns.get(table)
        if known is not None and known.issuperset(names):
            return
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {_quote(table)} (entity_key BLOB PRIMARY KEY, "
            "event_ts INTEGER, created_ts INTEGER) WITHOUT ROWID"
        )
        known = {r[1] for r in conn.execute(f"PRAGMA table_info({_quote(table)})")}
        for name in names:
            if name not in known:
                try:
                    conn.execute(f"ALTER TABLE {_quote(table)} ADD COLUMN {_quote(name)}")
                except sqlite3.OperationalError as exc:  # added by another writer meanwhile
                    if "duplicate column name" not in str(exc).lower():
                        raise
                known.add(name)
        self._columns[table] = known

    def _existing_columns(
        self, conn: sqlite3.Connection, table: str, wanted: Iterable[str]
    ) -> set[str]:
        """The table's columns; read again when one of ``wanted`` is not known (another
        process, e.g. a features run, may have added it since)."""
        known = self._columns.get(table)
        if known is None or not known.issuperset(wanted):
            found = {r[1] for r in conn.execute(f"PRAGMA table_info({_quote(table)})")}
            if not found:
                return set()
            self._columns[table] = known = found
        return known

    # ---- writes ----

    def write_rows(
        self,
        config: RepoConfig,
        view: FeatureView,
        keys: Sequence[bytes],
        event_ts: Sequence[int | None],
        created_ts: Sequence[int | None],
        columns: dict[str, list[Any]],
    ) -> int:
        """Upsert rows (timestamps in microseconds since the epoch, UTC); a row equal to the
        stored one is left alone. Returns how many rows were written."""
        table = table_name(config.project, view)
        names = list(columns)
        cols = ["entity_key", "event_ts", "created_ts", *names]
        changed = " OR ".join(f"{_quote(c)} IS NOT excluded.{_quote(c)}" for c in cols[1:])
        sql = (
            f"INSERT INTO {_quote(table)} ({', '.join(map(_quote, cols))}) "
            f"VALUES ({', '.join('?' * len(cols))}) ON CONFLICT(entity_key) DO UPDATE SET "
            + ", ".join(f"{_quote(c)} = excluded.{_quote(c)}" for c in cols[1:])
            + f" WHERE {changed}"
        )
        with self._lock:
            conn = self._conn_for(config)
            self._ensure_table(conn, table, names)
            before = conn.total_changes
            with conn:
                conn.executemany(
                    sql, zip(keys, event_ts, created_ts, *columns.values(), strict=True)
                )
            return conn.total_changes - before

    def write_arrow(self, config: RepoConfig, view: FeatureView, data: pa.Table) -> int:
        """Write the latest feature rows of ``view`` (one per entity, Arrow columns named as the
        view's join key, features and the source's timestamp fields). Returns rows written."""
        [join_key] = [c.name for c in view.entity_columns]
        source = view.batch_source
        assert source is not None, f"feature view {view.name!r} has no batch source"
        kinds = _kinds(view)
        written = 0
        for batch in data.to_batches(max_chunksize=BATCH_ROWS):
            part = pa.Table.from_batches([batch], schema=data.schema)
            keys = entity_keys(join_key, part.column(join_key).combine_chunks(), 3)
            stamps = [_ts_micros(part.column(source.timestamp_field))]
            created = source.created_timestamp_column
            stamps.append(
                _ts_micros(part.column(created))
                if created and created in part.column_names
                else [None] * part.num_rows
            )
            columns = {n: _column_values(part.column(n), k) for n, k in kinds.items()}
            written += self.write_rows(config, view, keys, stamps[0], stamps[1], columns)
        return written

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Feast's write interface (pushes, ``write_to_online_store``, other providers)."""
        kinds = _kinds(table)
        version = config.entity_key_serialization_version
        keys = [serialize_entity_key(k, entity_key_serialization_version=version) for k, *_ in data]
        columns: dict[str, list[Any]] = {name: [] for name in kinds}
        for _, values, _, _ in data:
            for name, kind in kinds.items():
                proto = values.get(name)
                columns[name].append(_plain(proto, kind))
        self.write_rows(
            config,
            table,
            keys,
            [_micros(ts) for _, _, ts, _ in data],
            [_micros(c) for *_, c in data],
            columns,
        )
        if progress:
            progress(len(data))

    # ---- reads ----

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        version = config.entity_key_serialization_version
        keys = [
            serialize_entity_key(k, entity_key_serialization_version=version) for k in entity_keys
        ]
        name = table_name(config.project, table)
        kinds = _kinds(table)
        wanted = [f for f in (requested_features or list(kinds)) if f in kinds]
        with self._lock:
            conn = self._conn_for(config)
            present = self._existing_columns(conn, name, wanted)
            if not present:  # never written: nothing is known
                return [(None, None)] * len(keys)
            stored = [f for f in wanted if f in present]
            found: dict[bytes, tuple[Any, ...]] = {}
            for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
                chunk = keys[start : start + 500]
                rows = conn.execute(
                    f"SELECT entity_key, event_ts, {', '.join(['NULL', *map(_quote, stored)])} "
                    f"FROM {_quote(name)} WHERE entity_key IN ({', '.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                found.update((r[0], r[1:]) for r in rows)
        out: list[tuple[datetime | None, dict[str, ValueProto] | None]] = []
        for key in keys:
            row = found.get(key)
            if row is None:
                out.append((None, None))
                continue
            values = dict(zip(stored, row[2:], strict=True))
            out.append(
                (
                    _from_micros(row[0]),
                    {f: _to_proto(values.get(f), kinds[f]) for f in wanted},
                )
            )
        return out

    # ---- infrastructure ----

    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        with self._lock:
            conn = self._conn_for(config)
            for view in tables_to_keep:
                self._ensure_table(conn, table_name(config.project, view), _kinds(view))
            for view in tables_to_delete:
                name = table_name(config.project, view)
                conn.execute(f"DROP TABLE IF EXISTS {_quote(name)}")
                self._columns.pop(name, None)
            conn.commit()

    def teardown(
        self, config: RepoConfig, tables: Sequence[FeatureView], entities: Sequence[Entity]
    ) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._columns.clear()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.db_path(config)}{suffix}").unlink(missing_ok=True)


def holds(config: RepoConfig, view: FeatureView) -> bool:
    """Whether the store configured by ``config`` holds any row of ``view`` (False for a
    missing database file, e.g. a state directory wiped, or one made before this store)."""
    path = EntitySqliteOnlineStore.db_path(config)
    if not path.is_file():
        return False
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
    try:
        table = table_name(config.project, view)
        known = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        return (
            bool(known)
            and conn.execute(f"SELECT 1 FROM {_quote(table)} LIMIT 1").fetchone() is not None
        )
    finally:
        conn.close()


def _plain(proto: ValueProto | None, kind: ValueType) -> Any:
    """The value this store keeps for one ValueProto of a feature of type ``kind``."""
    if proto is None or proto.WhichOneof("val") is None:
        return None
    if kind == ValueType.UNIX_TIMESTAMP:
        return proto.unix_timestamp_val
    if kind in _TO_PROTO:
        return feast_value_type_to_python_type(proto)
    return proto.SerializeToString()


def _ts_micros(values: pa.ChunkedArray) -> list[int | None]:
    if not pa.types.is_timestamp(values.type):
        values = values.cast(pa.timestamp("us", "UTC"))
    micros = values.cast(pa.timestamp("us", values.type.tz), safe=False).cast(pa.int64())
    return micros.to_pylist()


class Provider(PassthroughProvider):
    """Feast's local provider, materialising plain feature views into
    :class:`EntitySqliteOnlineStore` straight from Arrow (any other view or store: Feast's own
    path)."""

    def materialize_single_feature_view(
        self,
        config: RepoConfig,
        feature_view: Any,
        start_date: datetime,
        end_date: datetime,
        registry: Any,
        project: str,
        tqdm_builder: Callable[[int], Any],
        disable_event_timestamp: bool = False,
    ) -> None:
        store = self.online_store
        plain = (
            type(feature_view) is FeatureView
            and feature_view.online
            and not getattr(feature_view, "feature_transformation", None)
            and len(feature_view.entity_columns) == 1
        )
        if not isinstance(store, EntitySqliteOnlineStore) or not plain:
            super().materialize_single_feature_view(
                config,
                feature_view,
                start_date,
                end_date,
                registry,
                project,
                tqdm_builder,
                disable_event_timestamp,
            )
            return
        source = feature_view.batch_source
        to_feature = dict(source.field_mapping or {})  # source column -> feature name
        from tasks.feature_store import quiet_offline_reads

        with quiet_offline_reads():
            data = self._latest_rows(config, feature_view, start_date, end_date)
        stamps = {source.timestamp_field, source.created_timestamp_column}
        data = data.rename_columns(
            [c if c in stamps else to_feature.get(c, c) for c in data.column_names]
        )
        bar = tqdm_builder(data.num_rows)
        written = store.write_arrow(config, feature_view, data)
        bar.update(data.num_rows)
        bar.close()
        log.info(
            "%s: %d entities materialised, %d written (the rest unchanged)",
            feature_view.name,
            data.num_rows,
            written,
        )

    def _latest_rows(
        self, config: RepoConfig, feature_view: Any, start_date: datetime, end_date: datetime
    ) -> pa.Table:
        """The newest row per entity in ``[start_date, end_date]``, with the source's names."""
        source = feature_view.batch_source
        to_source = {v: k for k, v in (source.field_mapping or {}).items()}
        job = self.offline_store.pull_latest_from_table_or_query(
            config=config,
            data_source=source,
            join_key_columns=[to_source.get(c.name, c.name) for c in feature_view.entity_columns],
            feature_name_columns=[to_source.get(f.name, f.name) for f in feature_view.features],
            timestamp_field=source.timestamp_field,
            created_timestamp_column=source.created_timestamp_column or None,
            start_date=start_date,
            end_date=end_date,
        )
        return job.to_arrow()
