"""Features: validated rows → daily feature rows in the lake → Feast (offline + online).

Three parts:

* :func:`telco_daily_features` — the pure feature function of the telco use case: one row per
  customer and day with usage, the customer's profile as of that day and rolling aggregates
  over calendar windows ending that day.
* :func:`build_features` — incremental build of the use case's feature table in the ``features``
  zone, one Parquet file per day at ``features/<table>/date=YYYY-MM-DD/part-00000.parquet``
  (``<table>``: ``features.table`` of the use case, ``customer_daily`` for telco). A manifest
  (``features/_manifests/<table>.json``) maps every built day to a
  fingerprint of its inputs (keys and etags of the validated partitions in the day's lookback
  window); only days whose fingerprint changed are rebuilt, so a re-run on unchanged input
  writes nothing.
* The Feast side: :func:`feature_store` builds the store from the driftloop settings (the same
  configuration as ``feature_repo/feature_store.yaml``), :func:`apply_repo` registers the
  definitions of ``feature_repo/`` as ``feast apply`` does, :func:`materialize` loads the online
  store and :func:`online_features` reads it.

Timestamps: a day's features are known once the day is over, so the row of day ``d`` carries
``event_timestamp = features_asof = d + 1 day, 00:00 UTC``. A point-in-time lookup at a snapshot
taken at midnight of day ``s`` therefore sees the features of day ``s - 1`` at the latest.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tasks.ingest import read_validated, validated_partitions
from tasks.plugins import load_function
from tasks.storage import (
    Lake,
    LocalStorage,
    MirrorResult,
    ObjectInfo,
    mirror_to_local,
    read_json,
    write_json,
    write_parquet,
)

if TYPE_CHECKING:
    from feast import FeatureStore

    from driftloop.settings import Settings
    from driftloop.usecase import FeatureSpec, FeatureTable, UseCase

PART_NAME = "part-00000.parquet"
MANIFEST_VERSION = 1
MATERIALIZED_EVENT = "driftloop.features.materialized"
# the embedded online store and the provider that materialises into it from Arrow
ONLINE_SQLITE = "tasks.online_sqlite.EntitySqliteOnlineStore"
ONLINE_SQLITE_PROVIDER = "tasks.online_sqlite.Provider"
ONLINE_SQLITE_FILE = "online.db"

PROFILE_COLUMNS = (
    "plan",
    "contract",
    "tenure_months",
    "region",
    "payment_method",
    "monthly_charge",
)
AGGREGATE_COLUMNS = (
    "minutes_mean_7d",
    "minutes_mean_30d",
    "data_gb_mean_7d",
    "data_gb_mean_30d",
    "minutes_trend",
    "data_gb_trend",
    "dropped_calls_sum_7d",
    "dropped_call_rate_7d",
    "support_tickets_sum_30d",
    "bill_mean_7d",
    "bill_change_7d_30d",
    "active_days_30d",
)
FEATURE_COLUMNS = (
    "customer_id",
    "date",
    "event_timestamp",
    "features_asof",
    *PROFILE_COLUMNS,
    *AGGREGATE_COLUMNS,
)
LOOKBACK_DAYS = 30  # the longest window of telco_daily_features
MAX_RUN_DAYS = 60  # feature days computed per builder call (bounds memory)


class FeatureBuildError(RuntimeError):
    """The feature build cannot proceed; the message says why."""


class FeatureRepoError(RuntimeError):
    """The Feast repository does not match the driftloop settings."""


# ---- the pure feature function ------------------------------------------------------------------


def telco_daily_features(usage: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """Daily features of every customer with usage on a day in ``[start, end]``.

    ``usage`` holds validated usage rows (one per customer and day) and must cover
    ``[start - 29 days, end]`` for the 30-day windows to be complete; rows outside that range
    are ignored. Returns one row per (customer_id, date) with ``date`` in ``[start, end]`` and a
    usage row that day, sorted by customer_id and date, with the columns
    :data:`FEATURE_COLUMNS`:

    * ``event_timestamp`` and ``features_asof``: ``date + 1 day`` at 00:00 UTC.
    * the profile (plan, contract, tenure_months, region, payment_method, monthly_charge) of the
      day's own row;
    * aggregates over calendar windows ending on (and including) the day: the 7-day window is
      ``[date - 6, date]``, the 30-day window ``[date - 29, date]``. A day without a usage row is
      *absent*, not zero: means are taken over the days with usage in the window, sums add up
      the days with usage, ``active_days_30d`` counts them. Ratios (``*_trend``,
      ``bill_change_7d_30d``: 7-day mean / 30-day mean; ``dropped_call_rate_7d``: dropped calls
      per 100 minutes over 7 days) are NaN where the denominator is 0.

    Only rows dated on or before a feature date enter its features. Duplicate
    (customer_id, date) rows keep the last one in input order. Pure and deterministic: each
    window is summed in a fixed order, so a day's values do not depend on ``start``/``end``.
    """
    start, end = _as_date(start), _as_date(end)
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    if usage.empty:
        return _empty_features(usage)
    base = LOOKBACK_DAYS - 1  # grid column of `start`
    first = start - timedelta(days=base)
    n_out = (end - start).days + 1
    n_days = n_out + base

    # day of every row on a grid starting at `first`; rows outside the grid are ignored
    stamps = pd.to_datetime(usage["date"])
    if stamps.dt.tz is not None:
        stamps = stamps.dt.tz_convert(UTC).dt.tz_localize(None)
    offsets = stamps.to_numpy(dtype="datetime64[ns]") - np.datetime64(first, "ns")
    day_all = offsets // np.timedelta64(1, "D")
    pos = np.flatnonzero((day_all >= 0) & (day_all < n_days))
    codes, ids = pd.factorize(usage["customer_id"].to_numpy(dtype=object)[pos], sort=True)
    day = day_all[pos].astype(np.int64)

    # duplicate (customer, day) rows: the last one in input order wins
    key = codes.astype(np.int64) * n_days + day
    _, last_rev = np.unique(key[::-1], return_index=True)
    keep = np.sort(len(key) - 1 - last_rev)
    pos, codes, day = pos[keep], codes[keep], day[keep]

    # only customers with a row in [start, end] get output rows
    wanted = np.zeros(len(ids), dtype=bool)
    wanted[codes[day >= base]] = True
    if not wanted.any():
        return _empty_features(usage)
    remap = np.cumsum(wanted) - 1
    rows_kept = wanted[codes]
    pos, cust, day = pos[rows_kept], remap[codes[rows_kept]], day[rows_kept]
    ids = np.asarray(ids, dtype=object)[wanted]
    shape = (len(ids), n_days)

    row_of = np.full(shape, -1, dtype=np.int64)
    row_of[cust, day] = pos

    def grid(column: str) -> tuple[np.ndarray, np.ndarray]:
        values = pd.to_numeric(usage[column], errors="coerce").to_numpy(
            dtype="float64", na_value=np.nan
        )[pos]
        present = ~np.isnan(values)
        val = np.zeros(shape)
        cnt = np.zeros(shape)
        val[cust[present], day[present]] = values[present]
        cnt[cust[present], day[present]] = 1.0
        return val, cnt

    def window(g: np.ndarray, width: int) -> np.ndarray:
        """Sum over the ``width`` days ending on each output day (fixed summation order)."""
        total = g[:, base : base + n_out].copy()
        for lag in range(1, width):
            total += g[:, base - lag : base - lag + n_out]
        return total

    def ratio(num: np.ndarray, den: np.ndarray, scale: float = 1.0) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = scale * num / den
        return np.where((den == 0) | ~np.isfinite(out), np.nan, out)

    minutes, minutes_n = grid("minutes")
    data_gb, data_gb_n = grid("data_gb")
    dropped, _ = grid("dropped_calls")
    tickets, _ = grid("support_tickets")
    bill, bill_n = grid("bill_amount")
    active = (row_of >= 0).astype(np.float64)

    minutes_sum_7 = window(minutes, 7)
    minutes_mean_7 = ratio(minutes_sum_7, window(minutes_n, 7))
    minutes_mean_30 = ratio(window(minutes, 30), window(minutes_n, 30))
    data_mean_7 = ratio(window(data_gb, 7), window(data_gb_n, 7))
    data_mean_30 = ratio(window(data_gb, 30), window(data_gb_n, 30))
    bill_mean_7 = ratio(window(bill, 7), window(bill_n, 7))
    bill_mean_30 = ratio(window(bill, 30), window(bill_n, 30))
    dropped_7 = window(dropped, 7)

    out_rows = row_of[:, base:]
    c_idx, d_idx = np.nonzero(out_rows >= 0)  # row-major: sorted by customer, then day
    src = out_rows[c_idx, d_idx]

    def pick(a: np.ndarray) -> np.ndarray:
        return a[c_idx, d_idx]

    out_day = pd.Timestamp(start) + pd.to_timedelta(d_idx, unit="D")
    asof = (out_day + pd.Timedelta(days=1)).tz_localize(UTC)
    result = pd.DataFrame(
        {
            "customer_id": ids[c_idx],
            "date": out_day.astype("datetime64[ns]"),
            "event_timestamp": asof,
            "features_asof": asof,
        }
    )
    for col in PROFILE_COLUMNS:
        result[col] = usage[col].iloc[src].to_numpy()
    result["tenure_months"] = result["tenure_months"].astype("Int64")
    result["monthly_charge"] = result["monthly_charge"].astype("float64")
    result["minutes_mean_7d"] = pick(minutes_mean_7)
    result["minutes_mean_30d"] = pick(minutes_mean_30)
    result["data_gb_mean_7d"] = pick(data_mean_7)
    result["data_gb_mean_30d"] = pick(data_mean_30)
    result["minutes_trend"] = pick(ratio(minutes_mean_7, minutes_mean_30))
    result["data_gb_trend"] = pick(ratio(data_mean_7, data_mean_30))
    result["dropped_calls_sum_7d"] = pick(dropped_7).round().astype("int64")
    result["dropped_call_rate_7d"] = pick(ratio(dropped_7, minutes_sum_7, 100.0))
    result["support_tickets_sum_30d"] = pick(window(tickets, 30)).round().astype("int64")
    result["bill_mean_7d"] = pick(bill_mean_7)
    result["bill_change_7d_30d"] = pick(ratio(bill_mean_7, bill_mean_30))
    result["active_days_30d"] = pick(window(active, 30)).round().astype("int64")
    return result


def _empty_features(usage: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "customer_id": pd.Series(dtype="object"),
            "date": pd.Series(dtype="datetime64[ns]"),
            "event_timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
            "features_asof": pd.Series(dtype="datetime64[ns, UTC]"),
        }
    )
    for col in PROFILE_COLUMNS:
        out[col] = pd.Series(dtype=usage[col].dtype if col in usage else "object")
    out["tenure_months"] = out["tenure_months"].astype("Int64")
    out["monthly_charge"] = out["monthly_charge"].astype("float64")
    for col in AGGREGATE_COLUMNS:
        integer = col.endswith(("sum_7d", "sum_30d")) or col == "active_days_30d"
        out[col] = pd.Series(dtype="int64" if integer else "float64")
    return out


def _as_date(value: date | datetime | str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def load_builder(dotted: str) -> Callable[[pd.DataFrame, date, date], pd.DataFrame]:
    """Resolve ``"package.module:function"`` to the function."""
    return load_function(dotted, "feature builder")


# ---- incremental build --------------------------------------------------------------------------


def feature_key(table: str, day: date) -> str:
    """Key (in the features zone) of one day's file of feature table ``table``."""
    return f"{table}/date={day.isoformat()}/{PART_NAME}"


