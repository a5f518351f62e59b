"""Drift: compare the latest window of features and predictions with the champion's training
reference; on persistent drift, emit driftloop.drift.detected (which starts retraining).

Wiring only: the statistics, signals, persistence and severity are ``tasks.drift``'s."""

from __future__ import annotations

from datetime import date
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from pydantic import BaseModel, ConfigDict, Field

from driftloop_config.settings import export_artifact_endpoint, load_settings
from driftloop_config.usecase import load_usecase
from flows.outcomes import NO_DATA, SKIPPED, decided
from flows.runners import partitions, run_partitions
from tasks import drift, training
from tasks.storage import Lake


class DriftParams(BaseModel):
    """Which window to check. The default checks the newest day."""

    model_config = ConfigDict(extra="forbid")

    day: date | None = Field(
        default=None, description="Last day of the window (YYYY-MM-DD). Empty: the newest day."
    )


load_inputs = task(name="drift-inputs", cache_policy=NO_CACHE, retries=1)(drift.load_inputs)
# pure per-group statistics: run on the settings' task runner (threads or Dask workers)
check_features = task(name="drift-features", cache_policy=NO_CACHE, retries=1)(drift.check_features)
finish_check = task(name="drift-verdict", cache_policy=NO_CACHE, retries=1)(drift.finish_check)


@flow(name="drift", description="Data, prediction and performance drift of the champion.")
def drift_flow(params: DriftParams = DriftParams()) -> dict[str, Any]:
    settings = load_settings()
    export_artifact_endpoint(settings)  # MLflow's own S3 client: the same endpoint
    usecase = load_usecase(settings.usecase)
    lake = Lake.from_settings(settings)
    day = params.day or training.latest_day(lake, usecase)
    if day is None:
        return skipped(None, "nothing validated yet: land and ingest data first")
    inputs = load_inputs(settings, usecase, lake, day)
    if inputs is None:
        return skipped(day, "no champion yet: there is no model to compare with")
    if inputs.features.empty:
        return no_data(lake, day, inputs)
    spec = inputs.spec(usecase)
    with_predictions = inputs.predictions is not None
    alpha = drift.window_alpha(inputs.reference, spec, with_predictions=with_predictions)
    checks = drift.feature_checks(inputs, spec, alpha=alpha, parts=partitions(settings))
    scored = run_partitions(settings, check_features, checks)
    scores = [score for group in scored for score in group]
    prediction = drift.check_predictions(
        inputs.reference, inputs.predictions, alpha=alpha, spec=spec
    )
    result, html = finish_check(usecase, lake, inputs, scores, prediction)

    key = drift.write_check(lake.reports, day, result, html)
    create_table_artifact(
        key="drift-scores",
        table=drift.score_rows(result),
        description=f"drift check of {result.model} v{result.model_version}, window "
        f"{result.window}: severity {result.severity}, signals "
        f"{', '.join(result.signals) or 'none'}",
    )
    create_markdown_artifact(key="drift-summary", markdown=drift.summary_markdown(result))
    link = drift.report_link(settings.zone("reports"), key)
    if link is not None:
        create_link_artifact(key="drift-report", link=link)
    if result.detected:
        emit_event(**drift.detected_event(result))
    return result.to_dict() | {"day": str(day), "report": key}


def skipped(day: date | None, reason: str) -> dict[str, Any]:
    """No check: the run ends in the state "Skipped" with the reason (also an artifact)."""
    create_markdown_artifact(key="drift-summary", markdown=f"**Not checked**: {reason}")
    result = {"day": str(day) if day else None, "detected": False, "status": "skipped"}
    return decided(result | {"reason": reason}, name=SKIPPED, message=reason)


def no_data(lake: Lake, day: date, inputs: drift.DriftInputs) -> dict[str, Any]:
    """A window without feature rows: a "no data" report and artifact, no drift event; the run
    ends in the state "NoData"."""
    result, html = drift.no_data_check(inputs)
    message = drift.no_data_message(inputs)
    key = drift.write_check(lake.reports, day, result, html)
    create_markdown_artifact(key="drift-summary", markdown=drift.summary_markdown(result, message))
    # no "window" key: what was (not) compared is in the report and the reason
    out = {
        "day": str(day),
        "detected": False,
        "status": result.status,
        "model": result.model,
        "model_version": result.model_version,
        "reason": message,
        "report": key,
    }
    return decided(out, name=NO_DATA, message=message)
