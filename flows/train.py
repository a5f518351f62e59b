"""Train + promote: a challenger from the point-in-time training set, judged by the gate."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from pydantic import BaseModel, ConfigDict, Field

from driftloop_config.settings import Settings, export_artifact_endpoint, load_settings
from driftloop_config.usecase import UseCase, load_usecase
from flows.outcomes import DEFERRED, decided
from tasks import features, policy, training
from tasks.storage import Lake


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


def _deferred(name: str, deferral: policy.Deferral) -> dict[str, Any]:
    create_markdown_artifact(key="training-deferred", markdown=deferral.markdown(name))
    return deferral.to_dict()


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
    name = usecase.loop().model.registered_name
    day = params.as_of or training.latest_day(lake, usecase)
    if day is None:
        return {"trained": False, "reason": "nothing validated yet"}
    request = policy.RunRequest(
        trigger=params.reason,
        since=params.since,
        drift_start=params.drift_start,
        signals=params.signals,
        severity=params.severity,
    )
    # the decision (and the policy's state) is written before anything is trained
    plan = policy.plan_training(
        lake, usecase, request, day=day, tracking_uri=settings.tracking_uri, state_of=loop_state
    )
    if plan.deferral is not None:
        return _deferred(name, plan.deferral)

    store = feature_store(settings)
    try:
        data = build_training_set(lake, usecase, store, as_of=day, since=plan.since)
    except training.NotEnoughData as exc:
        # recorded as this as_of's attempt, with a back-off: not tried again every day
        deferral = policy.record_insufficient_run(lake.ledger, plan, str(exc))
        if deferral.fails:
            raise
        return _deferred(name, deferral)
    result = train_challenger(
        settings, usecase, data, lake, seed=params.seed, since=plan.since, trigger=params.reason
    )
    decision, previous, report_key = judge(settings, usecase, data, result.version, lake)
    policy.record_judged_run(lake.ledger, plan, result.version, decision)

    rebased = training.rebaseline_if_new_normal(
        settings, usecase, lake, data, decision, day=day, trigger=params.reason, since=plan.since
    )
    create_table_artifact(
        key="training-metrics",
        table=training.metrics_rows(result, data.schema),
        description=f"{name} v{result.version} trained as of {data.as_of} ({params.reason})",
    )
    create_markdown_artifact(
        key="promotion-decision",
        markdown=training.decision_markdown(
            name,
            result.version,
            decision,
            reports_zone=settings.zone("reports"),
            report_key=report_key,
            rebased=rebased,
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
        "why": plan.decision.why,
        "since": str(plan.since) if plan.since else None,
        "promoted": decision.promote,
        "decision": decision.to_dict(),
        "rebaselined": rebased,
        "previous_champion": previous,
        "metrics": result.metrics,
        "rows": result.rows,
        "population": result.extra.get("population", {}),
        "reports": {"training": result.report_key, "promotion": report_key},
    }