def manifest_key(table: str) -> str:
    """Key (in the features zone) of the build manifest of feature table ``table``."""
    return f"_manifests/{table}.json"


def read_manifest(lake: Lake, table: str) -> dict[str, Any]:
    """The build manifest of ``table`` (empty when nothing was built yet)."""
    features = lake.zone("features")
    if not features.exists(manifest_key(table)):
        return {"version": MANIFEST_VERSION, "dates": {}}
    manifest: dict[str, Any] = read_json(features, manifest_key(table))
    return manifest


def latest_feature_timestamp(lake: Lake, table: str) -> datetime | None:
    """``event_timestamp`` of the newest built day of ``table`` with rows (None when there is
    none)."""
    entries = read_manifest(lake, table).get("dates", {})
    days = [date.fromisoformat(d) for d, e in entries.items() if int(e.get("rows", 0)) > 0]
    if not days:
        return None
    return datetime.combine(max(days) + timedelta(days=1), datetime.min.time(), tzinfo=UTC)


def build_features(
    lake: Lake, usecase: UseCase, *, dates: list[date] | None = None, force: bool = False
) -> list[date]:
    """(Re)build the feature files of the days whose inputs changed, in every feature table of
    the use case (:attr:`UseCase.feature_tables`); returns those days.

    ``dates=None`` considers every day with a validated partition of the source dataset (and
    removes the files of days whose partitions are gone); explicit ``dates`` limit the build
    to those days. ``force`` rebuilds them even when their fingerprint is unchanged. The
    manifest is written last, so a build that dies half-way is redone by the next run.

    In steps, for callers that spread the ranges over workers: :func:`plan_features`, then per
    range of :func:`date_ranges` :func:`compute_features` (pure) and
    :func:`write_feature_days`, then :func:`finish_features`.
    """
    _feature_spec(usecase)
    done: set[date] = set()
    for table in usecase.feature_tables:
        plan = plan_features(lake, usecase, dates=dates, force=force, table=table)
        rows: dict[date, int] = {}
        for days in date_ranges(plan.todo, plan.lookback_days):
            built = compute_features(lake, usecase, days, plan.inputs(days), table=table)
            rows.update(write_feature_days(lake, plan.table, days, built))
        done.update(finish_features(lake, plan, rows))
    return sorted(done)


