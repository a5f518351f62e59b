"""The Feast side of the features: the store, its repository, the online store.

:func:`feature_store` builds the store from the driftloop settings (the same configuration as
``feature_repo/feature_store.yaml``, :func:`repo_config_dict`; :func:`write_feature_store_yaml`
renders it for the feast CLI), :func:`apply_repo` registers the definitions of
``feature_repo/`` as ``feast apply`` does, :func:`materialize` loads the online store and
:func:`online_features` reads it (through a feature service: :func:`service_join`). With an S3
lake the DuckDB offline store reads a local mirror of the feature table
(:func:`sync_offline_source`). The feature table itself is built by :mod:`tasks.features`.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tasks.storage import Lake, LocalStorage, MirrorResult, mirror_to_local

if TYPE_CHECKING:
    from feast import FeatureStore

    from driftloop_config.settings import Settings

# the embedded online store and the provider that materialises into it from Arrow
ONLINE_SQLITE = "tasks.online_sqlite.EntitySqliteOnlineStore"
ONLINE_SQLITE_PROVIDER = "tasks.online_sqlite.Provider"
ONLINE_SQLITE_FILE = "online.db"


class FeatureRepoError(RuntimeError):
    """The Feast repository does not match the driftloop settings."""


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
    return df[[join.entity, *_names(service)]].reset_index(drop=True)


def _names(service: Any) -> list[str]:
    return [f.name for p in service.feature_view_projections for f in p.features]


def read_online_columns(
    store: FeatureStore, service: Any, join: ServiceJoin, ids: list[str]
) -> dict[str, list[Any]]:
    """:func:`read_online` as columns (name -> one value per id; missing: None or NaN), without
    building a frame when the service reads one entity's views (the online service's path)."""
    if not join.single:
        frame = read_online(store, service, join, ids)
        return {c: frame[c].tolist() for c in frame.columns}
    rows = [{join.entity: str(c)} for c in ids]
    answer = store.get_online_features(features=service, entity_rows=rows).to_dict()
    return {c: list(answer[c]) for c in (join.entity, *_names(service))}
