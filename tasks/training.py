"""Training stage: labelled snapshots → point-in-time training set → challenger in MLflow.

Plain functions over the lake, the Feast store and the registry; the train flow calls them in
order: the training set, the challenger (with its drift reference rows), the gate on the holdout,
the decision's event and artifacts, and the per-model training lock. The model itself (pipeline,
metrics) is ``tasks.model``, its drift reference ``tasks.reference`` and its report
``tasks.training_report``; the registry and promotion are ``tasks.registry``, the gate's decision
``tasks.gate``. Finishing what a stopped train run left is ``tasks.recovery``; re-basing the
champion's drift reference after a new normal is ``tasks.rebaseline``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from driftloop_config.redact import redact
from tasks.artifacts import Artifact, Markdown, Table
from tasks.ingest import newest_day, open_ledger, read_validated
from tasks.model import FeatureSchema, metric_names
from tasks.policy import (
    Deferral,
    RunRequest,
    TrainOutcome,
    TrainPlan,
    current_state,
    plan_training,
    record_insufficient_run,
)

if TYPE_CHECKING:
    from feast import FeatureStore

    from driftloop_config.settings import Settings
    from driftloop_config.usecase import ModelSpec, TargetSpec, UseCase
    from tasks.gate import Decision
    from tasks.loop_state import LoopState
    from tasks.storage import Lake

PROMOTED_EVENT = "driftloop.model.promoted"
REJECTED_EVENT = "driftloop.model.rejected"
NOT_FEATURES = {"features_asof"}
#: the version tag naming the membership rule of the snapshots it was trained on
POPULATION_TAG = "driftloop.population_rule"
#: How long a train run waits for another train run of the same model to finish.
TRAINING_LOCK_TIMEOUT = 6 * 3600.0


class NotEnoughData(RuntimeError):
    """Too few labelled snapshots to train and judge a model yet."""


class InsufficientEvidence(NotEnoughData):
    """A split would hold fewer rows or positives than the use case's minimum (``model.min_*``):
    no decision is made on so little evidence."""


@dataclass(frozen=True)
class TrainingSet:
    """The point-in-time training set, its split by time and evidence, and who it holds."""

    as_of: date
    splits: dict[str, pd.DataFrame]
    schema: FeatureSchema
    #: per snapshot day: active entities, members, exclusions by reason, positives
    #: (:func:`tasks.training_set.population`)
    population: pd.DataFrame | None = None
    recurring: bool = False  # the target's membership rule

    @property
    def population_rule(self) -> str:
        from tasks.training_set import population_rule

        return population_rule(self.recurring)

    def population_summary(self) -> dict[str, Any]:
        """The population in a few lines, for the training report and the run's result."""
        from tasks.training_set import population_summary

        if self.population is None:
            return {}
        return population_summary(self.population, recurring=self.recurring)

    def evidence(self) -> dict[str, str]:
        """Rows / positives / snapshot days per split."""
        out = {}
        for name, df in self.splits.items():
            positives = int((df[self.schema.label] > 0).sum()) if len(df) else 0
            days = pd.to_datetime(df["event_timestamp"], utc=True).dt.normalize().nunique()
            out[f"{name} evidence"] = f"{len(df):,} rows / {positives:,} positives / {days} days"
        return out

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
    #: the population the snapshots hold (tasks.training_set.population_summary)
    population: dict[str, Any] = field(default_factory=dict)
    #: the fitted model's holdout scores (the gate checks them against the registered model)
    holdout_scores: np.ndarray | None = field(default=None, compare=False, repr=False)


def _specs(usecase: UseCase) -> tuple[TargetSpec, ModelSpec, str]:
    loop = usecase.loop()
    return loop.target, loop.model, loop.features.feature_service


def feature_schema(
    store: FeatureStore, service: str, label: str, *, regression: bool = False
) -> FeatureSchema:
    """Categorical and numeric model inputs, read from the feature service's definition
    (``regression``: the target is a number, see ``target.kind``)."""
    from feast.types import String

    categorical: list[str] = []
    numeric: list[str] = []
    for projection in store.get_feature_service(service).feature_view_projections:
        for feat in projection.features:
            if feat.name in NOT_FEATURES:
                continue
            (categorical if feat.dtype == String else numeric).append(feat.name)
    return FeatureSchema(
        categorical=tuple(categorical), numeric=tuple(numeric), label=label, regression=regression
    )


