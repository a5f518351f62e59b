"""Batch scoring: the entities (customers, in the telco use case) active on a day, scored by a
registered model on their point-in-time features (Feast offline store), written to
``predictions/``.

Layout: ``predictions/<model>/date=YYYY-MM-DD/<role>.parquet`` where ``role`` is ``champion`` (the
model behind the alias when the day was scored) or ``shadow-v<N>`` (a model scored alongside for
comparison). Columns: the use case's entity (``customer_id`` for telco), event_timestamp (the
scoring instant: the day after, 00:00 UTC), the use case's prediction column
(``target.prediction``, by default ``<target>_probability``: ``churn_probability`` for telco; the
probability that the target event happens within the horizon), model_version, features_asof. Scoring the same day again rewrites the same file.

Who is scored follows the rule that built the model's training snapshots
(:func:`tasks.training_set.membership`): with a terminal target (a churn), an entity whose known
event precedes the scoring instant has left and is not scored; with a recurring target every
active entity is. The result says how many were left out, and flags a model trained under the
other rule (its version's ``driftloop.population_rule`` tag).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypedDict

import pandas as pd

from tasks.ingest import read_validated
from tasks.storage import read_parquet, write_parquet

if TYPE_CHECKING:
    from feast import FeatureStore

    from driftloop_config.settings import Settings
    from driftloop_config.usecase import UseCase
    from tasks.model import FeatureSchema
    from tasks.storage import Lake

WRITTEN_EVENT = "driftloop.predictions.written"


class SkipReason(StrEnum):
    """Why a score run wrote no predictions."""

    NOTHING_VALIDATED = "nothing-validated"  # no day has validated data yet
    NO_CHAMPION = "no-champion"  # no model has been promoted yet
    NO_ROWS = "no-rows"  # the day has no validated rows (its file was rejected or is missing)


class ScoreOutcome(TypedDict, total=False):
    """What a score run returns: the day, how many rows were scored (0 when it skipped, with
    the reason), where the scores are, by which version, and the population."""

    day: str | None
    scored: int
    key: str
    model_version: str | None
    population: dict[str, Any]
    skipped: str
    reason: str


@dataclass(frozen=True)
class Scored:
    """What a score run wrote: the scores, their key, and who was (not) scored and why.

    Unpacks as ``scores, key``."""

    scores: pd.DataFrame
    key: str
    population: dict[str, Any]

    def __iter__(self) -> Iterator[Any]:
        return iter((self.scores, self.key))

    def summary_row(self, day: date, prediction: str) -> dict[str, Any]:
        """The score run's artifact row: the day, rows, model version, mean ``prediction``
        (the use case's prediction column) and key."""
        scored = len(self.scores) > 0
        return {
            "day": str(day),
            "rows": len(self.scores),
            "model_version": self.scores["model_version"].iloc[0] if scored else None,
            "mean_probability": float(self.scores[prediction].mean()) if scored else None,
            "key": self.key,
        }

    def to_dict(self, day: date) -> ScoreOutcome:
        """What the score run of ``day`` returns."""
        scored = len(self.scores) > 0
        return {
            "day": str(day),
            "scored": len(self.scores),
            "key": self.key,
            "model_version": str(self.scores["model_version"].iloc[0]) if scored else None,
            "population": self.population,
        }


@dataclass(frozen=True)
class Skipped:
    """A score run that decided not to score, and why (shown as the run's state and artifact)."""

    reason: SkipReason
    message: str
    day: date | None = None

    def to_dict(self) -> ScoreOutcome:
        return {
            "day": self.day.isoformat() if self.day else None,
            "scored": 0,
            "skipped": self.reason.value,
            "reason": self.message,
        }

    def markdown(self, model_name: str) -> str:
        when = f" for {self.day.isoformat()}" if self.day else ""
        return f"**Not scored**{when} ({model_name}): {self.message}."


def nothing_validated() -> Skipped:
    return Skipped(
        SkipReason.NOTHING_VALIDATED,
        "nothing validated yet: land and ingest data first",
    )


def no_champion(model_name: str, day: date) -> Skipped:
    return Skipped(
        SkipReason.NO_CHAMPION,
        f"no champion yet: {model_name} has no promoted model to score with "
        "(training starts once the retraining policy has enough labelled data)",
        day,
    )


def no_rows(dataset: str, day: date) -> Skipped:
    return Skipped(
        SkipReason.NO_ROWS,
        f"no validated {dataset} rows on {day.isoformat()}: the day's file was rejected or has "
        "not arrived (see the validation report)",
        day,
    )


def scoring_instant(day: date) -> datetime:
    """A day's rows are complete at the next midnight: that is when its entities are scored."""
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC)


