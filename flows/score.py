"""Score: the champion scores the entities active on a day (point-in-time Feast features)."""

from __future__ import annotations

from datetime import date

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from pydantic import BaseModel, ConfigDict, Field

from flows.outcomes import SKIPPED, decided
from flows.shared import feature_store
from tasks import score, training
from tasks.context import RunContext


class ScoreParams(BaseModel):
    """Which day to score. The default scores the newest validated day with the champion."""

    model_config = ConfigDict(extra="forbid")

    day: date | None = Field(default=None, description="Day to score (YYYY-MM-DD). Empty: newest.")
    shadow_versions: list[str] = Field(
        default_factory=list,
        description="Also score with these registered versions, written as shadow predictions.",
    )


score_day = task(name="score-day", cache_policy=NO_CACHE, retries=1)(score.score_day)


@flow(name="score", description="Batch-score the entities active on a day with the champion model.")
def score_flow(params: ScoreParams = ScoreParams()) -> score.ScoreOutcome:
    ctx = RunContext.load()
    settings, usecase, lake, name = ctx.settings, ctx.usecase, ctx.lake, ctx.model_name
    day = params.day or training.latest_day(lake, usecase)
    if day is None:
        return skipped(score.nothing_validated(), name)

    store = feature_store(settings)
    champion = score_day(settings, usecase, lake, store, day)
    if isinstance(champion, score.Skipped):
        return skipped(champion, name)
    for version in params.shadow_versions:
        score_day(settings, usecase, lake, store, day, version=version, role=f"shadow-v{version}")

    create_table_artifact(
        key="predictions-summary",
        table=[champion.summary_row(day, usecase.prediction_column)],
        description=f"{name}: predictions for {day}",
    )
    emit_event(
        **score.written_event(
            name,
            day,
            "champion",
            champion.scores,
            champion.key,
            prediction=usecase.prediction_column,
        )
    )
    return champion.to_dict(day)


def skipped(skip: score.Skipped, model_name: str) -> score.ScoreOutcome:
    """The run ends in the state "Skipped" with the reason; the reason is also an artifact."""
    create_markdown_artifact(
        key="score-skipped",
        markdown=skip.markdown(model_name),
        description="why nothing was scored",
    )
    return decided(skip.to_dict(), name=SKIPPED, message=skip.message)
