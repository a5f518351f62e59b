"""Online inference: the current champion scoring the use case's entities on their online
features.

Two parts, both plain and testable without a server:

* :class:`ChampionCache` knows which version the ``champion`` alias points to. It re-reads the
  alias at most every ``refresh_seconds`` and loads a model only when the version changed, so a
  promotion (or a rollback) is picked up without a restart and without reloading per request.
  When a new version cannot be loaded, or the registry cannot be read, the model already loaded
  keeps serving and the problem is reported by :meth:`ChampionCache.status`.
* :class:`Predictor` validates entity ids against the use case's id pattern, reads their
  online feature vectors through the champion's feature service and scores them.

Errors carry what the HTTP layer needs: :class:`InvalidIds` (malformed ids → 422),
:class:`UnknownIds` (ids the online store does not know → 404) and :class:`NoChampion` (nothing
to serve yet → 503).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from tasks.model import Columns, FeatureSchema, fast_scorer, is_missing, predict_scores

if TYPE_CHECKING:
    from feast import FeatureStore

    from driftloop_config.settings import Settings
    from driftloop_config.usecase import UseCase

log = logging.getLogger("driftloop.serve")

DEFAULT_REFRESH_SECONDS = 5.0
MAX_BATCH = 1000
#: Model-version tag naming the feature service the version was trained on.
FEATURE_SERVICE_TAG = "driftloop.feature_service"
REGEX_EXPECTATION = "expect_column_values_to_match_regex"

#: (ids, feature service) -> one row per id, in order: the entity's id column then the features,
#: as columns (name -> values) or a frame
FeatureReader = Callable[[list[str], str], Columns | pd.DataFrame]


# ---- errors -------------------------------------------------------------------------------------


class ServeError(RuntimeError):
    """A prediction cannot be made; subclasses say why."""


@dataclass(frozen=True)
class BadId:
    position: int
    value: object


class InvalidIds(ServeError):
    """Some ids are malformed (do not match the use case's id pattern)."""

    def __init__(self, bad: Sequence[BadId], pattern: str | None, entity: str) -> None:
        self.bad = list(bad)
        self.pattern = pattern
        self.entity = entity
        shown = "; ".join(f"[{b.position}] {self.message(b)}" for b in self.bad[:10])
        more = f" (and {len(self.bad) - 10} more)" if len(self.bad) > 10 else ""
        super().__init__(shown + more)

    def message(self, bad: BadId) -> str:
        """Why one id was refused. The id itself is not repeated: an error message must not
        echo what a client sent (it may be large, or not meant to be logged)."""
        if not isinstance(bad.value, str) or not bad.value:
            kind = "an empty string" if bad.value == "" else f"of type {type(bad.value).__name__}"
            return f"{self.entity} must be a non-empty string, got {kind}"
        return f"{self.entity} is malformed: it must match {self.pattern}"


class UnknownIds(ServeError):
    """The online store holds no features for some ids."""

    def __init__(self, ids: Sequence[str], requested: int, entity: str) -> None:
        self.ids = list(ids)
        shown = ", ".join(self.ids[:20]) + (", ..." if len(self.ids) > 20 else "")
        if requested == 1 and len(self.ids) == 1:
            text = f"{entity} {self.ids[0]} is unknown: the online store holds no features for it"
        else:
            text = (
                f"{len(self.ids)} of {requested} ids ({entity}) are unknown (the online store "
                f"holds no features for them): {shown}"
            )
        super().__init__(text)


class NoChampion(ServeError):
    """No champion model can be served (none promoted yet, or it cannot be loaded)."""


# ---- the champion -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Champion:
    """A loaded champion: its version, the fitted model and the features it reads.

    ``scorer``: the model's :func:`tasks.model.fast_scorer`, built when it is loaded (None:
    scored with :func:`tasks.model.predict_scores`)."""

    version: str
    model: Any
    feature_service: str
    schema: FeatureSchema
    scorer: Callable[[pd.DataFrame | Columns], Any] | None = field(
        default=None, compare=False, repr=False
    )

    def score(self, rows: pd.DataFrame | Columns) -> Any:
        """The model's scores of ``rows`` (a frame, or columns as :class:`pd.DataFrame` reads
        them)."""
        if self.scorer is not None:
            return self.scorer(rows)
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
        return predict_scores(self.model, frame, self.schema)


@dataclass(frozen=True)
class ChampionStatus:
    """What :class:`ChampionCache` serves, and the last problem it met (if any)."""

    name: str
    version: str | None
    feature_service: str | None
    problem: str | None
    loads: int


class ChampionCache:
    """The current champion, refreshed from the registry at most every ``refresh_seconds``.

    ``resolve()`` returns the version the champion alias points to (None when there is none);
    ``load(version)`` loads it. Both are called under a lock by one request at a time; other
    requests keep using the model already loaded meanwhile (only when there is none do they wait).
    A failed ``resolve`` or ``load`` keeps the current model and is retried after the interval.
    When the alias is removed, nothing is served (the registry is the truth).
    """

    def __init__(
        self,
        name: str,
        resolve: Callable[[], str | None],
        load: Callable[[str], Champion],
        *,
        refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not math.isfinite(refresh_seconds) or refresh_seconds < 0:
            raise ValueError(f"refresh_seconds must be >= 0, got {refresh_seconds}")
        self.name = name
        self.refresh_seconds = float(refresh_seconds)
        self._resolve = resolve
        self._load = load
        self._clock = clock
        self._lock = threading.Lock()
        self._current: Champion | None = None
        self._checked_at: float | None = None
        self._problem: str | None = None
        self._loads = 0

    def get(self) -> Champion:
        """The champion to score with; raises :class:`NoChampion` when there is none."""
        self.refresh()
        current = self._current
        if current is None:
            raise NoChampion(self._problem or self._no_champion_text())
        return current

    def status(self) -> ChampionStatus:
        """Refresh if due, then report what is served."""
        self.refresh()
        current = self._current
        return ChampionStatus(
            name=self.name,
            version=current.version if current else None,
            feature_service=current.feature_service if current else None,
            problem=self._problem,
            loads=self._loads,
        )

    def refresh(self, *, force: bool = False) -> None:
        """Re-read the alias when the interval has passed (or ``force``)."""
        if not force and not self._due():
            return
        # with nothing to serve, wait for whoever is refreshing; otherwise serve the current model
        if not self._lock.acquire(blocking=force or self._current is None):
            return
        try:
            if force or self._due():
                self._refresh()
        finally:
            self._lock.release()

    def _due(self) -> bool:
        checked = self._checked_at
        return checked is None or self._clock() - checked >= self.refresh_seconds

    def _no_champion_text(self) -> str:
        return (
            f"registered model {self.name!r} has no champion yet: train one "
            "(`driftloop train`) and let the promotion gate promote it"
        )

    def _refresh(self) -> None:
        try:
            version = self._resolve()
        except Exception as exc:
            self._checked_at = self._clock()
            self._problem = f"cannot read the champion alias of {self.name!r}: {exc}"
            log.warning("%s", self._problem)
            return
        current = self._current
        if version is None:
            if current is not None:
                log.warning(
                    "%s v%s is no longer champion: nothing to serve", self.name, current.version
                )
            self._current = None
            self._problem = self._no_champion_text()
        elif current is not None and current.version == version:
            self._problem = None
        else:
            try:
                loaded = self._load(version)
            except Exception as exc:
                self._problem = f"champion {self.name} v{version} could not be loaded: {exc}"
                if current is not None:
                    self._problem += f" (still serving v{current.version})"
                log.error("%s", self._problem)
            else:
                self._current = loaded
                self._loads += 1
                self._problem = None
                was = f" (was v{current.version})" if current else ""
                log.info("serving %s v%s%s", self.name, loaded.version, was)
        self._checked_at = self._clock()


def registry_champions(
    tracking_uri: str,
    name: str,
    *,
    schema_for: Callable[[str], FeatureSchema],
    default_service: str,
    refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
) -> ChampionCache:
    """A :class:`ChampionCache` over the MLflow registry.

    A version reads the feature service recorded on it at training time (tag
    ``driftloop.feature_service``; ``default_service`` when absent): a model gets the features it
    was trained on. ``schema_for(service)`` gives the model inputs of a service.
    """
    from tasks import registry

    client = registry.client_for(tracking_uri)

    def resolve() -> str | None:
        return registry.champion_version(client, name)

    def load(version: str) -> Champion:
        tags = client.get_model_version(name, version).tags
        service = tags.get(FEATURE_SERVICE_TAG) or default_service
        schema = schema_for(service)
        model = registry.load_version(client, name, version)
        return Champion(
            version=version,
            model=model,
            feature_service=service,
            schema=schema,
            scorer=fast_scorer(model, schema),
        )

    return ChampionCache(name, resolve, load, refresh_seconds=refresh_seconds)


# ---- ids ----------------------------------------------------------------------------------------


def entity_id_pattern(usecase: UseCase) -> str | None:
    """The regex the use case's row suites expect of the entity column, or None.

    The feature source dataset's suite is asked first, then the other datasets' suites.
    """
    names = list(usecase.datasets)
    if usecase.features is not None:
        names.remove(usecase.features.source_dataset)
        names.insert(0, usecase.features.source_dataset)
    for name in names:
        suite = usecase.suite(usecase.datasets[name].row_suite)
        for expectation in suite["expectations"]:
            kwargs = expectation.get("kwargs", {})
            if (
                expectation.get("type") == REGEX_EXPECTATION
                and kwargs.get("column") == usecase.entity
                and isinstance(kwargs.get("regex"), str)
            ):
                return str(kwargs["regex"])
    return None


# ---- predictions --------------------------------------------------------------------------------


def _columns(rows: Columns | pd.DataFrame) -> Columns:
    """A reader's answer as columns (a frame's values as Python objects, missing: None/NaN/NaT)."""
    if isinstance(rows, pd.DataFrame):
        return {str(c): rows[c].tolist() for c in rows.columns}
    return rows


def _as_utc(value: object) -> datetime | None:
    """A feature timestamp (Timestamp, datetime, epoch seconds) as an aware UTC datetime."""
    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):  # type: ignore[call-overload]
        return None
    if isinstance(value, int | float):
        stamp = pd.Timestamp(value, unit="s", tz=UTC)
    else:
        stamp = pd.Timestamp(value)  # type: ignore[arg-type]
        stamp = stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)
    result: datetime = stamp.to_pydatetime()
    return result


