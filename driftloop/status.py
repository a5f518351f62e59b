"""``driftloop status``: what the loop is doing and why, gathered from the registry, the lake and
the Prefect API (the stack's, or ``PREFECT_API_URL``, or the local API server the CLI commands
share: it is read, never started here).

It answers "why is nothing happening?": the work the lake says is pending (what
``driftloop reconcile`` would start), the runs of the last day (the failed and crashed ones
apart), automation actions that failed (e.g. an event whose run could not be created), and the
retraining policy's current verdict with the loop state it is based on, its last decisions (why it
trained, deferred, backed off or ignored a duplicate request) and the current back-off. The
Prefect API is asked with a few concurrent requests, whatever the number of deployments or runs.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from driftloop_config.settings import Settings
    from driftloop_config.usecase import UseCase
    from tasks.loop_state import LoopState

#: run states that wait to run (the state type; AwaitingConcurrencySlot and Late are SCHEDULED)
PENDING_STATES = ("SCHEDULED", "PENDING", "PAUSED")
PROBLEM_STATES = ("FAILED", "CRASHED")
#: what the Prefect server emits when an automation's action (e.g. run-deployment) fails
ACTION_FAILED_EVENTS = (
    "prefect.automation.action.failed",
    "prefect-cloud.automation.action.failed",
)
WINDOW = timedelta(days=1)
RUN_LIMIT = 200  # runs of the last day read at most (the count says when there were more)
LAST_RUNS = 10  # runs shown in the table
LAST_DECISIONS = 8  # retraining-policy decisions shown


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


def champion_over_rest(server: str, name: str, *, timeout: float = 5.0) -> str | None:
    """The version the ``champion`` alias points to, asked from an MLflow server's REST API (one
    request, without importing MLflow); None when the model or the alias does not exist."""
    import httpx

    r = httpx.get(
        f"{server.rstrip('/')}/api/2.0/mlflow/registered-models/alias",
        params={"name": name, "alias": "champion"},
        timeout=timeout,
    )
    if r.status_code == 404:
        return None
    if r.status_code == 400:
        error = r.json()
        if error.get("error_code") == "INVALID_PARAMETER_VALUE" and "not found" in str(
            error.get("message", "")
        ):
            return None
    r.raise_for_status()
    return str(r.json()["model_version"]["version"])


def champion_version(settings: Settings, name: str, mlflow_server: str | None) -> str | None:
    """The champion's version: from the MLflow server when there is one (the stack's, or an
    http(s) tracking URI), else through the registry module (imports MLflow: seconds)."""
    server = mlflow_server
    if server is None and settings.tracking_uri.startswith(("http://", "https://")):
        server = settings.tracking_uri
    if server is not None:
        try:
            return champion_over_rest(server, name)
        except Exception:  # e.g. the stack's MLflow server is down: ask the store itself
            pass
    from tasks import registry

    return registry.champion_version(settings.tracking_uri, name)


def _when(value: str | None) -> str | None:
    if not value:
        return None
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


async def _api_requests(api_url: str, now: datetime, timeout: float) -> list[Any]:
    import asyncio

    from driftloop import api

    since = (now - WINDOW).isoformat()
    soon = (now + timedelta(minutes=2)).isoformat()
    async with api.async_client(api_url, timeout=timeout) as http:
        answers = await asyncio.gather(
            # the runs of the last day, and those due now (not tomorrow's cron runs)
            http.post(
                "/flow_runs/filter",
                json={
                    "flow_runs": {"expected_start_time": {"after_": since, "before_": soon}},
                    "sort": "EXPECTED_START_TIME_DESC",
                    "limit": RUN_LIMIT,
                },
            ),
            http.post("/flows/filter", json={"limit": 200}),
            http.post("/deployments/filter", json={"limit": 200}),
            http.post(
                "/events/filter",
                json={
                    "filter": {
                        "event": {"name": list(ACTION_FAILED_EVENTS)},
                        "occurred": {"since": since, "until": now.isoformat()},
                        "order": "DESC",
                    },
                    "limit": 50,
                },
            ),
        )
    for answer in answers:
        answer.raise_for_status()
    return [a.json() for a in answers]


def api_overview(
    api_url: str, *, now: datetime | None = None, timeout: float = 10.0
) -> dict[str, Any]:
    """Runs of the last day and failed automation actions, from four concurrent requests."""
    import asyncio

    now = now or datetime.now(tz=UTC)
    raw_runs, raw_flows, raw_deployments, raw_events = asyncio.run(
        _api_requests(api_url, now, timeout)
    )
    flows = {f["id"]: f["name"] for f in raw_flows}
    deployments = {d["id"]: d["name"] for d in raw_deployments}
    runs = [
        {
            "flow": flows.get(r["flow_id"], r["flow_id"]),
            "deployment": deployments.get(r["deployment_id"]) if r["deployment_id"] else None,
            "state_type": r["state_type"] or "-",
            "state": r["state_name"] or (r["state"] or {}).get("name") or "-",
            "message": ((r["state"] or {}).get("message") or "").strip(),
            "start": _when(r["start_time"]),
            "expected": _when(r["expected_start_time"]),
            "name": r["name"],
        }
        for r in raw_runs
    ]
    started = sorted((r for r in runs if r["start"]), key=lambda r: r["start"], reverse=True)
    events = raw_events.get("events", [])
    return {
        "runs": started[:LAST_RUNS],
        "runs_last_day": len(runs),
        "runs_truncated": len(runs) >= RUN_LIMIT,
        "pending_runs": [r for r in runs if r["state_type"] in PENDING_STATES],
        "problem_runs": [r for r in runs if r["state_type"] in PROBLEM_STATES],
        "failed_actions": [
            {
                "occurred": _when(e["occurred"]),
                "automation": e["resource"].get("prefect.resource.name", ""),
                "reason": str(e.get("payload", {}).get("reason", "")),
            }
            for e in events
        ],
        "failed_actions_total": raw_events.get("total", len(events)),
    }


def policy_overview(state: LoopState, usecase: UseCase) -> dict[str, Any]:
    """The retraining policy's memory as plain values: its newest decisions (newest last), the
    current back-off and what it waits for, and the pending change's widened wait."""
    from tasks import policy

    model = usecase.loop().model
    attempt = state.last_attempt
    return {
        "decisions": [e.to_dict() for e in state.decisions[-LAST_DECISIONS:]],
        "decision_lines": [e.line() for e in state.decisions[-LAST_DECISIONS:]],
        "decisions_total": len(state.decisions),
        "backoff": policy.backoff_progress(state, usecase.retrain),
        "last_attempt": attempt.to_dict() if attempt else None,
        "drift_signals": list(state.drift_signals),
        "drift_attempts": state.drift_attempts,
        "post_change_days_wanted": policy.post_change_days_wanted(
            state, model=model, retrain=usecase.retrain
        )
        if state.drift_since
        else None,
    }


