"""Features: validated/ → feature table in the lake → Feast registry → online store."""

from __future__ import annotations

from datetime import date
from functools import partial

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from flows.runners import partitions, run_partitions
from flows.shared import announce, loop_state, show, sweep
from tasks import feature_store as feast_glue
from tasks import features as stage
from tasks import policy, training
from tasks.context import RunContext


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
apply_repo = task(name="apply-feature-repo", cache_policy=NO_CACHE, retries=1)(
    feast_glue.apply_repo
)
materialize = task(name="materialize", cache_policy=NO_CACHE, retries=1)(feast_glue.materialize)


@flow(
    name="features",
    description="Build the daily feature table from validated data, register the Feast "
    "definitions and materialise the newest features into the online store.",
)
def features_flow(params: FeaturesParams = FeaturesParams()) -> stage.FeaturesSummary:
    ctx = RunContext.load()
    sweep(ctx.lake.root)  # temporary files of writers killed mid-write
    built = stage.build_features(
        ctx.lake,
        ctx.usecase,
        dates=params.dates,
        force=params.force,
        parts=partitions(ctx.settings),
        plan=plan_features,
        compute=partial(run_partitions, ctx.settings, compute_features),
        write=write_feature_days,
        finish=finish_features,
    )
    store = apply_repo(ctx.settings)
    loaded = stage.refresh_online(
        store, ctx.lake, ctx.usecase, built, enabled=params.materialize, materialize=materialize
    )
    summary = stage.flow_summary(
        ctx.lake, ctx.usecase.feature_table, built, loaded, project=ctx.settings.feast_project
    )
    show(stage.summary_artifact(summary))
    announce(stage.summary_events(summary, project=ctx.settings.feast_project))

    # new data (usage or labels) may make a training run due: ask the retraining policy
    check = policy.training_check(
        ctx.lake,
        ctx.usecase,
        training.latest_day(ctx.lake, ctx.usecase),
        tracking_uri=ctx.settings.tracking_uri,
        state_of=loop_state,
    )
    if check is not None:
        summary["training"] = check.to_dict()
        announce([check.event])
    return summary
