"""Train + promote: a challenger from the point-in-time training set, judged by the gate."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from pydantic import BaseModel, ConfigDict, Field

from driftloop.redact import redact
from driftloop.settings import Settings, export_artifact_endpoint, load_settings
from driftloop.usecase import UseCase, load_usecase
from flows.outcomes import DEFERRED, decided
from tasks import features, policy, registry, training
from tasks.storage import Lake
from tasks.training_set import last_snapshot_day


class TrainParams(BaseModel):
    """Train a challenger and let the gate decide. The defaults (a manual run) train now on
    everything known; runs started by events or schedules ask the retraining policy first."""

    model_config = ConfigDict(extra="forbid")

    as_of: date | None = Field(
        default=None,
        description="Train with what was known on this day (YYYY-MM-DD). Empty: the newest "
        "validated day.",
    )
    reason: Literal["manual", "schedule", "new-labels", "drift"] = Field(
        default="manual",
        description="Why this run was started. 'manual' trains now; the others train only "
        "when the retraining policy says so (e.g. after drift, once enough labels after the "
        "change exist).",
    )
    drift_start: date | None = Field(
        default=None,
        description="First day of the window where drift was detected (set by the drift "
        "event); recorded so training waits for labels after the change and uses only them.",
    )
    signals: (
        list[Literal["input-drift", "prediction-drift", "estimated-drop", "realised-drop"]] | None
    ) = Field(
        default=None,
        description="What the drift event saw (set by the drift event). Retraining follows "
        "the use case's switches per signal (retrain.on_drift, on_estimated_drop, "
        "on_realised_drop). Empty: input drift.",
    )
    severity: Literal["watch", "drift", "severe"] | None = Field(
        default=None,
        description="How strong the drift event's change is (set by the drift event); a "
        "change to watch is noted, not retrained on. Empty: drift.",
    )
    since: date | None = Field(
        default=None,
        description="Use only snapshots from this day on (e.g. after a change in reality). "
        "Empty: all history. Manual runs only; the policy chooses for the others.",
    )
    seed: int = Field(default=0, ge=0, description="Random seed of the model fit.")


feature_store = task(name="feature-store", cache_policy=NO_CACHE)(features.feature_store)
build_training_set = task(name="training-set", cache_policy=NO_CACHE, retries=1)(
    training.build_training_set
)
train_challenger = task(name="train-challenger", cache_policy=NO_CACHE)(training.train_challenger)
judge = task(name="promotion-gate", cache_policy=NO_CACHE, retries=1)(training.judge)
loop_state = task(name="loop-state", cache_policy=NO_CACHE, retries=1)(policy.current_state)
recover = task(name="recover-interrupted", cache_policy=NO_CACHE)(training.recover_interrupted)


def _announce(settings: Settings, name: str, version: str, event: dict[str, Any]) -> None:
    """Emit a decision event, then record on the version that it was emitted."""
    emit_event(**event)
    training.mark_announced(settings.tracking_uri, name, version)


def _show_recovery(recovered: training.Recovery) -> None:
    if recovered.clean:
        create_markdown_artifact(
            key="recovery",
            markdown="**Recovery:** the previous train runs left nothing unfinished.",
        )
    else:
        create_table_artifact(
            key="recovery",
            table=recovered.rows(),
            description="Left unfinished by a stopped train run, finished by this one",
        )


def _deferred(name: str, reason: str, day: date) -> dict[str, Any]:
    create_markdown_artifact(
        key="training-deferred", markdown=f"**{name}: not training now** ({reason})"
    )
    return {"trained": False, "reason": reason, "as_of": str(day)}


@flow(
    name="train",
    description="Train a challenger on point-in-time features; promote it only "
    "when it beats the champion on the same holdout.",
)
def train_flow(params: TrainParams = TrainParams()) -> dict[str, Any]:
    settings = load_settings()
    export_artifact_endpoint(settings)  # MLflow's own S3 client: the same endpoint
    usecase = load_usecase(settings.usecase)
    lake = Lake.from_settings(settings)
    name = usecase.loop().model.registered_name
    with training.training_lock(settings, name):
        recovered = recover(settings, usecase, lake)
        for version, event in recovered.announcements:
            _announce(settings, name, version, event)
        _show_recovery(recovered)
        out = _train(params, settings, usecase, lake)
    result = {**out, "recovered": recovered.to_dict()}
    if out.get("trained") is False:  # the policy deferred, or nothing validated yet
        return decided(result, name=DEFERRED, message=str(out["reason"]))
    return result


def _train(params: TrainParams, settings: Settings, usecase: UseCase, lake: Lake) -> dict[str, Any]:
    loop = usecase.loop()
    name = loop.model.registered_name
    day = params.as_of or training.latest_day(lake, usecase)
    if day is None:
        return {"trained": False, "reason": "nothing validated yet"}

    has_champion = registry.champion_version(settings.tracking_uri, name) is not None
    state = loop_state(lake, usecase, has_champion=has_champion, day=day)
    state, due = policy.plan_run(
        state,
        day=day,
        request=policy.RunRequest(
            trigger=params.reason,
            since=params.since,
            drift_start=params.drift_start,
            signals=params.signals,
            severity=params.severity,
        ),
        target=loop.target,
        model=loop.model,
        retrain=usecase.retrain,
    )
    policy.write_state(lake.ledger, state)
    if not due.train:
        return _deferred(name, due.reason, day)
    since = due.since
    trained_through = last_snapshot_day(
        day,
        horizon_days=loop.target.horizon_days,
        label_delay_days=loop.target.label_delay_days,
    )

    store = feature_store(settings)
    try:
        data = build_training_set(lake, usecase, store, as_of=day, since=since)
    except training.NotEnoughData as exc:
        # recorded as this as_of's attempt, with a back-off: not tried again every day
        why = str(exc)
        if not why.startswith("insufficient evidence"):
            why = f"insufficient evidence: {why}"
        policy.write_state(
            lake.ledger,
            policy.record_insufficient(
                state,
                day=day,
                as_of=day,
                trained_through=trained_through,
                why=why,
                trigger=params.reason,
                since=since,
                retrain=usecase.retrain,
            ),
        )
        if params.reason == "manual":
            raise
        return _deferred(name, why, day)
    result = train_challenger(
        settings, usecase, data, lake, seed=params.seed, since=since, trigger=params.reason
    )
    decision, previous, report_key = judge(settings, usecase, data, result.version, lake)
    policy.write_state(
        lake.ledger,
        policy.record_training(
            state,
            trained_through=trained_through,
            promoted=decision.promote,
            since=since,
            as_of=day,
            version=result.version,
            trigger=params.reason,
            day=day,
            reason=decision.reason,
            retrain=usecase.retrain,
        ),
    )

    rebased = training.rebaseline_if_new_normal(
        settings, usecase, lake, data, decision, day=day, trigger=params.reason, since=since
    )

    from tasks.train import metric_names

    create_table_artifact(
        key="training-metrics",
        table=[
            {
                "split": s,
                **{k: m[k] for k in metric_names(data.schema) if k in m},
            }
            for s, m in result.metrics.items()
        ],
        description=f"{name} v{result.version} trained as of {data.as_of} ({params.reason})",
    )
    create_markdown_artifact(
        key="promotion-decision",
        markdown=f"**{name} v{result.version}: {'promoted' if decision.promote else 'rejected'}**"
        f"\n\n{decision.reason}\n\nReport: `{redact(settings.zone('reports'))}/{report_key}`"
        + (
            f"\n\nDrift reference of v{rebased['version']} re-based: {rebased['why']}"
            if rebased
            else ""
        ),
    )
    _announce(
        settings,
        name,
        result.version,
        training.decision_event(name, result.version, decision, previous, settings.tracking_uri),
    )
    return {
        "trained": True,
        "version": result.version,
        "as_of": str(data.as_of),
        "reason": params.reason,
        "why": due.why,
        "since": str(since) if since else None,
        "promoted": decision.promote,
        "decision": decision.to_dict(),
        "rebaselined": rebased,
        "previous_champion": previous,
        "metrics": result.metrics,
        "rows": result.rows,
        "population": result.extra.get("population", {}),
        "reports": {"training": result.report_key, "promotion": report_key},
    }