class Predictor:
    """Scores entities with the current champion on their online features.

    ``read_features`` reads a feature service's online features (:class:`OnlineFeatures`, see
    :func:`build_predictor`), as columns or a frame; ``entity`` names its id column and the id
    key of the predictions, ``prediction`` the key of the probability; ``id_pattern`` is the use
    case's id regex (None: any non-empty id), which must match the whole id (``re.fullmatch``: a
    ``$`` in the pattern does not let a trailing newline through).
    ``scoring_threads`` caps the OpenMP threads of one scoring call (None: no cap): spreading a
    handful of rows over threads costs more than it saves, and requests run side by side anyway.
    """

    def __init__(
        self,
        champions: ChampionCache,
        read_features: FeatureReader,
        *,
        entity: str,
        prediction: str,
        id_pattern: str | None = None,
        max_batch: int = MAX_BATCH,
        scoring_threads: int | None = 1,
    ) -> None:
        self.champions = champions
        self.entity = entity
        self.prediction = prediction
        self.id_pattern = id_pattern
        self.max_batch = max_batch
        self.scoring_threads = scoring_threads
        self._read = read_features
        self._regex = re.compile(id_pattern) if id_pattern else None
        self._threadpools: Any = None

    def check_ids(self, ids: Sequence[object]) -> list[str]:
        """The ids as strings; raises :class:`InvalidIds` naming every malformed one."""
        bad = [
            BadId(i, value)
            for i, value in enumerate(ids)
            if not isinstance(value, str)
            or not value
            or (self._regex is not None and self._regex.fullmatch(value) is None)
        ]
        if bad:
            raise InvalidIds(bad, self.id_pattern, self.entity)
        return [str(v) for v in ids]

    def predict(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """One prediction per id, in order: the id (keyed by the entity's name), the probability
        (keyed by :attr:`prediction`), ``model_version`` and ``features_asof`` (when the
        features were computed).

        Every prediction of one call comes from the same champion. Raises :class:`InvalidIds`,
        :class:`NoChampion` or :class:`UnknownIds` (in that order of checking).
        """
        if len(ids) > self.max_batch:
            raise ValueError(f"at most {self.max_batch} ids per call, got {len(ids)}")
        asked = self.check_ids(ids)
        if not asked:
            return []
        champion = self.champions.get()
        unique = list(dict.fromkeys(asked))
        columns = _columns(self._read(unique, champion.feature_service))
        if [str(v) for v in columns.get(self.entity, ())] != unique:
            raise ServeError("the online store answered for other ids than were asked")
        features = [values for name, values in columns.items() if name != self.entity]
        missing = [
            cid
            for row, cid in enumerate(unique)
            if all(is_missing(values[row]) for values in features)
        ]
        if missing:
            raise UnknownIds(missing, len(unique), self.entity)
        scores = self._score(champion, columns)
        asof = columns["features_asof"] if "features_asof" in columns else [None] * len(unique)
        by_id = {
            cid: {
                self.entity: cid,
                self.prediction: float(score),
                "model_version": champion.version,
                "features_asof": _as_utc(stamp),
            }
            for cid, score, stamp in zip(unique, scores, asof, strict=True)
        }
        return [dict(by_id[cid]) for cid in asked]

    def health(self) -> ChampionStatus:
        return self.champions.status()

    def _score(self, champion: Champion, columns: Columns) -> Any:
        if self.scoring_threads is None:
            return champion.score(columns)
        if self._threadpools is None:
            from threadpoolctl import ThreadpoolController

            self._threadpools = ThreadpoolController()
        # the cap applies to the calling thread (OpenMP settings are per thread)
        with self._threadpools.limit(limits=self.scoring_threads, user_api="openmp"):
            return champion.score(columns)


def build_predictor(
    settings: Settings, *, refresh_seconds: float = DEFAULT_REFRESH_SECONDS
) -> Predictor:
    """A :class:`Predictor` over the Feast online store and the MLflow registry of ``settings``."""
    from driftloop_config.usecase import load_usecase
    from tasks.feature_store import feature_store
    from tasks.training import feature_schema

    usecase = load_usecase(settings.usecase)
    if usecase.model is None or usecase.features is None:
        raise ServeError(f"use case {usecase.name!r} defines no model and features to serve")
    store = feature_store(settings, sync_offline=False)  # online reads only
    label = usecase.target.name if usecase.target else "label"
    regression = usecase.target is not None and usecase.target.kind == "regression"
    reader = OnlineFeatures(store, entity=usecase.entity)

    def schema_for(service: str) -> FeatureSchema:
        reader.forget(service)  # a newly loaded champion reads the service as defined now
        return feature_schema(store, service, label, regression=regression)

    champions = registry_champions(
        settings.tracking_uri,
        usecase.model.registered_name,
        schema_for=schema_for,
        default_service=usecase.features.feature_service,
        refresh_seconds=refresh_seconds,
    )
    return Predictor(
        champions,
        reader,
        entity=usecase.entity,
        prediction=usecase.prediction_column,
        id_pattern=entity_id_pattern(usecase),
    )


class OnlineFeatures:
    """:func:`tasks.feature_store.online_features` as columns
    (:func:`tasks.feature_store.read_online_columns`: no frame is built per request, which cost
    more than the read), with the feature service definitions kept.

    Feast answers a lookup through a FeatureService object it already has in ~1 ms, but spends
    several more re-reading the definition from the registry on every call; definitions are
    read once per service (and again after :meth:`forget`). Reads are serialised: the SQLite
    online store shares one connection between threads. ``entity`` is the join key of the
    services' Feast entity, and the name of the id column.
    """

    def __init__(self, store: FeatureStore, *, entity: str) -> None:
        self.store = store
        self.entity = entity
        self._services: dict[str, tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def forget(self, service: str) -> None:
        with self._lock:
            self._services.pop(service, None)

    def __call__(self, ids: list[str], service: str) -> Columns:
        from tasks.feature_store import read_online_columns, service_join

        with self._lock:
            if service not in self._services:
                definition = self.store.get_feature_service(service)
                join = service_join(self.store, definition, self.entity)
                self._services[service] = (definition, join)
            definition, join = self._services[service]
            return read_online_columns(self.store, definition, join, ids)
