"""Training stage: labelled snapshots → point-in-time training set → challenger in MLflow.

Plain functions over the lake, the Feast store and the registry; the train flow calls them in
order. The model itself (pipeline, metrics, reference profile, report) is ``tasks.train``; the
registry and promotion are ``tasks.registry``, the gate's decision ``tasks.gate``.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from driftloop_config.redact import redact
from tasks.ingest import newest_day, open_ledger, read_validated
from tasks.train import FeatureSchema, metric_names

if TYPE_CHECKING:
    from feast import FeatureStore
    from mlflow import MlflowClient

    from driftloop_config.settings import Settings
    from driftloop_config.usecase import ModelSpec, TargetSpec, UseCase
    from tasks.gate import Decision
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
    extra: dict[str, Any] = field(default_factory=dict)


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
    from tasks import registry, train

    target, model_spec, service = _specs(usecase)
    schema = data.schema
    population = data.population_summary()
    model = train.fit(
        data.splits["train"],
        data.splits["validation"],
        schema,
        seed=seed,
        estimator=model_spec.estimator,
    )
    metrics = {name: train.evaluate(model, df, schema) for name, df in data.splits.items()}
    # the reference: the newest feature days (rows the model was not fitted on, so their
    # probabilities are as sharp as live ones, which the CBPE estimate needs); without enough of
    # them, the validation and holdout rows
    unseen = pd.concat([data.splits["validation"], data.splits["holdout"]], ignore_index=True)
    # measured once: the drift reference weighs inputs by it, the report shows it
    importance = train.feature_importance(
        model, data.splits["holdout"], schema, max_rows=train.IMPORTANCE_ROWS, seed=seed
    )
    newest = reference_rows(lake, usecase, data.as_of, fallback=unseen)
    newest_scores = train.predict_scores(model, newest, schema)
    reference = train.reference_profile(
        newest,
        schema,
        newest_scores,
        window_days=usecase.drift.window_days,
        importance=train.input_importance(
            model, data.splits["holdout"], schema, seed=seed, table=importance
        ),
        expected_metric=metrics["holdout"][model_spec.metric],
        unseen=newest,
        unseen_predictions=newest_scores,
    )
    report = train.training_report(
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
            **({"since": str(since)} if since else {}),
            "trigger": trigger,
            "target": target.name,
            "population_rule": data.population_rule,
            "horizon_days": target.horizon_days,
            "label_delay_days": target.label_delay_days,
            # the built-in model's early stopping; a named estimator is recorded by its name
            **(
                {"boosting_iterations": train.boosting_iterations(model)}
                if model_spec.estimator is None
                else {"estimator": model_spec.estimator}
            ),
        },
        tags={"driftloop.usecase": usecase.name, POPULATION_TAG: data.population_rule},
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
    return TrainingResult(
        version,
        metrics,
        data.rows,
        data.window,
        data_hash,
        report_key=key,
        extra={"population": population},
    )


def rebaseline(
    settings: Settings,
    usecase: UseCase,
    lake: Lake,
    data: TrainingSet,
    champion: str,
    why: str,
) -> dict[str, Any]:
    """Give ``champion`` a drift reference of the newest inputs (the reference windows up to
    ``data.as_of``, as a training on them would have, scored by the champion itself), keeping
    its input importance and expected metric; the earlier references stay in its run. Returns
    what was done: version, as_of, the new window, the artifact and ``why``."""
    from tasks import registry, train

    _, model_spec, _ = _specs(usecase)
    name = model_spec.registered_name
    model = registry.load_version(settings.tracking_uri, name, champion)
    before = registry.load_reference(settings.tracking_uri, name, champion)
    unseen = pd.concat([data.splits["validation"], data.splits["holdout"]], ignore_index=True)
    newest = reference_rows(lake, usecase, data.as_of, fallback=unseen)
    scores = train.predict_scores(model, newest, data.schema)
    reference = train.reference_profile(
        newest,
        data.schema,
        scores,
        window_days=usecase.drift.window_days,
        importance=before.get("importance"),
        expected_metric=before.get("expected_metric"),
        unseen=newest,
        unseen_predictions=scores,
    )
    reference["rebaselined"] = {
        "as_of": str(data.as_of),
        "why": why,
        "previous_window": before.get("window"),
    }
    artifact = registry.log_reference(
        settings.tracking_uri, name, champion, reference, label=str(data.as_of)
    )
    return {
        "version": champion,
        "as_of": str(data.as_of),
        "window": reference.get("window"),
        "artifact": artifact,
        "why": why,
    }


def rebaseline_if_new_normal(
    settings: Settings,
    usecase: UseCase,
    lake: Lake,
    data: TrainingSet,
    decision: Decision,
    *,
    day: date,
    trigger: str,
    since: date | None,
) -> dict[str, Any] | None:
    """After the gate: when the retraining policy reads the decision as a new normal (a
    drift-started challenger no better than a champion that holds up on labels after the
    change, :func:`tasks.policy.rebaseline_reason`), re-base the champion's drift reference
    (:func:`rebaseline`). What was done, with ``why``; None when nothing was."""
    from tasks import policy
    from tasks.drift import latest_check

    _, model_spec, _ = _specs(usecase)
    last = latest_check(lake.reports, model_spec.registered_name, day)
    why = policy.rebaseline_reason(trigger, decision, last, as_of=day, since=since)
    if why is None or decision.compared_with is None:
        return None
    return rebaseline(settings, usecase, lake, data, decision.compared_with, why)


def judge(
    settings: Settings, usecase: UseCase, data: TrainingSet, version: str, lake: Lake
) -> tuple[Decision, str | None, str]:
    """Run the promotion gate on the holdout; returns (decision, previous champion, report key)."""
    from tasks import gate as gating
    from tasks import registry, train

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
    )
    decision = gated.decision
    html = gating.decision_report(
        decision,
        name=name,
        version=version,
        y=train.labels(holdout, data.schema),
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


# ---- recovery after an interrupted run ----------------------------------------------------------
#
# A train run is: MLflow run → registered version (alias ``challenger``) → gate (decision tags,
# ``champion`` alias) → promotion report → loop state → event → ``driftloop.announced`` tag. A
# process stopped anywhere in between (kill -9, a lost machine) leaves that sequence unfinished;
# the next train run finishes it first, holding the same per-model lock every train run holds.


@dataclass
class Recovery:
    """What :func:`recover_interrupted` found and did."""

    killed_runs: list[str] = field(default_factory=list)  # MLflow runs marked KILLED
    judged: dict[str, str] = field(default_factory=dict)  # version -> promoted / rejected
    completed: list[str] = field(default_factory=list)  # versions given their report/event
    removed: list[str] = field(default_factory=list)  # half-written files removed
    reports: dict[str, str] = field(default_factory=dict)  # version -> promotion report key
    #: (version, event) to emit, then mark with :func:`mark_announced`.
    announcements: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when the previous runs left nothing unfinished."""
        return not (self.killed_runs or self.judged or self.completed or self.removed)

    def rows(self) -> list[dict[str, str]]:
        """One row per action, for the flow's artifact."""
        rows = [
            {"what": "MLflow run left RUNNING", "id": r, "action": "marked KILLED"}
            for r in self.killed_runs
        ]
        rows += [
            {"what": "version registered but never judged", "id": f"v{v}", "action": verdict}
            for v, verdict in self.judged.items()
        ]
        rows += [
            {"what": "decision without report/event", "id": f"v{v}", "action": "completed"}
            for v in self.completed
        ]
        rows += [{"what": "half-written file", "id": k, "action": "removed"} for k in self.removed]
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "killed_runs": list(self.killed_runs),
            "judged": dict(self.judged),
            "completed": list(self.completed),
            "removed": list(self.removed),
            "reports": dict(self.reports),
            "announced": [v for v, _ in self.announcements],
        }


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


