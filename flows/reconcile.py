"""Reconcile: start the runs the lake says are missing (a lost event, a crashed submission, a
run cancelled because another one was active). Runs every few minutes (prefect.yaml) and from
``driftloop reconcile``; see tasks/reconcile.py for what is compared."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from pydantic import BaseModel, ConfigDict, Field

from driftloop_config.settings import load_settings
from driftloop_config.usecase import load_usecase
from tasks import reconcile as stage
from tasks import registry
from tasks.storage import Lake


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
champion_version = task(name="champion", cache_policy=NO_CACHE, retries=1)(
    registry.champion_version
)


@flow(
    name="reconcile",
    description="Compare the lake's pending work with the runs on their way and start the "
    "missing ingest, features or train run.",
)
def reconcile_flow(params: ReconcileParams = ReconcileParams()) -> dict[str, Any]:
    settings = load_settings()
    lake = Lake.from_settings(settings)
    usecase = load_usecase(settings.usecase)
    now = datetime.now(tz=UTC)

    has_champion = usecase.model is not None and (
        champion_version(settings.tracking_uri, usecase.model.registered_name) is not None
    )
    work = find_work(
        lake, usecase, has_champion=has_champion, now=now, settle_seconds=params.settle_seconds
    )
    wanted = work.actions()
    with get_client(sync_client=True) as client:
        deployments = stage.chain_deployments(client)
        active = stage.active_deployments(stage.active_runs(client, deployments), now)
        todo = stage.to_start(wanted, active)
        started = [] if params.dry_run else stage.start_runs(client, deployments, todo)
    out = stage.summary(work, wanted, active, started, deployments)
    if wanted:
        create_table_artifact(
            key="reconcile",
            table=[
                {
                    "deployment": a.deployment,
                    "reason": a.reason,
                    "done": next(
                        (
                            f"started {s.flow_run_name}"
                            for s in started
                            if s.deployment == a.deployment
                        ),
                        "already on its way" if a.deployment in active else "not started",
                    ),
                }
                for a in wanted
            ],
            description="Work the lake says is missing",
        )
    return out