def usecase_schema(store: FeatureStore, usecase: UseCase) -> FeatureSchema:
    """The model inputs of a use case's feature service and its target."""
    target, _, service = _specs(usecase)
    return feature_schema(store, service, target.name, regression=target.kind == "regression")


def latest_day(lake: Lake, usecase: UseCase) -> date | None:
    """The newest day some delivered file is mainly about: "today" for the pipeline (stray rows
    dated ahead of their file do not count; see :func:`tasks.ingest.newest_day`)."""
    return newest_day(open_ledger(lake.ledger), usecase)


def build_training_set(
    lake: Lake,
    usecase: UseCase,
    store: FeatureStore,
    *,
    as_of: date | None = None,
    since: date | None = None,
) -> TrainingSet:
    """Labelled snapshots known at ``as_of`` joined point-in-time with their features, split by
    time and evidence (:func:`tasks.training_set.evidence_split`). Raises
    :class:`InsufficientEvidence` when a split cannot hold the use case's minimum rows and
    positives, :class:`NotEnoughData` when there is nothing to train on at all."""
    from tasks.training_set import (
        EvidenceRule,
        SnapshotColumns,
        TrainingSetError,
        evidence_split,
        labelled_snapshots,
        training_frame,
    )
    from tasks.training_set import InsufficientEvidence as TooLittle

    target, model, service = _specs(usecase)
    as_of = as_of or latest_day(lake, usecase)
    if as_of is None:
        raise NotEnoughData("nothing has been validated yet")
    columns = SnapshotColumns.of(usecase)
    source = usecase.datasets[usecase.loop().features.source_dataset]
    active = read_validated(lake, source, last=as_of, columns=[columns.entity, columns.day])
    labels = read_validated(lake, usecase.datasets[target.labels_dataset], last=as_of)
    first = since
    if model.min_history_days and not active.empty:
        warm = pd.to_datetime(active[columns.day]).min().date() + timedelta(
            days=model.min_history_days
        )
        first = max(first, warm) if first else warm
    entities, population = labelled_snapshots(
        active,
        labels,
        as_of=as_of,
        horizon_days=target.horizon_days,
        label_delay_days=target.label_delay_days,
        snapshot_every_days=model.snapshot_every_days,
        first=first,
        columns=columns,
        recurring=target.recurring,
    )
    if entities.empty:
        raise NotEnoughData(f"no snapshot has known labels at {as_of}")
    try:  # before the (slow) feature join: the evidence is counted on the labels alone
        evidence_split(entities, EvidenceRule.of(model), label=columns.label)
    except TooLittle as exc:
        raise InsufficientEvidence(str(exc)) from None
    except TrainingSetError as exc:
        raise NotEnoughData(str(exc)) from None
    frame = training_frame(store, entities, service, entity=columns.entity)
    splits = evidence_split(frame, EvidenceRule.of(model), label=columns.label)
    for name, part in splits.items():
        if part[target.name].nunique() < 2:
            raise InsufficientEvidence(
                f"insufficient evidence: the {name} split has only one "
                + ("outcome" if target.kind == "regression" else "class")
            )
    return TrainingSet(
        as_of=as_of,
        splits=splits,
        schema=usecase_schema(store, usecase),
        population=population,
        recurring=target.recurring,
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


def reference_rows(
    lake: Lake, usecase: UseCase, as_of: date, *, fallback: pd.DataFrame
) -> pd.DataFrame:
    """The feature rows drift checks compare live windows with: the newest
    ``drift.reference_windows × drift.window_days`` feature days up to ``as_of`` (features are
    known up to ``as_of``; labels only for older snapshots), the same rows a check reads.

    Not the training rows: they are the oldest part of the labelled window, and after a change
    the features with long lookbacks (a 30-day mean settles 30 days after a level shift) are
    still moving, so a retrained model's training rows describe a world already gone while the
    newest days are where it is going. ``fallback`` (e.g. the validation and holdout rows) when
    fewer than two windows of feature days exist.
    """
    from tasks.drift import read_input_window

    spec = usecase.drift
    days = spec.reference_windows * spec.window_days
    rows, _ = read_input_window(lake, usecase, as_of - timedelta(days=days - 1), as_of)
    if rows.empty or "event_timestamp" not in rows.columns:
        return fallback
    present = pd.to_datetime(rows["event_timestamp"], utc=True).dt.normalize().nunique()
    return rows if present >= 2 * spec.window_days else fallback


def train_challenger(
    settings: Settings,
    usecase: UseCase,
    data: TrainingSet,
    lake: Lake,
    *,
    seed: int = 0,
    since: date | None = None,
    trigger: str = "manual",
) -> TrainingResult:
    """Fit, evaluate, profile and register a challenger; the training report goes to reports/.

    The report's details show the population the snapshots hold (the membership rule, active
    entities, who was left out and why, positives) and the evidence of each split; the rule is
    recorded on the version (tag ``driftloop.population_rule``) so scoring can check it applies
    the same one. ``trigger`` (why the run trained) is a run parameter: a run stopped before
    recording its decision is recorded by the next one as it would have been."""
    from driftloop_config.settings import PROJECT_ROOT
    from tasks import registry
    from tasks.model import (
        boosting_iterations,
        evaluate,
        fit,
        flat_metrics,
        model_input,
        predict_scores,
    )
    from tasks.reference import (
        IMPORTANCE_ROWS,
        data_fingerprint,
        feature_importance,
        input_importance,
        reference_profile,
    )
    from tasks.training_report import training_report

    target, model_spec, service = _specs(usecase)
    schema = data.schema
    population = data.population_summary()
    model = fit(
        data.splits["train"],
        data.splits["validation"],
        schema,
        seed=seed,
        estimator=model_spec.estimator,
    )
    # each split scored once: the holdout's scores also go into the report
    scores = {name: predict_scores(model, df, schema) for name, df in data.splits.items()}
    metrics = {
        name: evaluate(model, df, schema, scores=scores[name]) for name, df in data.splits.items()
    }
    # the reference: the newest feature days (rows the model was not fitted on, so their
    # probabilities are as sharp as live ones, which the CBPE estimate needs); without enough of
    # them, the validation and holdout rows
    unseen = pd.concat([data.splits["validation"], data.splits["holdout"]], ignore_index=True)
    # measured once: the drift reference weighs inputs by it, the report shows it
    importance = feature_importance(
        model, data.splits["holdout"], schema, max_rows=IMPORTANCE_ROWS, seed=seed
    )
    newest = reference_rows(lake, usecase, data.as_of, fallback=unseen)
    newest_scores = predict_scores(model, newest, schema)
    reference = reference_profile(
        newest,
        schema,
        newest_scores,
        window_days=usecase.drift.window_days,
        importance=input_importance(
            model, data.splits["holdout"], schema, seed=seed, table=importance
        ),
        expected_metric=metrics["holdout"][model_spec.metric],
        unseen=newest,
        unseen_predictions=newest_scores,
    )
    report = training_report(
        metrics,
        model,
        data.splits["holdout"],
        schema,
        title=f"Training — {model_spec.registered_name}",
        details={
            "as of": str(data.as_of),
            "window": " → ".join(data.window),
            "seed": seed,
            "trigger": trigger,
            **({"since": str(since)} if since else {}),
            **data.rows,
            **data.evidence(),
            **population,
        },
        seed=seed,
        importance=importance,
        holdout_scores=scores["holdout"],
    )
    data_hash = data_fingerprint(pd.concat(data.splits.values(), ignore_index=True))
    version = registry.log_challenger(
        model,
        tracking_uri=settings.tracking_uri,
        artifact_root=settings.artifact_root,
        experiment=model_spec.registered_name,
        registered_name=model_spec.registered_name,
        metrics=flat_metrics(metrics),
        params={
            "seed": seed,
            "as_of": str(data.as_of),
            **({"since": str(since)} if since else {}),
            "trigger": trigger,
            "target": target.name,
            "population_rule": data.population_rule,
            "horizon_days": target.horizon_days,
            "label_delay_days": target.label_delay_days,
            # the built-in model's early stopping; a named estimator is recorded by its name
            **(
                {"boosting_iterations": boosting_iterations(model)}
                if model_spec.estimator is None
                else {"estimator": model_spec.estimator}
            ),
        },
        tags={"driftloop.usecase": usecase.name, POPULATION_TAG: data.population_rule},
        reference=reference,
        report_html=report,
        input_example=model_input(data.splits["train"].head(5), schema),
        feature_service=service,
        data_window=data.window,
        row_counts=data.rows,
        data_hash=data_hash,
        git_sha=git_sha(PROJECT_ROOT),
    )
    key = f"training/{model_spec.registered_name}-v{version}.html"
    lake.reports.write_bytes(key, report.encode("utf-8"))
    return TrainingResult(
        version,
        metrics,
        data.rows,
        data.window,
        data_hash,
        report_key=key,
        population=population,
        holdout_scores=scores["holdout"],
    )


@dataclass(frozen=True)
class Ready:
    """A train run the policy lets train, with its training set."""

    plan: TrainPlan
    data: TrainingSet


def prepare(
    lake: Lake,
    usecase: UseCase,
    request: RunRequest,
    *,
    settings: Settings,
    day: date | None = None,
    state_of: Callable[..., LoopState] | None = None,
    store_of: Callable[[Settings], FeatureStore] | None = None,
    build: Callable[..., TrainingSet] | None = None,
) -> Ready | Deferral:
    """What a train run trains on as of ``day`` (default: the newest validated day), or why it
    does not train now.

    The retraining policy decides first and its decision is recorded before anything is
    trained (:func:`tasks.policy.plan_training`, reading the state through ``state_of``); then
    the training set is built (``build``, :func:`build_training_set`, from the Feast store of
    ``store_of``). Too little evidence is recorded as this as_of's attempt with a back-off, so
    it is not tried again every day: the run defers, or, asked by hand, fails with the error.
    The train flow passes its Prefect tasks for the steps.
    """
    from tasks.feature_store import feature_store

    day = day or latest_day(lake, usecase)
    if day is None:
        return Deferral("nothing validated yet", None)
    plan = plan_training(
        lake,
        usecase,
        request,
        day=day,
        tracking_uri=settings.tracking_uri,
        state_of=state_of or current_state,
    )
    if plan.deferral is not None:
        return plan.deferral
    store = (store_of or feature_store)(settings)
    try:
        data = (build or build_training_set)(lake, usecase, store, as_of=day, since=plan.since)
    except NotEnoughData as exc:
        deferral = record_insufficient_run(lake.ledger, plan, str(exc))
        if deferral.fails:
            raise
        return deferral
    return Ready(plan, data)


@dataclass(frozen=True)
class Judged:
    """A trained challenger and the gate's decision on it: what the train run shows and
    returns."""

    ready: Ready
    result: TrainingResult
    decision: Decision
    previous: str | None  # the champion before the decision
    report_key: str  # the promotion report
    rebased: dict[str, Any] | None  # the re-based drift reference, if any

    def artifacts(self, name: str, *, reports_zone: str) -> list[Artifact]:
        data, version = self.ready.data, self.result.version
        return [
            Table(
                "training-metrics",
                metrics_rows(self.result, data.schema),
                description=f"{name} v{version} trained as of {data.as_of} "
                f"({self.ready.plan.request.trigger})",
            ),
            Markdown(
                "promotion-decision",
                decision_markdown(
                    name,
                    version,
                    self.decision,
                    reports_zone=reports_zone,
                    report_key=self.report_key,
                    rebased=self.rebased,
                ),
            ),
        ]

    def outcome(self) -> TrainOutcome:
        """What the train run returns."""
        plan, result = self.ready.plan, self.result
        return {
            "trained": True,
            "version": result.version,
            "as_of": str(self.ready.data.as_of),
            "reason": plan.request.trigger,
            "why": plan.decision.why,
            "since": str(plan.since) if plan.since else None,
            "promoted": self.decision.promote,
            "decision": self.decision.to_dict(),
            "rebaselined": self.rebased,
            "previous_champion": self.previous,
            "metrics": result.metrics,
            "rows": result.rows,
            "population": result.population,
            "reports": {"training": result.report_key, "promotion": self.report_key},
        }


def promotion_gate(
    settings: Settings,
    usecase: UseCase,
    data: TrainingSet,
    version: str,
    lake: Lake,
    *,
    trained_scores: np.ndarray | None = None,
) -> tuple[Decision, str | None, str]:
    """Run the promotion gate on the holdout; returns (decision, previous champion, report key).
    ``trained_scores``: the challenger's holdout scores from training
    (:attr:`TrainingResult.holdout_scores`)."""
    from tasks import gate as gating
    from tasks import registry
    from tasks.model import labels

    _, model_spec, service = _specs(usecase)
    name = model_spec.registered_name
    holdout = data.splits["holdout"]
    champion_before = registry.champion_version(settings.tracking_uri, name)
    gated = registry.gate(
        settings.tracking_uri,
        name,
        version,
        holdout,
        data.schema,
        model_spec,
        lock_path=registry.promotion_lock_path(settings.state_path, name),
        expected_feature_service=service,
        trained_scores=trained_scores,
    )
    decision = gated.decision
    html = gating.decision_report(
        decision,
        name=name,
        version=version,
        y=labels(holdout, data.schema),
        champion_scores=gated.champion_scores,
        challenger_scores=gated.challenger_scores,
        details={
            "champion before": champion_before or "(none)",
            "holdout rows": len(holdout),
            "holdout positives": int((holdout[data.schema.label] > 0).sum()),
            "holdout snapshot days": int(
                pd.to_datetime(holdout["event_timestamp"], utc=True).dt.normalize().nunique()
            ),
            "population rule": data.population_rule,
        },
    )
    key = f"promotion/{name}-v{version}.html"
    lake.reports.write_bytes(key, html.encode("utf-8"))
    return decision, gated.previous, key


def decision_event(
    name: str, version: str, decision: Decision, previous: str | None, tracking_uri: str
) -> dict[str, Any]:
    """The Prefect event announcing a gate decision (the tracking URI with its password
    masked: events are shown in the Prefect UI and kept in its event feed)."""
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
            "tracking_uri": redact(tracking_uri),
        },
    }


