"""Training stage: labelled snapshots → point-in-time training set → challenger in MLflow.

Plain functions over the lake, the Feast store and the registry; the train flow calls them in
order. The model itself (pipeline, metrics, reference profile, report) is ``tasks.train``; the
registry and promotion gate are ``tasks.registry``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tasks.ingest import read_validated, validated_partitions
from tasks.train import FeatureSchema

if TYPE_CHECKING:
    from feast import FeatureStore

    from driftloop.settings import Settings
    from driftloop.usecase import ModelSpec, TargetSpec, UseCase
    from tasks.registry import Decision
    from tasks.storage import Lake

PROMOTED_EVENT = "driftloop.model.promoted"
REJECTED_EVENT = "driftloop.model.rejected"
NOT_FEATURES = {"features_asof"}


class NotEnoughData(RuntimeError):
    """Too few labelled snapshots to train and judge a model yet."""


@dataclass(frozen=True)
class TrainingSet:
    """The point-in-time training set and its time-based split."""

    as_of: date
    splits: dict[str, pd.DataFrame]
    schema: FeatureSchema

    @property
    def rows(self) -> dict[str, int]:
        return {name: len(df) for name, df in self.splits.items()}

    @property
    def window(self) -> tuple[str, str]:
        ts = pd.concat([df["event_timestamp"] for df in self.splits.values()])
        return (str(ts.min().date()), str(ts.max().date()))


@dataclass
class TrainingResult:
    version: str
    metrics: dict[str, dict[str, Any]]
    rows: dict[str, int]
    window: tuple[str, str]
    data_hash: str
    report_key: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _specs(usecase: UseCase) -> tuple[TargetSpec, ModelSpec, str]:
    if usecase.target is None or usecase.model is None or usecase.features is None:
        raise ValueError(f"use case {usecase.name!r} defines no target/features/model to train")
    return usecase.target, usecase.model, usecase.features.feature_service


def feature_schema(store: FeatureStore, service: str, label: str) -> FeatureSchema:
    """Categorical and numeric model inputs, read from the feature service's definition."""
    from feast.types import String

    categorical: list[str] = []
    numeric: list[str] = []
    for projection in store.get_feature_service(service).feature_view_projections:
        for feat in projection.features:
            if feat.name in NOT_FEATURES:
                continue
            (categorical if feat.dtype == String else numeric).append(feat.name)
    return FeatureSchema(categorical=tuple(categorical), numeric=tuple(numeric), label=label)


def latest_day(lake: Lake, usecase: UseCase) -> date | None:
    """The newest partition day across the use case's datasets: "today" for the pipeline."""
    days = [max(p) for spec in usecase.datasets.values() if (p := validated_partitions(lake, spec))]
    return max(days) if days else None


def build_training_set(
    lake: Lake,
    usecase: UseCase,
    store: FeatureStore,
    *,
    as_of: date | None = None,
    since: date | None = None,
) -> TrainingSet:
    """Labelled snapshots known at ``as_of`` joined point-in-time with their features, split by time."""
    from tasks.training_set import (
        SnapshotColumns,
        TrainingSetError,
        entity_frame,
        time_split,
        training_frame,
    )

    target, model, service = _specs(usecase)
    as_of = as_of or latest_day(lake, usecase)
    if as_of is None:
        raise NotEnoughData("nothing has been validated yet")
    assert usecase.features is not None
    columns = SnapshotColumns.of(usecase)
    source = usecase.datasets[usecase.features.source_dataset]
    active = read_validated(lake, source, last=as_of, columns=[columns.entity, columns.day])
    labels = read_validated(lake, usecase.datasets[target.labels_dataset], last=as_of)
    first = since
    if model.min_history_days and not active.empty:
        warm = pd.to_datetime(active[columns.day]).min().date() + timedelta(
            days=model.min_history_days
        )
        first = max(first, warm) if first else warm
    entities = entity_frame(
        active,
        labels,
        as_of=as_of,
        horizon_days=target.horizon_days,
        label_delay_days=target.label_delay_days,
        snapshot_every_days=model.snapshot_every_days,
        first=first,
        columns=columns,
    )
    if entities.empty:
        raise NotEnoughData(f"no snapshot has known labels at {as_of}")
    frame = training_frame(store, entities, service, entity=columns.entity)
    try:
        splits = time_split(
            frame, holdout_days=model.holdout_days, validation_days=model.validation_days
        )
    except TrainingSetError as exc:
        raise NotEnoughData(str(exc)) from None
    for name, part in splits.items():
        if part[target.name].nunique() < 2:
            raise NotEnoughData(f"the {name} split has only one class")
    return TrainingSet(
        as_of=as_of, splits=splits, schema=feature_schema(store, service, target.name)
    )


