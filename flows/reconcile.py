"""Reconcile: start the runs the lake says are missing (a lost event, a crashed submission, a
run cancelled because another one was active). Runs every few minutes (prefect.yaml) and from
``driftloop reconcile``; see tasks/reconcile.py for what is compared."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from pydantic import BaseModel, ConfigDict, Field

from tasks import reconcile as stage
from tasks.context import RunContext


class ReconcileParams(BaseModel):
    """How to reconcile. The defaults start what is missing and leave fresh arrivals to their
    events."""

    model_config = ConfigDict(extra="forbid")

    settle_seconds: float = Field(
        default=60.0,
        ge=0.0,
        le=86400.0,
        description="Landed objects that changed more recently than this are left to the "
        "landing watcher's event (they are not counted as lost yet).",
    )
    dry_run: bool = Field(default=False, description="Only report what is missing; start no runs.")


find_work = task(name="find-work", cache_policy=NO_CACHE, retries=1)(stage.find_work)
has_champion = task(name="champion", cache_policy=NO_CACHE, retries=1)(stage.has_champion)


@flow(
    name="reconcile",
    description="Compare the lake's pending work with the runs on their way and start the "
    "missing ingest, features or train run.",
)
def reconcile_flow(params: ReconcileParams = ReconcileParams()) -> stage.Reconciled:
    ctx = RunContext.load()
    now = datetime.now(tz=UTC)
    work = find_work(
        ctx.lake,
        ctx.usecase,
        has_champion=has_champion(ctx.settings.tracking_uri, ctx.usecase),
        now=now,
        settle_seconds=params.settle_seconds,
    )
    wanted = work.actions()
    with get_client(sync_client=True) as client:
        deployments = stage.chain_deployments(client)
        active = stage.active_deployments(stage.active_runs(client, deployments), now)
        todo = stage.to_start(wanted, active)
        started = stage.start_runs(client, deployments, todo, dry_run=params.dry_run)
    if wanted:
        create_table_artifact(
            key="reconcile",
            table=stage.action_rows(wanted, active, started),
            description="Work the lake says is missing",
        )
    return stage.summary(work, wanted, active, started, deployments)
