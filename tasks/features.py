"""Features: validated rows → daily feature rows in the lake (the incremental build).

The telco use case's feature function is :mod:`examples.telco_churn`. :func:`build_features`
does an incremental build of the use case's feature table in the ``features`` zone, one Parquet
file per day at ``features/<table>/date=YYYY-MM-DD/part-00000.parquet`` (``<table>``:
``features.table`` of the use case, ``customer_daily`` for telco). A manifest
(``features/_manifests/<table>.json``) maps every built day to a fingerprint of its inputs (keys
and etags of the validated partitions in the day's lookback window, and the source code of the
builder: :func:`tasks.feature_code.builder_code`); only days whose fingerprint changed are
rebuilt, so a re-run on unchanged input and code writes nothing, and a change of the builder's
code rebuilds every day. This module also keeps what the features flow publishes
(:func:`flow_summary`, :func:`materialized_event`).

Elsewhere: the Feast side (the store from the settings, ``feast apply``, materialisation, online
reads) is :mod:`tasks.feature_store`; resolving and hashing the builder's code is
:mod:`tasks.feature_code`.

Timestamps: a day's features are known once the day is over, so the row of day ``d`` carries
``event_timestamp = features_asof = d + 1 day, 00:00 UTC``. A point-in-time lookup at a snapshot
taken at midnight of day ``s`` therefore sees the features of day ``s - 1`` at the latest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict

import pandas as pd

from tasks.artifacts import Table
from tasks.feature_code import builder_code, load_builder
from tasks.ingest import read_validated, validated_partitions
from tasks.storage import Lake, ObjectInfo, read_json, write_json, write_parquet

if TYPE_CHECKING:
    from feast import FeatureStore

    from driftloop_config.usecase import FeatureSpec, FeatureTable, UseCase

PART_NAME = "part-00000.parquet"
MANIFEST_VERSION = 1
MATERIALIZED_EVENT = "driftloop.features.materialized"

MAX_RUN_DAYS = 60  # feature days computed per builder call (bounds memory)


class FeatureBuildError(RuntimeError):
    """The feature build cannot proceed; the message says why."""


def _as_date(value: date | datetime | str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


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


def _compute_here(calls: Sequence[Mapping[str, Any]]) -> list[dict[date, pd.DataFrame]]:
    return [compute_features(**call) for call in calls]


def build_features(
    lake: Lake,
    usecase: UseCase,
    *,
    dates: list[date] | None = None,
    force: bool = False,
    parts: int = 1,
    plan: Callable[..., FeaturePlan] | None = None,
    compute: Callable[[Sequence[Mapping[str, Any]]], Iterable[dict[date, pd.DataFrame]]] = (
        _compute_here
    ),
    write: Callable[..., dict[date, int]] | None = None,
    finish: Callable[..., list[date]] | None = None,
) -> list[date]:
    """(Re)build the feature files of the days whose inputs changed, in every feature table of
    the use case (:attr:`UseCase.feature_tables`, the main one first); returns those days.

    ``dates=None`` considers every day with a validated partition of the source dataset (and
    removes the files of days whose partitions are gone); explicit ``dates`` limit the build
    to those days. ``force`` rebuilds them even when their fingerprint is unchanged. The
    manifest is written last, so a build that dies half-way is redone by the next run.

    The steps per table: :func:`plan_features`, then the ranges of :func:`date_ranges` (at most
    ``parts``) go to ``compute`` (given the keyword arguments of :func:`compute_features` per
    range, in order; it may run them anywhere: they are pure), each range's days are written
    by :func:`write_feature_days` in this process as soon as they are computed, then
    :func:`finish_features`. The features flow passes its Prefect tasks for the steps.
    """
    plan = plan or plan_features
    write = write or write_feature_days
    finish = finish or finish_features
    _feature_spec(usecase)
    done: set[date] = set()
    for table in usecase.feature_tables:
        todo = plan(lake, usecase, dates=dates, force=force, table=table)
        ranges = date_ranges(todo.todo, todo.lookback_days, parts=parts)
        computed = compute(
            [
                {
                    "lake": lake,
                    "usecase": usecase,
                    "days": days,
                    "partitions": todo.inputs(days),
                    "table": table,
                }
                for days in ranges
            ]
        )
        rows: dict[date, int] = {}
        for days, frames in zip(ranges, computed, strict=True):
            rows |= write(lake, todo.table, days, frames)
        done.update(finish(lake, todo, rows))
    return sorted(done)


def refresh_online(
    store: FeatureStore,
    lake: Lake,
    usecase: UseCase,
    built: list[date],
    *,
    enabled: bool = True,
    materialize: Callable[..., dict[str, tuple[datetime, datetime]]] | None = None,
) -> dict[str, tuple[datetime, datetime]]:
    """Load the online store up to the newest feature row of the main table, reaching back to
    the first day ``built`` when days were rebuilt (:func:`tasks.feature_store.materialize`);
    the interval loaded per view. Nothing when not ``enabled`` or without features."""
    from tasks.feature_store import materialize as materialize_views

    end = latest_feature_timestamp(lake, usecase.feature_table)
    if not enabled or end is None:
        return {}
    since = day_start(min(built)) + timedelta(days=1) if built else None
    return (materialize or materialize_views)(store, end, since=since)


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
    """What every day of the table was built with; part of every day's fingerprint, so a change
    of any of it (the builder's code included) rebuilds every day."""
    return {
        "version": MANIFEST_VERSION,
        "source_dataset": spec.source_dataset,
        "builder": spec.builder,
        "lookback_days": spec.lookback_days,
        "builder_code": builder_code(spec.builder),
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


# ---- what the flow publishes --------------------------------------------------------------------


def day_start(day: date) -> datetime:
    """Midnight UTC at the start of ``day``."""
    return datetime.combine(day, datetime.min.time(), tzinfo=UTC)


class FeaturesSummary(TypedDict, total=False):
    """What a features run did (:func:`flow_summary`), and with ``training``, what the
    retraining policy said of the new data (:meth:`tasks.policy.TrainingCheck.to_dict`)."""

    project: str
    dates_built: list[str]
    rows: int
    materialized: dict[str, list[str]]
    latest_feature_timestamp: str | None
    totals: dict[str, int]
    table: list[dict[str, Any]]
    training: dict[str, Any]


def flow_summary(
    lake: Lake,
    table: str,
    built: list[date],
    loaded: dict[str, tuple[datetime, datetime]],
    *,
    project: str,
) -> FeaturesSummary:
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


def materialized_event(summary: FeaturesSummary, *, project: str) -> dict[str, Any]:
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


def _did_work(summary: FeaturesSummary) -> bool:
    return bool(summary["dates_built"] or summary["materialized"])


def summary_artifact(summary: FeaturesSummary) -> Table | None:
    """The run's table of days built (or views loaded); none when the run did neither."""
    if not _did_work(summary):
        return None
    return Table("features-summary", summary["table"], description=f"Features: {summary['totals']}")


def summary_events(summary: FeaturesSummary, *, project: str) -> list[dict[str, Any]]:
    """:func:`materialized_event` when the run built days or loaded views; else none."""
    return [materialized_event(summary, project=project)] if _did_work(summary) else []