def collect(settings: Settings, *, settle_seconds: float = 60.0) -> dict[str, Any]:
    """Everything ``driftloop status`` shows, as plain values (see the module docstring)."""
    from driftloop.localapi import running_server
    from driftloop.stack import processes, read_stack
    from driftloop_config.redact import redact
    from driftloop_config.usecase import load_usecase
    from tasks import reconcile
    from tasks.storage import Lake

    usecase = load_usecase(settings.usecase)
    lake = Lake.from_settings(settings)
    stack = read_stack(settings)
    champion = None
    has_champion = False
    if usecase.model is not None:
        name = usecase.model.registered_name
        try:
            version = champion_version(settings, name, stack.mlflow_url if stack else None)
        except Exception as exc:  # an unreachable registry: say so, show the rest
            champion = redact(f"{name}: registry not readable ({exc})")
        else:
            champion = f"{name} v{version}" if version else f"{name}: none yet"
            has_champion = version is not None
    alive = sum(ok for _, ok in processes(settings))
    local = running_server(settings)
    api_url = (
        stack.api_url
        if stack
        else os.environ.get("PREFECT_API_URL") or (local.api_url if local else None)
    )
    now = datetime.now(tz=UTC)
    work = reconcile.find_work(
        lake, usecase, has_champion=has_champion, now=now, settle_seconds=settle_seconds
    )
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
        # the one the CLI commands share when there is no stack (driftloop.localapi)
        "local_api": f"{local.api_url} (pid {local.proc.pid})" if local else None,
        "last_drift": last_drift(settings),
        "pending": reconcile.work_summary(work),
        "policy": policy_overview(work.state, usecase) if work.state is not None else None,
        "next_action": [{"deployment": a.deployment, "reason": a.reason} for a in work.actions()],
        # every landed object without a ledger record
        "pending_objects": work.objects + work.recent,
        "api": None,
        "runs": None,
        "api_error": "PREFECT_API_URL is not set and the stack is not up",
    }
    if api_url:
        try:
            info["api"] = api_overview(api_url, now=now)
            info["runs"] = info["api"]["runs"]
            info["api_error"] = None
        except Exception as exc:
            info["api_error"] = redact(f"{api_url}: {exc}")
    return info