def promotion_report_key(name: str, version: str) -> str:
    return f"promotion/{name}-v{version}.html"


def mark_announced(tracking_uri: str, name: str, version: str) -> None:
    """Record that the decision event of ``version`` was emitted."""
    from tasks import registry

    client = registry.client_for(tracking_uri)
    client.set_model_version_tag(name, str(version), registry.ANNOUNCED_TAG, "true")


def _run_params(client: MlflowClient, run_id: str | None) -> dict[str, str]:
    if not run_id:
        return {}
    return dict(client.get_run(run_id).data.params)


def _record_in_policy(
    lake: Lake,
    usecase: UseCase,
    params: dict[str, str],
    *,
    promoted: bool,
    version: str | None = None,
    reason: str = "",
) -> None:
    """What the interrupted run would have written to the loop state after its decision (the
    attempt of its as_of, a back-off after a rejection, the decision in the log)."""
    from tasks import policy
    from tasks.training_set import last_snapshot_day

    target, _, _ = _specs(usecase)
    if not params.get("as_of"):
        return
    since = params.get("since")
    as_of = date.fromisoformat(params["as_of"])
    state = policy.record_training(
        policy.read_state(lake.ledger),
        trained_through=last_snapshot_day(
            as_of,
            horizon_days=target.horizon_days,
            label_delay_days=target.label_delay_days,
        ),
        promoted=promoted,
        since=date.fromisoformat(since) if since else None,
        as_of=as_of,
        version=version,
        trigger=params.get("trigger") or "manual",
        reason=f"recorded by the next train run: {reason}" if reason else "",
        retrain=usecase.retrain,
    )
    policy.write_state(lake.ledger, state)


def _reject_unjudgeable(
    settings: Settings, usecase: UseCase, version: str, why: str
) -> tuple[Decision, str | None]:
    """Record a rejection for a version the gate can no longer measure."""
    from tasks import gate as gating
    from tasks import registry

    _, model_spec, _ = _specs(usecase)
    name = model_spec.registered_name
    client = registry.client_for(settings.tracking_uri)
    lock = registry.promotion_lock_path(settings.state_path, name)
    while True:
        current = registry.champion_version(client, name)
        decision = gating.Decision(
            promote=False,
            reason=f"rejected: its run stopped before the gate, and {why}",
            metric=model_spec.metric,
            challenger_value=math.nan,
            champion_value=None,
            delta_ci=None,
            challenger_ece=math.nan,
            champion_ece=None,
            sanity={},
            samples=0,
            compared_with=current,
        )
        previous = registry.promote(client, name, version, decision, lock_path=lock)
        if previous != registry.STALE:
            return decision, previous


