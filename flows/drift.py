"""Drift: compare the latest window of features and predictions with the champion's training
reference; on persistent drift, emit driftloop.drift.detected (which starts retraining).

Wiring only: the statistics, signals, persistence and severity are ``tasks.drift``'s."""

from __future__ import annotations

from datetime import date

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from flows.outcomes import NO_DATA, SKIPPED, decided, ended
from flows.runners import partitions, run_partitions
from flows.shared import announce, show
from tasks import drift, drift_report
from tasks.context import RunContext


class DriftParams(BaseModel):
    """Which window to check. The default checks the newest day."""

    model_config = ConfigDict(extra="forbid")

    day: date | None = Field(
        default=None, description="Last day of the window (YYYY-MM-DD). Empty: the newest day."
    )


window_inputs = task(name="drift-inputs", cache_policy=NO_CACHE, retries=1)(drift.window_inputs)
# pure per-group statistics: run on the settings' task runner (threads or Dask workers)
check_features = task(name="drift-features", cache_policy=NO_CACHE, retries=1)(drift.check_features)
finish_check = task(name="drift-verdict", cache_policy=NO_CACHE, retries=1)(drift.finish_check)


@flow(name="drift", description="Data, prediction and performance drift of the champion.")
def drift_flow(params: DriftParams = DriftParams()) -> drift.DriftOutcome:
    ctx = RunContext.load()
    inputs = window_inputs(ctx.settings, ctx.usecase, ctx.lake, params.day)
    if isinstance(inputs, drift.NotChecked):
        show(inputs.artifact())
        return decided(inputs.outcome(), name=SKIPPED, message=inputs.reason)
    checks = drift.window_checks(inputs, ctx.usecase, parts=partitions(ctx.settings))
    scores = [s for group in run_partitions(ctx.settings, check_features, checks) for s in group]
    checked = finish_check(ctx.usecase, ctx.lake, inputs, scores)
    show(*drift_report.artifacts(checked, ctx.settings.zone("reports")))
    announce(checked.events())
    return ended(
        checked.outcome(), name=NO_DATA, message=checked.message, when=checked.result.no_data
    )