def git_sha(cwd: Path) -> str:
    """The code's commit (with ``-dirty`` for local changes), or ``unknown`` outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def train_challenger(
    settings: Settings, usecase: UseCase, data: TrainingSet, lake: Lake, *, seed: int = 0
) -> TrainingResult:
    """Fit, evaluate, profile and register a challenger; the training report goes to reports/."""
    from driftloop.settings import PROJECT_ROOT
    from tasks import registry, train

    target, model_spec, service = _specs(usecase)
    schema = data.schema
    model = train.fit(data.splits["train"], data.splits["validation"], schema, seed=seed)
    metrics = {name: train.evaluate(model, df, schema) for name, df in data.splits.items()}
    train_scores = train.predict_scores(model, data.splits["train"], schema)
    reference = train.reference_profile(data.splits["train"], schema, train_scores)
    report = train.training_report(
        metrics,
        model,
        data.splits["holdout"],
        schema,
        title=f"Training — {model_spec.registered_name}",
        details={"as of": str(data.as_of), "window": " → ".join(data.window), **data.rows},
    )
    data_hash = train.data_fingerprint(pd.concat(data.splits.values(), ignore_index=True))
    version = registry.log_challenger(
        model,
        tracking_uri=settings.tracking_uri,
        artifact_root=settings.artifact_root,
        experiment=model_spec.registered_name,
        registered_name=model_spec.registered_name,
        metrics=train.flat_metrics(metrics),
        params={
            "seed": seed,
            "as_of": str(data.as_of),
            "target": target.name,
            "horizon_days": target.horizon_days,
            "label_delay_days": target.label_delay_days,
            "boosting_iterations": train.boosting_iterations(model),
        },
        tags={"driftloop.usecase": usecase.name},
        reference=reference,
        report_html=report,
        input_example=train.model_input(data.splits["train"].head(5), schema),
        feature_service=service,
        data_window=data.window,
        row_counts=data.rows,
        data_hash=data_hash,
        git_sha=git_sha(PROJECT_ROOT),
    )
    key = f"training/{model_spec.registered_name}-v{version}.html"
    lake.reports.write_bytes(key, report.encode("utf-8"))
    return TrainingResult(version, metrics, data.rows, data.window, data_hash, report_key=key)


def judge(
    settings: Settings, usecase: UseCase, data: TrainingSet, version: str, lake: Lake
) -> tuple[Decision, str | None, str]:
    """Run the promotion gate on the holdout; returns (decision, previous champion, report key)."""
    from tasks import registry, train

    _, model_spec, service = _specs(usecase)
    name = model_spec.registered_name
    holdout = data.splits["holdout"]
    champion_before = registry.champion_version(settings.tracking_uri, name)
    decision, previous = registry.gate(
        settings.tracking_uri,
        name,
        version,
        holdout,
        data.schema,
        model_spec,
        lock_path=registry.promotion_lock_path(settings.state_path, name),
        expected_feature_service=service,
    )
    champion_scores = None
    if decision.compared_with is not None:
        champion = registry.load_version(settings.tracking_uri, name, decision.compared_with)
        champion_scores = train.predict_scores(champion, holdout, data.schema)
    challenger = registry.load_version(settings.tracking_uri, name, version)
    html = registry.decision_report(
        decision,
        name=name,
        version=version,
        y=train.labels(holdout, data.schema),
        champion_scores=champion_scores,
        challenger_scores=train.predict_scores(challenger, holdout, data.schema),
        details={"champion before": champion_before or "(none)", "holdout rows": len(holdout)},
    )
    key = f"promotion/{name}-v{version}.html"
    lake.reports.write_bytes(key, html.encode("utf-8"))
    return decision, previous, key


def decision_event(
    name: str, version: str, decision: Decision, previous: str | None, tracking_uri: str
) -> dict[str, Any]:
    """The Prefect event announcing a gate decision."""
    return {
        "event": PROMOTED_EVENT if decision.promote else REJECTED_EVENT,
        "resource": {
            "prefect.resource.id": f"driftloop.model.{name}.v{version}",
            "prefect.resource.name": f"{name} v{version}",
            "driftloop.model": name,
            "driftloop.version": version,
        },
        "payload": {
            "promoted": decision.promote,
            "reason": decision.reason,
            "previous_champion": previous,
            "compared_with": decision.compared_with,
            "metric": decision.metric,
            "challenger_value": decision.challenger_value,
            "champion_value": decision.champion_value,
            "delta_ci": list(decision.delta_ci) if decision.delta_ci else None,
            "tracking_uri": tracking_uri,
        },
    }