def _judge_leftover(
    settings: Settings,
    usecase: UseCase,
    lake: Lake,
    version: str,
    params: dict[str, str],
    store: Callable[[], FeatureStore],
) -> tuple[Decision, str | None, str]:
    """The gate for a version whose run stopped before it, on the holdout of the training set
    the version was trained on (rebuilt from its ``as_of`` and ``since``)."""
    from tasks import gate as gating

    _, model_spec, _ = _specs(usecase)
    name = model_spec.registered_name
    if not params.get("as_of"):
        decision, previous = _reject_unjudgeable(
            settings, usecase, version, "its training run records no as_of to rebuild the holdout"
        )
    else:
        since = params.get("since")
        try:
            data = build_training_set(
                lake,
                usecase,
                store(),
                as_of=date.fromisoformat(params["as_of"]),
                since=date.fromisoformat(since) if since else None,
            )
        except NotEnoughData as exc:
            decision, previous = _reject_unjudgeable(
                settings, usecase, version, f"its holdout cannot be rebuilt: {exc}"
            )
        else:
            return judge(settings, usecase, data, version, lake)
    key = promotion_report_key(name, version)
    html = gating.decision_report(decision, name=name, version=version)
    lake.reports.write_bytes(key, html.encode("utf-8"))
    return decision, previous, key


def _complete_report(
    lake: Lake, name: str, version: str, decision: Decision, decided_at: str
) -> str:
    """The promotion report of a decision whose run stopped before writing it, rebuilt from
    the decision recorded on the version (evidence and checks; no holdout curves)."""
    from tasks import gate as gating

    key = promotion_report_key(name, version)
    if not lake.reports.exists(key):
        html = gating.decision_report(
            decision,
            name=name,
            version=version,
            details={
                "decided at": decided_at or "(not recorded)",
                "report": "rebuilt from the decision recorded on the version: the run that "
                "made it stopped before writing this report",
            },
        )
        lake.reports.write_bytes(key, html.encode("utf-8"))
    return key


def recover_interrupted(
    settings: Settings,
    usecase: UseCase,
    lake: Lake,
    *,
    store: Callable[[], FeatureStore] | None = None,
) -> Recovery:
    """Finish what stopped train runs of the use case's model left unfinished. Call it holding
    :func:`training_lock`, before training.

    * MLflow runs of the model's experiment still RUNNING are marked KILLED (tag
      ``driftloop.killed_reason``).
    * Half-written report and loop-state files are removed.
    * Every version without a decision (registered, then stopped before the gate) is judged by
      the same gate on the holdout of the data it was trained on — the decision tags, the
      report and the loop state are recorded as a run that had not stopped would have. A
      version whose holdout cannot be rebuilt any more is recorded as rejected, saying why.
    * Every decided version whose event was not announced (no ``driftloop.announced`` tag)
      and that is the promoted champion or lacks its report gets its report (rebuilt from the
      recorded decision) and loop-state record.

    Returns what was done; ``announcements`` holds the decision events still to be emitted
    (emit each, then :func:`mark_announced`). ``store`` builds the Feast store, only when a
    holdout has to be rebuilt.
    """
    from tasks import registry

    _, model_spec, _ = _specs(usecase)
    name = model_spec.registered_name
    client = registry.client_for(settings.tracking_uri)
    out = Recovery()
    out.killed_runs = registry.kill_orphaned_runs(
        client,
        name,
        reason="the train run that owned it stopped before finishing it; marked by the next "
        "train run",
    )
    from tasks.storage import sweep_debris

    out.removed = sweep_debris(lake.root)  # temporary files of writers that are gone
    if store is None:
        from tasks.features import feature_store

        def store() -> FeatureStore:
            return feature_store(settings)

    for mv in registry.versions(client, name):
        version = str(mv.version)
        decision = registry.decision_from_tags(mv.tags)
        if decision is None:
            params = _run_params(client, mv.run_id)
            decision, previous, key = _judge_leftover(
                settings, usecase, lake, version, params, store
            )
            out.judged[version] = "promoted" if decision.promote else "rejected"
        elif mv.tags.get(registry.ANNOUNCED_TAG) == "true":
            continue
        else:
            key = promotion_report_key(name, version)
            champion = registry.champion_version(client, name)
            if not (decision.promote and champion == version) and lake.reports.exists(key):
                continue  # an old decision, reported; its event is long past
            params = _run_params(client, mv.run_id)
            key = _complete_report(
                lake, name, version, decision, mv.tags.get("driftloop.decided_at", "")
            )
            previous = decision.compared_with
            out.completed.append(version)
        _record_in_policy(
            lake,
            usecase,
            params,
            promoted=decision.promote,
            version=version,
            reason=decision.reason,
        )
        out.reports[version] = key
        out.announcements.append(
            (version, decision_event(name, version, decision, previous, settings.tracking_uri))
        )
    return out
