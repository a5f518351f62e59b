"""Train + promote: a challenger from the point-in-time training set, judged by the gate."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from flows.outcomes import DEFERRED, ended
from flows.shared import announce, feature_store, loop_state, show
from tasks import policy, rebaseline, recovery, training
from tasks.context import RunContext


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

    def request(self) -> policy.RunRequest:
        """What the retraining policy is asked."""
        return policy.RunRequest(
            trigger=self.reason,
            since=self.since,
            drift_start=self.drift_start,
            signals=self.signals,
            severity=self.severity,
        )


build_training_set = task(name="training-set", cache_policy=NO_CACHE, retries=1)(
    training.build_training_set
)
train_challenger = task(name="train-challenger", cache_policy=NO_CACHE)(training.train_challenger)
promotion_gate = task(name="promotion-gate", cache_policy=NO_CACHE, retries=1)(
    training.promotion_gate
)
recover = task(name="recover-interrupted", cache_policy=NO_CACHE)(recovery.recover_interrupted)


def _announce(ctx: RunContext, announcements: list[tuple[str, dict[str, Any]]]) -> None:
    """Emit each decision event, then record on its version that it was emitted."""
    for version, event in announcements:
        announce([event])
        recovery.mark_announced(ctx.settings.tracking_uri, ctx.model_name, version)


@flow(
    name="train",
    description="Train a challenger on point-in-time features; promote it only "
    "when it beats the champion on the same holdout.",
)
def train_flow(params: TrainParams = TrainParams()) -> policy.TrainOutcome:
    ctx = RunContext.load()
    with training.training_lock(ctx.settings, ctx.model_name):
        recovered = recover(ctx.settings, ctx.usecase, ctx.lake)
        _announce(ctx, recovered.announcements)
        show(recovered.artifact())
        out = _train(params, ctx)
    result: policy.TrainOutcome = {**out, "recovered": recovered.to_dict()}
    # the policy deferred, or nothing validated yet
    return ended(result, name=DEFERRED, message=str(out["reason"]), when=not out["trained"])


def _train(params: TrainParams, ctx: RunContext) -> policy.TrainOutcome:
    ready = training.prepare(
        ctx.lake,
        ctx.usecase,
        params.request(),
        settings=ctx.settings,
        day=params.as_of,
        state_of=loop_state,
        store_of=feature_store,
        build=build_training_set,
    )
    if isinstance(ready, policy.Deferral):
        show(ready.artifact(ctx.model_name))
        return ready.to_dict()
    data, plan = ready.data, ready.plan
    result = train_challenger(
        ctx.settings,
        ctx.usecase,
        data,
        ctx.lake,
        seed=params.seed,
        since=plan.since,
        trigger=params.reason,
    )
    decision, previous, report_key = promotion_gate(
        ctx.settings,
        ctx.usecase,
        data,
        result.version,
        ctx.lake,
        trained_scores=result.holdout_scores,
    )
    policy.record_judged_run(ctx.lake.ledger, plan, result.version, decision)
    rebased = rebaseline.rebaseline_if_new_normal(
        ctx.settings,
        ctx.usecase,
        ctx.lake,
        data,
        decision,
        day=plan.day,
        trigger=params.reason,
        since=plan.since,
    )
    judged = training.Judged(ready, result, decision, previous, report_key, rebased)
    show(*judged.artifacts(ctx.model_name, reports_zone=ctx.settings.zone("reports")))
    event = training.decision_event(
        ctx.model_name, result.version, decision, previous, ctx.settings.tracking_uri
    )
    _announce(ctx, [(result.version, event)])
    return judged.outcome()
