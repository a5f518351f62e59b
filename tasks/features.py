"""Features: validated rows → daily feature rows in the lake → Feast (offline + online).

Two parts (the telco use case's feature function is :mod:`examples.telco_churn`):

* :func:`build_features` — incremental build of the use case's feature table in the ``features``
  zone, one Parquet file per day at ``features/<table>/date=YYYY-MM-DD/part-00000.parquet``
  (``<table>``: ``features.table`` of the use case, ``customer_daily`` for telco). A manifest
  (``features/_manifests/<table>.json``) maps every built day to a
  fingerprint of its inputs (keys and etags of the validated partitions in the day's lookback
  window, and the source code of the builder: :func:`builder_code`); only days whose
  fingerprint changed are rebuilt, so a re-run on unchanged input and code writes nothing, and
  a change of the builder's code rebuilds every day.
* The Feast side: :func:`feature_store` builds the store from the driftloop settings (the same
  configuration as ``feature_repo/feature_store.yaml``), :func:`apply_repo` registers the
  definitions of ``feature_repo/`` as ``feast apply`` does, :func:`materialize` loads the online
  store and :func:`online_features` reads it.

Timestamps: a day's features are known once the day is over, so the row of day ``d`` carries
``event_timestamp = features_asof = d + 1 day, 00:00 UTC``. A point-in-time lookup at a snapshot
taken at midnight of day ``s`` therefore sees the features of day ``s - 1`` at the latest.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
import sys
import sysconfig
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import CodeType, ModuleType
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

    from driftloop_config.settings import Settings
    from driftloop_config.usecase import FeatureSpec, FeatureTable, UseCase

PART_NAME = "part-00000.parquet"
MANIFEST_VERSION = 1
MATERIALIZED_EVENT = "driftloop.features.materialized"
# the embedded online store and the provider that materialises into it from Arrow
ONLINE_SQLITE = "tasks.online_sqlite.EntitySqliteOnlineStore"
ONLINE_SQLITE_PROVIDER = "tasks.online_sqlite.Provider"
ONLINE_SQLITE_FILE = "online.db"

MAX_RUN_DAYS = 60  # feature days computed per builder call (bounds memory)


class FeatureBuildError(RuntimeError):
    """The feature build cannot proceed; the message says why."""


class FeatureRepoError(RuntimeError):
    """The Feast repository does not match the driftloop settings."""


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
    """What every day of the table was built with; part of every day's fingerprint, so a change
    of any of it (the builder's code included) rebuilds every day."""
    return {
        "version": MANIFEST_VERSION,
        "source_dataset": spec.source_dataset,
        "builder": spec.builder,
        "lookback_days": spec.lookback_days,
        "builder_code": builder_code(spec.builder),
    }


def builder_code(dotted: str) -> dict[str, str]:
    """SHA-256 of the source of every module whose code the feature builder ``dotted`` runs,
    by module name: the module it is named in, and those of the functions and classes it
    reaches through module globals, transitively (``examples._grid`` for the example builders).
    Modules of the standard library and of installed packages (pandas, numpy) are left out,
    except those of the builder's own top-level package (a builder installed as a package).

    The source is read from the files, as a fresh process imports them: a process that imported
    the builder before its file changed runs the old code (flow runs are fresh processes; a
    long-lived Dask worker must be restarted after a deploy, as for any code change).
    """
    builder = load_builder(dotted)
    named = importlib.import_module(dotted.partition(":")[0])
    package = named.__name__.split(".", 1)[0]
    modules = {named.__name__: named, **_reached_modules(builder, package)}
    return {name: _source_digest(modules[name]) for name in sorted(modules)}


def _reached_modules(start: Any, package: str) -> dict[str, ModuleType]:
    """The modules (ours: see :func:`builder_code`) of the functions and classes ``start``
    reaches through the globals its code names, transitively."""
    found: dict[str, ModuleType] = {}
    seen: set[int] = set()
    todo = [start]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, functools.partial):
            todo.append(obj.func)
            continue
        if isinstance(obj, ModuleType):
            if _ours(obj, package):
                found[obj.__name__] = obj
            continue
        if inspect.isclass(obj):
            module = sys.modules.get(obj.__module__)
            if module is not None and _ours(module, package):
                found[module.__name__] = module
                for member in vars(obj).values():
                    if isinstance(member, staticmethod | classmethod):
                        member = member.__func__
                    if isinstance(member, property):
                        todo += [f for f in (member.fget, member.fset, member.fdel) if f]
                    elif inspect.isfunction(member):
                        todo.append(member)
            continue
        if not callable(obj):
            continue  # a constant: its module's source covers it
        try:
            func = inspect.unwrap(obj)
        except ValueError:  # a cycle of __wrapped__
            func = obj
        if not inspect.isfunction(func):
            todo.append(type(obj))  # a callable object: its class's methods
            continue
        module = sys.modules.get(func.__module__)
        if module is None or not _ours(module, package):
            continue
        found[module.__name__] = module
        for name in _global_names(func.__code__):
            if name in func.__globals__:
                todo.append(func.__globals__[name])
    return found


def _global_names(code: CodeType) -> set[str]:
    """The names a code object (and the functions, lambdas and comprehensions in it) looks up;
    attribute names among them are harmless (a global of that name only adds its module)."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _global_names(const)
    return names


def _ours(module: ModuleType, package: str) -> bool:
    """Whether a module's source is part of what a builder runs: the builder's package, or a
    file outside the standard library and the installed packages (the project's own)."""
    name = module.__name__
    if name == package or name.startswith(package + "."):
        return True
    file = getattr(module, "__file__", None)
    if not file:
        return False  # built in, or a namespace package
    path = Path(file).resolve()
    return not any(path.is_relative_to(lib) for lib in _library_dirs())


@functools.cache
def _library_dirs() -> tuple[Path, ...]:
    paths = sysconfig.get_paths()
    keys = ("stdlib", "platstdlib", "purelib", "platlib")
    return tuple({Path(paths[k]).resolve() for k in keys if k in paths})


def _source_digest(module: ModuleType) -> str:
    """SHA-256 of a module's source file as it is now (read anew, not a cached copy), else of
    the source its loader gives, else of its compiled file, else of its name."""
    file = getattr(module, "__file__", None) or ""

    def read(path: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError:
            return b""

    source = read(file) if file.endswith(".py") else b""
    if not source:
        with suppress(OSError, TypeError):
            source = inspect.getsource(module).encode("utf-8")
    if not source and file:
        source = read(file)
    return hashlib.sha256(source or f"<no source: {module.__name__}>".encode()).hexdigest()


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

    from driftloop_config.redact import redact

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
        with quiet_offline_reads():
            store.materialize(start_date=start, end_date=end, feature_views=[view.name])
        done[view.name] = (start, end)
    return done


@contextmanager
def quiet_offline_reads() -> Iterator[None]:
    """Feast's DuckDB offline store reads Parquet through a DuckDB method that DuckDB has renamed:
    its deprecation warning, once per read, says nothing to a driftloop user."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "fetch_arrow_table", DeprecationWarning)
        yield


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