@dataclass(frozen=True)
class FeaturePlan:
    """What a feature build has to do: the days to (re)build and the inputs they read."""

    table: str  # the feature table built
    source: FeatureTable  # what builds it
    header: dict[str, Any]  # builder and window the manifest was made with
    entries: dict[str, dict[str, Any]]  # manifest entries still valid, by ISO day
    fingerprints: dict[date, str]  # of every considered day
    todo: list[date]  # days to build, sorted
    gone: list[str]  # ISO days whose validated partitions are gone: their files go
    partitions: dict[date, list[ObjectInfo]]  # the source dataset's validated files by day
    lookback_days: int

    def inputs(self, days: list[date]) -> dict[date, list[ObjectInfo]]:
        """The validated files a range of days reads (its lookback window included)."""
        first = days[0] - timedelta(days=self.lookback_days - 1)
        return {d: objs for d, objs in self.partitions.items() if first <= d <= days[-1]}


def plan_features(
    lake: Lake,
    usecase: UseCase,
    *,
    dates: list[date] | None = None,
    force: bool = False,
    table: FeatureTable | None = None,
) -> FeaturePlan:
    """Which days of ``table`` (default: the main feature table) to build (see
    :func:`build_features`); reads the manifest, writes nothing."""
    spec = table or _main_table(usecase)
    dataset = usecase.datasets[spec.source_dataset]
    partitions = validated_partitions(lake, dataset)
    manifest = read_manifest(lake, spec.name)
    header = _manifest_header(spec)
    entries: dict[str, dict[str, Any]] = dict(manifest.get("dates", {}))
    if {k: manifest.get(k) for k in header} != header:
        entries = {}  # another builder or window: every day is stale

    wanted = sorted(partitions) if dates is None else sorted({_as_date(d) for d in dates})
    prints = {d: _fingerprint(partitions, d, spec.lookback_days, header) for d in wanted}
    todo = [
        d for d in wanted if force or entries.get(d.isoformat(), {}).get("fingerprint") != prints[d]
    ]
    gone: list[str] = []
    if dates is None:
        gone = sorted(k for k in entries if date.fromisoformat(k) not in partitions)
    return FeaturePlan(
        table=spec.name,
        source=spec,
        header=header,
        entries=entries,
        fingerprints=prints,
        todo=todo,
        gone=gone,
        partitions=partitions,
        lookback_days=spec.lookback_days,
    )


