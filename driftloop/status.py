"""``driftloop status``: what the loop is doing, gathered from the registry, the lake and the
Prefect API (the stack's, or ``PREFECT_API_URL``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from driftloop.settings import Settings

PENDING_STATES = ["SCHEDULED", "PENDING", "PAUSED"]


def last_drift(settings: Settings) -> dict[str, Any] | None:
    """The newest drift check result written to reports/drift/ (None before the first)."""
    from tasks.storage import Lake, read_json

    reports = Lake.from_settings(settings).reports
    results = [i for i in reports.list("drift/") if i.key.endswith(".json")]
    if not results:
        return None
    newest = max(results, key=lambda i: (i.modified, i.key))
    result: dict[str, Any] = read_json(reports, newest.key)
    return result


def flow_runs(api_url: str, limit: int = 10) -> tuple[list[dict[str, Any]], int]:
    """The last ``limit`` flow runs and the number waiting to run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(is_null_=False)),
            sort=FlowRunSort.START_TIME_DESC,
            limit=limit,
        )
        pending = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType(s) for s in PENDING_STATES])
                )
            ),
            limit=200,
        )
        flows = {f.id: f.name for f in client.read_flows(limit=200)}
        deployments = {d.id: d.name for d in client.read_deployments(limit=200)}
    rows = [
        {
            "flow": flows.get(r.flow_id, str(r.flow_id)),
            "deployment": deployments.get(r.deployment_id) if r.deployment_id else None,
            "state": r.state.name if r.state else "-",
            "start": r.start_time.strftime("%Y-%m-%d %H:%M:%S") if r.start_time else None,
            "name": r.name,
        }
        for r in runs
    ]
    return rows, len(pending)


def collect(settings: Settings) -> dict[str, Any]:
    from driftloop.redact import redact
    from driftloop.stack import processes, read_stack
    from driftloop.usecase import load_usecase
    from tasks import registry
    from tasks.ingest import find_pending, open_ledger
    from tasks.storage import Lake

    usecase = load_usecase(settings.usecase)
    lake = Lake.from_settings(settings)
    champion = None
    if usecase.model is not None:
        name = usecase.model.registered_name
        try:
            version = registry.champion_version(settings.tracking_uri, name)
        except Exception as exc:  # an unreachable registry: say so, show the rest
            champion = redact(f"{name}: registry not readable ({exc})")
        else:
            champion = f"{name} v{version}" if version else f"{name}: none yet"
    stack = read_stack(settings)
    alive = sum(ok for _, ok in processes(settings))
    api_url = stack.api_url if stack else os.environ.get("PREFECT_API_URL")
    info: dict[str, Any] = {
        "champion": champion,
        # where things are, passwords masked
        "backends": {
            "data_root": redact(settings.data_root),
            "mlflow_tracking_uri": redact(settings.tracking_uri),
            "prefect_database_url": redact(settings.prefect_database_url)
            if settings.prefect_database_url
            else None,
            "online_store": settings.online_store
            + (f" ({redact(settings.redis_url)})" if settings.online_store == "redis" else ""),
        },
        "stack": (
            f"{stack.prefect_url} (Prefect), {stack.mlflow_url} (MLflow); "
            f"{alive}/{len(stack.processes)} processes running"
            if stack
            else None
        ),
        "last_drift": last_drift(settings),
        "pending_objects": [o.key for o in find_pending(lake.landing, open_ledger(lake.ledger))],
        "runs": None,
        "pending_runs": None,
        "api_error": "PREFECT_API_URL is not set and the stack is not up",
    }
    if api_url:
        try:
            info["runs"], info["pending_runs"] = flow_runs(api_url)
            info["api_error"] = None
        except Exception as exc:
            info["api_error"] = redact(f"{api_url}: {exc}")
    return info