def metrics_rows(result: TrainingResult, schema: FeatureSchema) -> list[dict[str, Any]]:
    """The train run's metrics artifact: one row per split with its scalar metrics."""
    names = metric_names(schema)
    return [
        {"split": split, **{k: metrics[k] for k in names if k in metrics}}
        for split, metrics in result.metrics.items()
    ]


def decision_markdown(
    name: str,
    version: str,
    decision: Decision,
    *,
    reports_zone: str,
    report_key: str,
    rebased: dict[str, Any] | None,
) -> str:
    """The train run's promotion artifact: the verdict and its reason, where the report is (the
    zone's URI with its password masked) and the re-based drift reference, if any."""
    verdict = "promoted" if decision.promote else "rejected"
    text = (
        f"**{name} v{version}: {verdict}**\n\n{decision.reason}"
        f"\n\nReport: `{redact(reports_zone)}/{report_key}`"
    )
    if rebased:
        text += f"\n\nDrift reference of v{rebased['version']} re-based: {rebased['why']}"
    return text


@contextmanager
def training_lock(settings: Settings, name: str) -> Iterator[None]:
    """Held by a train run of model ``name`` from its start to its end: one training at a time
    per model, and what the next run finds unfinished was left by a stopped process (the OS
    releases the lock of a killed one)."""
    from filelock import FileLock

    from tasks import registry

    path = registry.training_lock_path(settings.state_path, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path), timeout=TRAINING_LOCK_TIMEOUT):
        yield