def date_ranges(days: list[date], lookback: int, *, parts: int = 1) -> list[list[date]]:
    """Cut sorted days into ranges that are built independently.

    First into runs whose lookback windows overlap (one builder call each, at most
    :data:`MAX_RUN_DAYS` long); with ``parts > 1`` runs are cut further into ranges of at most
    ``ceil(len(days) / parts)`` days, so that ``parts`` workers get about equal shares. A day's
    features do not depend on the range it is built in (the builder is pure and windows are
    fixed), so any cut gives the same rows; smaller ranges re-read more lookback.
    """
    if parts < 1:
        raise ValueError(f"parts must be at least 1, got {parts}")
    size = max(1, -(-len(days) // parts))
    return [
        run[i : i + size] for run in _clusters(days, lookback) for i in range(0, len(run), size)
    ]


def compute_features(
    lake: Lake,
    usecase: UseCase,
    days: list[date],
    partitions: dict[date, list[ObjectInfo]],
    *,
    table: FeatureTable | None = None,
) -> dict[date, pd.DataFrame]:
    """The rows of feature table ``table`` (default: the main one) of a range of days, by day
    (days without rows are left out).

    Pure: reads the given validated ``partitions`` (those of :meth:`FeaturePlan.inputs`) and
    writes nothing, so ranges can be computed side by side on any worker that sees the lake.
    """
    spec = table or _main_table(usecase)
    dataset = usecase.datasets[spec.source_dataset]
    window_start = days[0] - timedelta(days=spec.lookback_days - 1)
    usage = read_validated(lake, dataset, first=window_start, last=days[-1], partitions=partitions)
    builder = load_builder(spec.builder)
    built = builder(usage, days[0], days[-1]) if not usage.empty else usage.iloc[0:0]
    by_day = _split_by_day(built)
    return {day: by_day[day] for day in days if day in by_day and not by_day[day].empty}


def write_feature_days(
    lake: Lake, table: str, days: list[date], built: dict[date, pd.DataFrame]
) -> dict[date, int]:
    """Write (or, without rows, remove) the file of ``table`` of each day; returns rows per
    day."""
    features = lake.zone("features")
    rows: dict[date, int] = {}
    for day in days:
        frame = built.get(day)
        if frame is None or frame.empty:
            features.delete(feature_key(table, day))
            rows[day] = 0
        else:
            _write_feature_file(lake, table, day, frame)
            rows[day] = len(frame)
    return rows


def finish_features(lake: Lake, plan: FeaturePlan, rows: dict[date, int]) -> list[date]:
    """Remove the files of gone days and write the manifest (last); returns the built days.

    ``rows`` must hold every day of ``plan.todo`` (what :func:`write_feature_days` returned).
    """
    missing = [d.isoformat() for d in plan.todo if d not in rows]
    if missing:
        raise FeatureBuildError(f"feature days planned but not written: {', '.join(missing)}")
    features = lake.zone("features")
    entries = dict(plan.entries)
    for key in plan.gone:
        features.delete(feature_key(plan.table, date.fromisoformat(key)))
        entries.pop(key, None)
    for day in plan.todo:
        entries[day.isoformat()] = {"fingerprint": plan.fingerprints[day], "rows": rows[day]}
    if plan.todo or plan.gone:
        manifest = {**plan.header, "dates": dict(sorted(entries.items()))}
        write_json(features, manifest_key(plan.table), manifest)
    return list(plan.todo)


def _feature_spec(usecase: UseCase) -> FeatureSpec:
    if usecase.features is None:
        raise FeatureBuildError(f"use case {usecase.name!r} defines no features")
    return usecase.features


def _main_table(usecase: UseCase) -> FeatureTable:
    _feature_spec(usecase)
    return usecase.feature_tables[0]


def _manifest_header(spec: FeatureTable) -> dict[str, Any]:
    return {
        "version": MANIFEST_VERSION,
        "source_dataset": spec.source_dataset,
        "builder": spec.builder,
        "lookback_days": spec.lookback_days,
    }


def _fingerprint(
    partitions: dict[date, list[ObjectInfo]], day: date, lookback: int, header: dict[str, Any]
) -> str:
    first = day - timedelta(days=lookback - 1)
    inputs = [[o.key, o.etag] for d, objs in partitions.items() if first <= d <= day for o in objs]
    blob = json.dumps({"header": header, "day": day.isoformat(), "inputs": inputs})
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _clusters(days: list[date], lookback: int) -> list[list[date]]:
    """Split sorted days into runs whose windows overlap (one builder call per run), each at
    most :data:`MAX_RUN_DAYS` long so that memory stays bounded on a long history."""
    runs: list[list[date]] = []
    for day in days:
        if (
            runs
            and (day - runs[-1][-1]).days <= lookback
            and (day - runs[-1][0]).days < MAX_RUN_DAYS
        ):
            runs[-1].append(day)
        else:
            runs.append([day])
    return runs


def _split_by_day(built: pd.DataFrame) -> dict[date, pd.DataFrame]:
    if built.empty:
        return {}
    days = pd.to_datetime(built["date"]).dt.date
    return {day: rows for day, rows in built.groupby(days, sort=True)}


def _write_feature_file(lake: Lake, table: str, day: date, rows: pd.DataFrame) -> None:
    """One day's rows, with Parquet types the DuckDB offline store reads natively."""
    out = rows.reset_index(drop=True).copy()
    out["date"] = pd.to_datetime(out["date"]).dt.date  # date32, like the hive partition value
    for col in ("event_timestamp", "features_asof"):  # DuckDB reads timestamp[us, UTC] natively
        out[col] = pd.to_datetime(out[col], utc=True).astype("datetime64[us, UTC]")
    write_parquet(lake.zone("features"), feature_key(table, day), out)


# ---- Feast --------------------------------------------------------------------------------------


OFFLINE_MIRROR = "offline-mirror/features"  # under the state dir: the S3 lake's features/ zone


def offline_features_dir(settings: Settings) -> Path:
    """The local folder Feast's DuckDB offline store reads the feature table from.

    For a local lake it is the lake's own ``features/`` zone. For an S3 lake it is a mirror of
    that zone under the state directory (``<state>/offline-mirror/features``), kept in sync by
    :func:`sync_offline_source`: DuckDB reads ``s3://`` only through its ``httpfs`` extension,
    which it downloads at first use — not possible without internet, and DuckDB 2's extension
    is not on PyPI. In production the offline store is one of Feast's warehouse stores
    (Spark, Snowflake, BigQuery) instead; see docs/production.md.
    """
    if settings.is_local:
        return settings.local_root / "features"
    return settings.state_path / OFFLINE_MIRROR


def feature_source_path(settings: Settings, table: str) -> str:
    """Absolute location of feature table ``table`` for the offline store (a glob over all
    days). A Feast repository's file source named ``table`` reads this path."""
    return str(offline_features_dir(settings) / table / "date=*" / "*.parquet")


def source_path_problems(settings: Settings, sources: Iterable[Any]) -> list[str]:
    """What is wrong with the paths of a repository's file sources: each must read the feature
    table it is named after, where these settings put it (:func:`feature_source_path`)."""
    problems = []
    for source in sources:
        path = getattr(source, "path", None)
        expected = feature_source_path(settings, source.name)
        if path is not None and path != expected:
            problems.append(
                f"feature source {source.name!r} reads {path}, but these settings put the "
                f"feature table {source.name!r} at {expected}"
            )
    return problems


def sync_offline_source(settings: Settings, lake: Lake | None = None) -> MirrorResult | None:
    """Bring the offline store's copy of the feature table up to date with the lake.

    A no-op (None) for a local lake, which the offline store reads in place. For an S3 lake the
    ``features/`` zone is mirrored into :func:`offline_features_dir` through the storage layer:
    only partitions that are new or changed (by etag) are copied, deleted ones are removed.
    Call it after the feature table changed and before the offline store is read
    (materialisation, historical features); :func:`feature_store` does so when it builds a store.
    """
    if settings.is_local:
        return None
    lake = lake or Lake.from_settings(settings)
    return mirror_to_local(lake.zone("features"), LocalStorage(offline_features_dir(settings)))


def repo_config_dict(settings: Settings) -> dict[str, Any]:
    """The Feast repo configuration for these settings (what feature_store.yaml holds)."""
    state = settings.state_path
    online: dict[str, Any]
    provider = "local"
    if settings.online_store == "redis":
        online = {"type": "redis", "connection_string": settings.redis_url}
    else:  # one row per entity, written in bulk (tasks/online_sqlite.py)
        online = {"type": ONLINE_SQLITE, "path": str(state / ONLINE_SQLITE_FILE)}
        provider = ONLINE_SQLITE_PROVIDER
    return {
        "project": settings.feast_project,
        "provider": provider,
        "registry": {
            "registry_type": "file",
            "path": str(state / "feast_registry.db"),
            "cache_ttl_seconds": 60,
        },
        "offline_store": {"type": "duckdb"},
        "online_store": online,
        "entity_key_serialization_version": 3,
    }


def render_feature_store_yaml(settings: Settings) -> str:
    """``feature_store.yaml`` for these settings, with absolute paths (for ``feast -f``)."""
    import yaml

    from driftloop.redact import redact

    head = "# Rendered by driftloop from its settings; use with: feast -f <this file> ...\n"
    config = repo_config_dict(settings)
    online = config["online_store"]
    if (
        "connection_string" in online
        and redact(online["connection_string"]) != online["connection_string"]
    ):  # a password never lands in the file: feast expands the variable when it reads it
        online["connection_string"] = "${DRIFTLOOP_REDIS_URL}"
        head += "# DRIFTLOOP_REDIS_URL (it holds a password) must be set where feast runs\n"
    return head + yaml.safe_dump(config, sort_keys=False)


def write_feature_store_yaml(settings: Settings) -> Path:
    """Write ``<state>/feature_store.yaml`` for the feast CLI (``feast -f <it> plan``)."""
    settings.state_path.mkdir(parents=True, exist_ok=True)
    path = settings.state_path / "feature_store.yaml"
    path.write_text(render_feature_store_yaml(settings), encoding="utf-8")
    return path


def feature_store(settings: Settings, *, sync_offline: bool = True) -> FeatureStore:
    """A Feast store configured from the settings (online: SQLite by default, or Redis).

    With an S3 lake the offline store reads a local mirror of the feature table, which is
    synced first (:func:`sync_offline_source`), so a store built after the feature table changed
    reads the new rows. Flows build a store right before they read; a reader of the online store
    only (the inference service) passes ``sync_offline=False``.
    """
    from feast import FeatureStore, RepoConfig

    settings.state_path.mkdir(parents=True, exist_ok=True)
    if sync_offline:
        sync_offline_source(settings)
    config = RepoConfig(repo_path=settings.feature_repo, **repo_config_dict(settings))
    return FeatureStore(config=config)


@dataclass(frozen=True)
class RepoObjects:
    """The Feast objects defined by the modules of a feature repository."""

    entities: list[Any]
    data_sources: list[Any]
    feature_views: list[Any]
    feature_services: list[Any]

    def all(self) -> list[Any]:
        return [*self.entities, *self.data_sources, *self.feature_views, *self.feature_services]


@contextmanager
def _repo_modules(repo: Path) -> Iterator[list[str]]:
    """The repo's modules, importable fresh (as the feast CLI imports them); cleaned up after.

    The same files as ``feast apply`` (every ``.py`` below the repo, minus ``.feastignore``),
    imported as top-level modules with the repo on ``sys.path``, without writing bytecode into
    the repo. Modules of an earlier import are set aside so that settings are read anew.
    """
    from feast.repo_operations import get_repo_files

    repo = repo.resolve()
    names = [".".join(p.relative_to(repo).with_suffix("").parts) for p in get_repo_files(repo)]
    tops = {n.split(".", 1)[0] for n in names}

    def ours(module: str) -> bool:
        return module.split(".", 1)[0] in tops

    saved = {n: m for n, m in sys.modules.items() if ours(n)}
    for n in saved:
        del sys.modules[n]
    bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    sys.path.insert(0, str(repo))
    try:
        yield names
    finally:
        sys.path.remove(str(repo))
        sys.dont_write_bytecode = bytecode
        for n in [n for n in sys.modules if ours(n)]:
            del sys.modules[n]
        sys.modules.update(saved)


def load_repo_objects(repo: Path, errors: dict[str, Exception] | None = None) -> RepoObjects:
    """Import every module of the feature repository and collect its Feast objects.

    A module that fails to import raises, unless ``errors`` is given: then the failure is
    recorded there (by module name) and the other modules are still read.
    """
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource

    kinds: dict[type, list[Any]] = {Entity: [], DataSource: [], FeatureView: [], FeatureService: []}
    with _repo_modules(repo) as names:
        for name in names:
            try:
                module = importlib.import_module(name)
            except Exception as exc:
                if errors is None:
                    raise
                errors[name] = exc
                continue
            for attr in dir(module):
                obj = getattr(module, attr)
                for kind, found in kinds.items():
                    if isinstance(obj, kind) and not any(obj is o for o in found):
                        found.append(obj)
    return RepoObjects(
        entities=kinds[Entity],
        data_sources=kinds[DataSource],
        feature_views=kinds[FeatureView],
        feature_services=kinds[FeatureService],
    )


def apply_repo(settings: Settings, store: FeatureStore | None = None) -> FeatureStore:
    """Register the objects of ``feature_repo/`` (what ``feast apply`` does), return the store.

    Objects registered earlier but no longer defined are removed, and the online store's
    tables are created or dropped accordingly. Also writes ``<state>/feature_store.yaml`` so
    the feast CLI can be pointed at the same store.
    """
    from feast.repo_contents import RepoContents
    from feast.repo_operations import extract_objects_for_apply_delete

    store = store or feature_store(settings)
    objects = load_repo_objects(settings.feature_repo)
    problems = source_path_problems(settings, objects.data_sources)
    if problems:
        raise FeatureRepoError(
            "; ".join(problems) + "; a repository's sources take their paths from the "
            "DRIFTLOOP_* environment (feature_source_path), so build the settings from the same one"
        )
    repo = RepoContents(
        projects=[],
        data_sources=objects.data_sources,
        entities=objects.entities,
        feature_views=objects.feature_views,
        feature_services=objects.feature_services,
        on_demand_feature_views=[],
        stream_feature_views=[],
        label_views=[],
        permissions=[],
    )
    to_apply, to_delete, _, _ = extract_objects_for_apply_delete(
        settings.feast_project, store.registry, repo
    )
    store.apply(to_apply, objects_to_delete=to_delete, partial=False)
    write_feature_store_yaml(settings)
    return store


def materialize(
    store: FeatureStore, end: datetime, *, since: datetime | None = None
) -> dict[str, tuple[datetime, datetime]]:
    """Load the online store with the latest feature rows up to ``end``, incrementally.

    Each feature view continues from where its last materialisation ended; a view never
    materialised, or whose rows the embedded SQLite store no longer holds, starts at ``end - ttl`` (Feast's own first incremental run starts at
    *now* - ttl, which skips historical data). ``since`` reaches back further, e.g. after
    days were rebuilt. Returns the interval loaded per view (views already up to date are
    left out).
    """
    end = _utc(end)
    done: dict[str, tuple[datetime, datetime]] = {}
    for view in store.list_feature_views():
        previous = view.most_recent_end_time
        if previous is not None and not _online_holds(store, view):
            previous = None  # the online database was lost or replaced: load it again
        if previous is not None:
            start = _utc(previous)
        elif view.ttl and view.ttl > timedelta(0):
            start = end - view.ttl
        else:
            start = datetime(1970, 1, 1, tzinfo=UTC)
        if since is not None:
            start = min(start, _utc(since))
        if start >= end:
            continue
        store.materialize(start_date=start, end_date=end, feature_views=[view.name])
        done[view.name] = (start, end)
    return done


def _online_holds(store: FeatureStore, view: Any) -> bool:
    """Whether the embedded online store still holds rows of ``view`` (other stores: assumed)."""
    if store.config.online_store.type != ONLINE_SQLITE:
        return True
    from tasks.online_sqlite import holds

    return holds(store.config, view)


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


@dataclass(frozen=True)
class ServiceJoin:
    """How a feature service's views are joined to entity rows: the views keyed by the entity
    first, then, per context key, the views keyed by it (looked up with the key the entity's
    views serve). ``steps`` is ``[(join key, ["view:feature", ...]), ...]``, the entity's first.
    """

    entity: str
    steps: list[tuple[str, list[str]]]

    @property
    def single(self) -> bool:
        """Every view is keyed by the entity: one lookup does."""
        return len(self.steps) == 1


def service_join(store: FeatureStore, service: Any, entity: str) -> ServiceJoin:
    """The :class:`ServiceJoin` of ``service`` (a FeatureService) for entity rows keyed by
    ``entity``. Raises :class:`FeatureRepoError` for a view keyed by several columns, or by a
    context key that the entity's views do not serve."""
    by_key: dict[str, list[str]] = {entity: []}
    for projection in service.feature_view_projections:
        keys = store.get_feature_view(projection.name).join_keys
        if len(keys) != 1:
            raise FeatureRepoError(
                f"feature view {projection.name!r} of feature service {service.name!r} joins on "
                f"{keys}; driftloop joins on one key per view"
            )
        refs = [f"{projection.name_to_use()}:{f.name}" for f in projection.features]
        by_key.setdefault(keys[0], []).extend(refs)
    served = {ref.split(":", 1)[1] for ref in by_key[entity]}
    for key in by_key:
        if key != entity and key not in served:
            raise FeatureRepoError(
                f"feature service {service.name!r} has views keyed by {key!r}, but none of its "
                f"views keyed by {entity!r} serves {key!r} to look them up with"
            )
    return ServiceJoin(entity, list(by_key.items()))


def join_context(
    rows: pd.DataFrame,
    key: str,
    refs: list[str],
    lookup: Callable[[pd.DataFrame], pd.DataFrame],
    row_id: str,
) -> pd.DataFrame:
    """``rows`` with the features ``lookup`` finds for their ``key`` (null where the key is
    null or unknown). ``lookup`` gets the rows that have a key (``row_id``, ``key`` and, offline,
    ``event_timestamp``) and returns their features with ``row_id``; columns ``rows`` already
    has (the key, timestamps, ``features_asof``) are not taken from it."""
    known = rows.loc[rows[key].notna(), [c for c in (row_id, key, "event_timestamp") if c in rows]]
    found = lookup(known.astype({key: str})) if len(known) else pd.DataFrame({row_id: []})
    extra = [c for c in found.columns if c not in rows.columns]
    out = rows.merge(found[[row_id, *extra]], on=row_id, how="left")
    for name in (ref.split(":", 1)[1] for ref in refs):
        if name not in out.columns:  # no row had a key: the features are null
            out[name] = None
    return out


def online_features(
    store: FeatureStore, ids: list[str], service: str, *, entity: str
) -> pd.DataFrame:
    """The online feature vectors of these entities through a feature service.

    ``entity`` is the join key of the service's Feast entity (the use case's ``entity``). One
    row per requested id, in order: ``entity`` then the service's features (nulls for an id the
    online store does not know).
    """
    fs = store.get_feature_service(service)
    return read_online(store, fs, service_join(store, fs, entity), ids)


def read_online(
    store: FeatureStore, service: Any, join: ServiceJoin, ids: list[str]
) -> pd.DataFrame:
    """One row per id, in order: ``join.entity`` then the features of ``service`` (a
    FeatureService) from the online store, context views looked up with the key the entity's
    views serve."""
    rows = [{join.entity: str(c)} for c in ids]
    if join.single:
        df: pd.DataFrame = store.get_online_features(features=service, entity_rows=rows).to_df()
    else:
        df = store.get_online_features(features=join.steps[0][1], entity_rows=rows).to_df()
        df["_row"] = np.arange(len(df))
        for key, refs in join.steps[1:]:

            def lookup(known: pd.DataFrame, key: str = key, refs: list[str] = refs) -> pd.DataFrame:
                wanted = [{key: v} for v in known[key]]
                found = store.get_online_features(features=refs, entity_rows=wanted).to_df()
                return found.drop(columns=[key]).assign(_row=known["_row"].to_numpy())

            df = join_context(df, key, refs, lookup, "_row")
        df = df.sort_values("_row").drop(columns="_row")
    names = [f.name for p in service.feature_view_projections for f in p.features]
    return df[[join.entity, *names]].reset_index(drop=True)


# ---- what the flow publishes --------------------------------------------------------------------


def day_start(day: date) -> datetime:
    """Midnight UTC at the start of ``day``."""
    return datetime.combine(day, datetime.min.time(), tzinfo=UTC)


def flow_summary(
    lake: Lake,
    table: str,
    built: list[date],
    loaded: dict[str, tuple[datetime, datetime]],
    *,
    project: str,
) -> dict[str, Any]:
    """What a features run did: days built, rows, online-store intervals, and a table."""
    entries = read_manifest(lake, table).get("dates", {})
    days: list[dict[str, Any]] = [
        {"day": d.isoformat(), "rows": int(entries.get(d.isoformat(), {}).get("rows", 0))}
        for d in built
    ]
    latest = latest_feature_timestamp(lake, table)
    materialized = {v: [s.isoformat(), e.isoformat()] for v, (s, e) in sorted(loaded.items())}
    shown = days or [{"view": v, "from": s, "to": e} for v, (s, e) in materialized.items()]
    rows = sum(int(d["rows"]) for d in days)
    return {
        "project": project,
        "dates_built": [d.isoformat() for d in built],
        "rows": rows,
        "materialized": materialized,
        "latest_feature_timestamp": latest.isoformat() if latest else None,
        "totals": {"days_built": len(built), "rows": rows, "views_materialized": len(loaded)},
        "table": shown,
    }


def materialized_event(summary: dict[str, Any], *, project: str) -> dict[str, Any]:
    """The Prefect event (name, resource, payload) announcing fresh features."""
    return {
        "event": MATERIALIZED_EVENT,
        "resource": {
            "prefect.resource.id": f"driftloop.features.{project}",
            "prefect.resource.name": project,
        },
        "payload": {
            "dates": summary["dates_built"],
            "rows": summary["rows"],
            "materialized": summary["materialized"],
            "latest_feature_timestamp": summary["latest_feature_timestamp"],
        },
    }
