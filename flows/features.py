"""Features: validated/ → feature table in the lake → Feast registry → online store."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from pydantic import BaseModel, ConfigDict, Field

from driftloop_config.settings import export_artifact_endpoint, load_settings
from driftloop_config.usecase import load_usecase
from flows.runners import partitions, run_partitions
from tasks import features as stage
from tasks import policy, training
from tasks.storage import Lake, sweep_debris


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


def _range_run_name() -> str:
    from prefect.runtime import task_run

    days = task_run.parameters["days"]
    return f"features {days[0]}..{days[-1]}"


plan_features = task(name="plan-features", cache_policy=NO_CACHE, retries=1)(stage.plan_features)
# pure per-range work: runs on the settings' task runner (threads or Dask workers)
compute_features = task(
    name="compute-features",
    cache_policy=NO_CACHE,
    retries=1,
    task_run_name=_range_run_name,
)(stage.compute_features)
# the writes (feature files, then the manifest): in the flow's process only
write_feature_days = task(name="write-feature-days", cache_policy=NO_CACHE, retries=1)(
    stage.write_feature_days
)
finish_features = task(name="finish-features", cache_policy=NO_CACHE, retries=1)(
    stage.finish_features
)
apply_repo = task(name="apply-feature-repo", cache_policy=NO_CACHE, retries=1)(stage.apply_repo)
materialize = task(name="materialize", cache_policy=NO_CACHE, retries=1)(stage.materialize)
loop_state = task(name="loop-state", cache_policy=NO_CACHE, retries=1)(policy.current_state)


sweep = task(name="sweep-debris", cache_policy=NO_CACHE)(sweep_debris)


@flow(
    name="features",
    description="Build the daily feature table from validated data, register the Feast "
    "definitions and materialise the newest features into the online store.",
)
def features_flow(params: FeaturesParams = FeaturesParams()) -> dict[str, Any]:
    settings = load_settings()
    export_artifact_endpoint(settings)  # MLflow's own S3 client: the same endpoint
    lake = Lake.from_settings(settings)
    usecase = load_usecase(settings.usecase)

    sweep(lake.root)  # temporary files of writers killed mid-write
    built: list[date] = []
    for table in usecase.feature_tables:  # the main table, then the contexts'
        plan = plan_features(lake, usecase, dates=params.dates, force=params.force, table=table)
        ranges = stage.date_ranges(plan.todo, plan.lookback_days, parts=partitions(settings))
        computed = run_partitions(
            settings,
            compute_features,
            [
                {
                    "lake": lake,
                    "usecase": usecase,
                    "days": days,
                    "partitions": plan.inputs(days),
                    "table": table,
                }
                for days in ranges
            ],
        )
        rows: dict[date, int] = {}
        for days, frames in zip(ranges, computed, strict=True):
            rows |= write_feature_days(lake, plan.table, days, frames)
        built = sorted({*built, *finish_features(lake, plan, rows)})
    store = apply_repo(settings)
    main = usecase.feature_table
    end = stage.latest_feature_timestamp(lake, main)
    loaded: dict[str, Any] = {}
    if params.materialize and end is not None:
        since = stage.day_start(min(built)) + timedelta(days=1) if built else None
        loaded = materialize(store, end, since=since)

    summary = stage.flow_summary(lake, main, built, loaded, project=settings.feast_project)
    if built or loaded:
        create_table_artifact(
            key="features-summary",
            table=summary["table"],
            description=f"Features: {summary['totals']}",
        )
        emit_event(**stage.materialized_event(summary, project=settings.feast_project))

    # new data (usage or labels) may make a training run due: ask the retraining policy
    day = training.latest_day(lake, usecase)
    check = policy.training_check(
        lake, usecase, day, tracking_uri=settings.tracking_uri, state_of=loop_state
    )
    if check is not None:
        summary["training"] = check.to_dict()
        if check.event is not None:
            emit_event(**check.event)
    return summary