def active_entities(lake: Lake, usecase: UseCase, day: date) -> pd.DataFrame:
    """The entity ids (column ``usecase.entity``) with a validated row of the feature source
    dataset on ``day`` (sorted, unique)."""
    spec = usecase.datasets[usecase.loop().features.source_dataset]
    rows = read_validated(lake, spec, first=day, last=day, columns=[usecase.entity])
    ids = sorted(set(rows[usecase.entity].astype(str)))
    return pd.DataFrame({usecase.entity: ids})


def population_mismatch(model_rule: str | None, rule: str, version: str) -> str | None:
    """Why scoring with a model trained under another membership rule is suspect (None when
    the rules agree; a model recorded without a rule was trained on terminal snapshots)."""
    from tasks.training_set import TERMINAL

    trained = model_rule or TERMINAL
    if trained == rule:
        return None
    return (
        f"v{version} was trained on the {trained} population rule, scoring applies the {rule} "
        "rule: the scored population is not the trained one (retrain the model)"
    )


def scoring_population(
    lake: Lake, usecase: UseCase, day: date, entities: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The active entities that belong to the population scored at the end of ``day`` (the
    training snapshots' rule, with the events known on ``day``), and the counts: active,
    scored, excluded by reason."""
    from tasks.training_set import (
        EVENT_BEFORE,
        SnapshotColumns,
        membership,
        population_rule,
    )

    target = usecase.loop().target
    recurring = target.recurring
    counts: dict[str, Any] = {
        "rule": population_rule(recurring),
        "active": len(entities),
        "scored": len(entities),
        "excluded": {},
    }
    if recurring or entities.empty:
        return entities, counts
    labels = read_validated(lake, usecase.datasets[target.labels_dataset], last=day)
    keep = membership(
        entities[usecase.entity],
        labels,
        at=scoring_instant(day).date(),
        known_by=day,
        recurring=recurring,
        columns=SnapshotColumns.of(usecase),
    )
    kept = entities.loc[keep].reset_index(drop=True)
    counts["scored"] = len(kept)
    counts["excluded"] = {EVENT_BEFORE: int((~keep).sum())}
    return kept, counts


def score_entities(
    store: FeatureStore,
    model: Any,
    schema: FeatureSchema,
    service: str,
    entities: pd.DataFrame,
    at: datetime,
    *,
    version: str,
    entity: str,
    prediction: str,
) -> pd.DataFrame:
    """Score the ids in column ``entity`` of ``entities`` with ``model`` on their features as
    known at ``at``; the scores go to column ``prediction``."""
    from tasks.model import predict_scores
    from tasks.training_set import training_frame

    rows = pd.DataFrame({entity: entities[entity].astype(str), "event_timestamp": pd.Timestamp(at)})
    if rows.empty:
        return pd.DataFrame(
            columns=[entity, "event_timestamp", prediction, "model_version", "features_asof"]
        )
    frame = training_frame(store, rows, service, entity=entity)
    out = frame[[entity, "event_timestamp"]].copy()
    out[prediction] = predict_scores(model, frame, schema)
    out["model_version"] = str(version)
    out["features_asof"] = frame["features_asof"]
    return out.reset_index(drop=True)


def prediction_key(model_name: str, day: date, role: str) -> str:
    return f"{model_name}/date={day.isoformat()}/{role}.parquet"


def write_predictions(
    lake: Lake, model_name: str, day: date, role: str, scores: pd.DataFrame
) -> str:
    key = prediction_key(model_name, day, role)
    write_parquet(lake.zone("predictions"), key, scores)
    return f"predictions/{key}"


def read_predictions(
    lake: Lake,
    model_name: str,
    *,
    first: date | None = None,
    last: date | None = None,
    role: str = "champion",
    entity: str,
    prediction: str,
) -> pd.DataFrame:
    """Predictions of one role for scoring days in ``[first, last]``, with a ``day`` column
    (``entity`` and ``prediction`` name the columns of an empty result)."""
    zone = lake.zone("predictions")
    frames = []
    for info in zone.list(model_name):
        parts = info.key.split("/")
        if len(parts) != 3 or parts[2] != f"{role}.parquet" or not parts[1].startswith("date="):
            continue
        day = date.fromisoformat(parts[1][len("date=") :])
        if (first is None or day >= first) and (last is None or day <= last):
            frames.append(read_parquet(zone, info.key).assign(day=pd.Timestamp(day)))
    if not frames:
        return pd.DataFrame(
            columns=[
                entity,
                "event_timestamp",
                prediction,
                "model_version",
                "features_asof",
                "day",
            ]
        )
    return pd.concat(frames, ignore_index=True)


def written_event(
    model_name: str, day: date, role: str, scores: pd.DataFrame, key: str, *, prediction: str
) -> dict[str, Any]:
    return {
        "event": WRITTEN_EVENT,
        "resource": {
            "prefect.resource.id": f"driftloop.predictions.{model_name}.{day.isoformat()}.{role}",
            "driftloop.model": model_name,
        },
        "payload": {
            "day": day.isoformat(),
            "role": role,
            "rows": len(scores),
            "model_versions": sorted(set(scores["model_version"].astype(str))),
            "key": key,
            "mean_probability": float(scores[prediction].mean()) if len(scores) else None,
        },
    }


def score_day(
    settings: Settings,
    usecase: UseCase,
    lake: Lake,
    store: FeatureStore,
    day: date,
    *,
    version: str | None = None,
    role: str = "champion",
) -> Scored | Skipped:
    """Score the members of the population at the end of ``day`` (the entities active on
    ``day``, by the training snapshots' membership rule) with the champion (or ``version``) and
    write them.

    Returns what was scored (unpacks as ``scores, key``; ``population`` counts the active, the
    scored and the excluded by reason, and flags a model trained under another rule), or why
    nothing was scored: no champion yet, or no validated rows on ``day`` (nothing is written
    then).
    """
    from tasks import registry
    from tasks.training import POPULATION_TAG, usecase_schema

    loop = usecase.loop()
    name = loop.model.registered_name
    if version is None:
        version = registry.champion_version(settings.tracking_uri, name)
        if version is None:
            return no_champion(name, day)
    entities = active_entities(lake, usecase, day)
    if entities.empty:
        return no_rows(loop.features.source_dataset, day)
    entities, population = scoring_population(lake, usecase, day, entities)
    tags = registry.client_for(settings.tracking_uri).get_model_version(name, version).tags
    population["model_rule"] = tags.get(POPULATION_TAG)
    population["mismatch"] = population_mismatch(
        tags.get(POPULATION_TAG), population["rule"], version
    )
    if population["mismatch"]:
        logging.getLogger(__name__).warning("%s: %s", name, population["mismatch"])
    model = registry.load_version(settings.tracking_uri, name, version)
    schema = usecase_schema(store, usecase)
    scores = score_entities(
        store,
        model,
        schema,
        loop.features.feature_service,
        entities,
        scoring_instant(day),
        version=version,
        entity=usecase.entity,
        prediction=usecase.prediction_column,
    )
    return Scored(scores, write_predictions(lake, name, day, role, scores), population)


def evaluate_snapshot(
    settings: Settings,
    usecase: UseCase,
    lake: Lake,
    store: FeatureStore,
    day: date,
    version: str,
) -> dict[str, Any] | None:
    """The use case's metric (``model.metric``: ROC AUC, PR AUC, RMSE or MAE) of model
    ``version`` on the snapshot whose labels became complete on ``day`` (features as of that
    snapshot, labels as known on ``day``): ``{"snapshot", "metric", "value", "n",
    "positives"}``, with ``"auc"`` too for a binary target. None before any snapshot is
    complete, or when its outcomes do not vary (no metric then)."""
    from tasks import registry
    from tasks.model import regression_metrics, score_metrics
    from tasks.training import usecase_schema
    from tasks.training_set import SnapshotColumns, entity_frame, last_snapshot_day

    loop = usecase.loop()
    target = loop.target
    snap = last_snapshot_day(
        day, horizon_days=target.horizon_days, label_delay_days=target.label_delay_days
    )
    columns = SnapshotColumns.of(usecase)
    source = usecase.datasets[loop.features.source_dataset]
    active = read_validated(
        lake,
        source,
        first=snap - timedelta(days=1),
        last=snap - timedelta(days=1),
        columns=[columns.entity, columns.day],
    )
    if active.empty:
        return None
    labels = read_validated(lake, usecase.datasets[target.labels_dataset], last=day)
    rows = entity_frame(
        active,
        labels,
        as_of=day,
        horizon_days=target.horizon_days,
        label_delay_days=target.label_delay_days,
        first=snap,
        columns=columns,
        recurring=target.recurring,
    )
    y = rows[columns.label].to_numpy()
    if rows.empty or y.min() == y.max():
        return None
    model = registry.load_version(settings.tracking_uri, loop.model.registered_name, version)
    schema = usecase_schema(store, usecase)
    scores = score_entities(
        store,
        model,
        schema,
        loop.features.feature_service,
        rows[[columns.entity]],
        rows["event_timestamp"].iloc[0].to_pydatetime(),
        version=version,
        entity=columns.entity,
        prediction=usecase.prediction_column,
    )
    predicted = scores[usecase.prediction_column].to_numpy(dtype="float64")
    regression = target.kind == "regression"
    metrics = regression_metrics(y, predicted) if regression else score_metrics(y, predicted)
    metric = loop.model.metric
    out = {
        "snapshot": snap.isoformat(),
        "metric": metric,
        "value": float(metrics[metric]),
        "n": len(rows),
        "positives": int((y > 0).sum()),
    }
    if not regression:
        out["auc"] = float(metrics["roc_auc"])
    return out
