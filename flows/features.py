"""Features: validated/ → feature table in the lake → Feast registry → online store."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from pydantic import BaseModel, ConfigDict, Field

from driftloop.settings import export_artifact_endpoint, load_settings
from driftloop.usecase import load_usecase
from tasks import features as stage
from tasks import policy, registry, training
from tasks.storage import Lake


class FeaturesParams(BaseModel):
    """What to build. The defaults rebuild every day whose validated inputs changed."""

    model_config = ConfigDict(extra="forbid")

    dates: list[date] | None = Field(
        default=None,
        description="Only these feature days (YYYY-MM-DD). Empty: every day with validated "
        "usage, skipping the days whose inputs are unchanged.",
    )
    force: bool = Field(
        default=False,
        description="Rebuild the selected days even when their inputs are unchanged.",
    )
    materialize: bool = Field(
        default=True,
        description="Load the newest features into the online store after the build.",
    )
    trigger: str | None = Field(
        default=None,
        max_length=1024,
        description="What started this run (the validated object, set by its event); recorded "
        "on the run, it does not narrow the build.",
    )


build_features = task(name="build-features", cache_policy=NO_CACHE, retries=1)(stage.build_features)
apply_repo = task(name="apply-feature-repo", cache_policy=NO_CACHE, retries=1)(stage.apply_repo)
materialize = task(name="materialize", cache_policy=NO_CACHE, retries=1)(stage.materialize)
loop_state = task(name="loop-state", cache_policy=NO_CACHE, retries=1)(policy.current_state)


@flow(
    name="features",
    description="Build the daily feature table from validated data, register the Feast "
    "definitions and materialise the newest features into the online store.",
)
def features_flow(params: FeaturesParams | None = None) -> dict[str, Any]:
    params = params or FeaturesParams()
    settings = load_settings()
    export_artifact_endpoint(settings)  # MLflow's own S3 client: the same endpoint
    lake = Lake.from_settings(settings)
    usecase = load_usecase(settings.usecase)

    built = build_features(lake, usecase, dates=params.dates, force=params.force)
    store = apply_repo(settings)
    end = stage.latest_feature_timestamp(lake)
    loaded: dict[str, Any] = {}
    if params.materialize and end is not None:
        since = stage.day_start(min(built)) + timedelta(days=1) if built else None
        loaded = materialize(store, end, since=since)

    summary = stage.flow_summary(lake, built, loaded, project=settings.feast_project)
    if built or loaded:
        create_table_artifact(
            key="features-summary",
            table=summary["table"],
            description=f"Features: {summary['totals']}",
        )
        emit_event(**stage.materialized_event(summary, project=settings.feast_project))

    # new data (usage or labels) may make a training run due: ask the retraining policy
    day = training.latest_day(lake, usecase)
    if usecase.model is not None and usecase.target is not None and day is not None:
        name = usecase.model.registered_name
        has_champion = registry.champion_version(settings.tracking_uri, name) is not None
        state = loop_state(lake, usecase, has_champion=has_champion)
        due = policy.should_train(
            day, state, target=usecase.target, model=usecase.model, retrain=usecase.retrain
        )
        summary["training"] = {"due": due.train, "reason": due.reason}
        if due.train:
            emit_event(**policy.training_due_event(name, day, due))
    return summary
