"""The deployed loop on a real local stack: Prefect server + one worker per pool + the landing
watcher (``driftloop up``), prefect.yaml deployed as shipped, driven only by events and the REST
API the UI uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from driftloop import api
from driftloop.stack import EVENT_FLUSH_SECONDS, FLOW_RUN_COMMAND, POOLS, read_stack
from tasks import registry
from tasks.ingest import open_ledger
from tasks.loop_state import read_state
from tests.support.procs import cmdline, descendants
from tests.support.stack import LocalStack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture(scope="module")
def loop(local_stack: LocalStack) -> LocalStack:
    return local_stack


def _done(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if r["state_type"] in FINAL]


def test_up_creates_a_pool_a_worker_and_a_deployment_per_flow(loop: LocalStack) -> None:
    pools = loop.http.post("/work_pools/filter", json={}).json()
    assert {p["name"]: p["type"] for p in pools if p["name"] in POOLS.values()} == {
        p: "process" for p in POOLS.values()
    }
    # their flow runs start through the warm-start client (forked, or cold without a server)
    assert {
        p["name"]: p["base_job_template"]["variables"]["properties"]["command"]["default"]
        for p in pools
        if p["name"] in POOLS.values()
    } == {p: FLOW_RUN_COMMAND for p in POOLS.values()}
    for deployment, pool in POOLS.items():
        dep = loop.http.get(f"/deployments/{loop.deployment_id(deployment)}").json()
        assert dep["work_pool_name"] == pool
        # typed parameters: the UI renders a form from this schema
        assert dep["parameter_openapi_schema"]["properties"]["params"]
        workers = loop.http.post(f"/work_pools/{pool}/workers/filter", json={}).json()
        assert workers, f"no worker polls {pool}"
    recorded = read_stack(loop.settings)
    assert recorded is not None
    assert {p.name for p in recorded.processes} >= {"prefect-server", "mlflow", "landing-watcher"}
    # the server took the stack's settings: received events are written within half a second
    server = loop.http.get("/admin/settings").json()["server"]
    assert server["services"]["event_persister"]["flush_interval"] == EVENT_FLUSH_SECONDS
    assert loop.http.get(f"{loop.stack.mlflow_url}/health").status_code == 200
    # the MLflow server runs without a job runner beside it (the loop uses no MLflow jobs)
    [mlflow] = [p for p in recorded.processes if p.name == "mlflow"]
    below = [cmdline(pid) for pid in descendants(mlflow.pid)]
    assert below and all("mlflow" in cmd for cmd in below), below  # the server's own workers
    assert not [cmd for cmd in below if "_job_runner" in cmd or "huey" in cmd], below


def test_landed_files_run_ingest_features_train_and_promote_through_triggers(
    loop: LocalStack,
) -> None:
    name = "telco_churn"
    assert registry.champion_version(loop.settings.tracking_uri, name) is None
    landed = loop.land(loop.due_day)
    assert len(landed) == 2  # that day's usage and labels

    def ingested() -> list[dict[str, Any]] | None:
        ledger = open_ledger(loop.lake.ledger)
        if any(ledger.latest(k) is None for k in landed):
            return None
        return _done(loop.runs("ingest")) or None

    runs = loop.wait_for("the landed files ingested", ingested)
    # one watcher scan → one landed event → one ingest run for both files (were they split
    # over two scans, the second run is cancelled while the first is active, or finds nothing)
    assert {r["state_type"] for r in runs} <= {"COMPLETED", "CANCELLED"}, runs
    triggers = [
        r["parameters"]["params"]["trigger"] for r in runs if r["state_type"] == "COMPLETED"
    ]
    assert triggers[0] in {f"{landed[0]} (+1 more)", f"{landed[1]} (+1 more)", *landed}

    def trained() -> list[dict[str, Any]] | None:
        return _done(loop.runs("train")) or None

    [train] = loop.wait_for("a train run started by driftloop.training.due", trained)
    assert train["state_type"] == "COMPLETED", train["state"]
    assert train["parameters"]["params"]["reason"] == "new-labels"
    assert train["parameters"]["params"]["as_of"] == loop.due_day.isoformat()
    features_runs = _done(loop.runs("features"))
    assert features_runs and {r["state_type"] for r in features_runs} == {"COMPLETED"}
    # started once, by the ingest run's batch-validated event
    assert {r["parameters"]["params"]["trigger"][:7] for r in features_runs} == {"ingest "}
    champion = registry.champion_version(loop.settings.tracking_uri, name)
    assert champion is not None, "the first challenger was not promoted"
    # the materialised event also started a score run
    scored = loop.wait_for("a score run", lambda: _done(loop.runs("score")) or None, timeout=180)
    assert scored[0]["state_type"] == "COMPLETED"


def test_a_drift_event_starts_a_training_run_that_records_the_change(loop: LocalStack) -> None:
    before = len(loop.runs("train"))
    change = loop.due_day.isoformat()
    r = loop.http.post(
        "/events",
        json=[
            {
                "id": "6b1d4a4c-1f7e-4d52-9d2b-3f0c5e6a7b8c",
                "occurred": f"{change}T12:00:00Z",
                "event": "driftloop.drift.detected",
                "resource": {"prefect.resource.id": "driftloop.model.telco_churn"},
                "payload": {"window": [change, change], "drifted": ["minutes_mean_7d"]},
            }
        ],
    )
    assert r.status_code < 300, r.text

    def drift_run() -> dict[str, Any] | None:
        runs = _done(loop.runs("train"))
        return runs[-1] if len(runs) > before else None

    run = loop.wait_for("a train run started by the drift event", drift_run)
    assert run["state_type"] == "COMPLETED", run["state"]
    assert run["parameters"]["params"] == {
        "reason": "drift",
        "as_of": change,  # the checked window's last day
        "drift_start": change,
        "signals": None,  # an event without signals: the flow reads it as input drift
        "severity": None,
    }
    # not enough labels after the change yet: the run recorded it and deferred training
    assert read_state(loop.lake.ledger).drift_since is not None


def test_a_quick_run_through_the_rest_api_uses_the_defaults(loop: LocalStack) -> None:
    before = len(loop.runs("drift"))
    # what the UI's "Quick run" sends: no parameters, the deployment's defaults
    r = loop.http.post(f"/deployments/{loop.deployment_id('drift')}/create_flow_run", json={})
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]

    def finished() -> dict[str, Any] | None:
        run: dict[str, Any] = loop.http.get(f"/flow_runs/{run_id}").json()
        return run if run["state_type"] in FINAL else None

    run = loop.wait_for("the quick run", finished, timeout=180)
    assert run["state_type"] == "COMPLETED", run["state"]
    assert len(loop.runs("drift")) == before + 1
    results = [i.key for i in loop.lake.reports.list("drift/") if i.key.endswith(".json")]
    assert results, "the drift run wrote no result"
    assert json.loads(loop.lake.reports.read_bytes(results[-1]))["model_version"]


def test_bad_parameters_are_refused_with_a_clear_message(loop: LocalStack) -> None:
    r = loop.http.post(
        f"/deployments/{loop.deployment_id('train')}/create_flow_run",
        json={"parameters": {"params": {"reason": "because"}}},
    )
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert "params.reason" in detail and "'because' is not one of" in detail
    r = loop.http.post(
        f"/deployments/{loop.deployment_id('train')}/create_flow_run",
        json={"parameters": {"params": {"seed": -1}}},
    )
    assert r.status_code == 409 and "params.seed" in r.json()["detail"], r.text


def test_status_shows_champion_runs_and_pending(loop: LocalStack) -> None:
    from driftloop.status import collect

    info = collect(loop.settings)
    assert info["champion"].startswith("telco_churn v")
    assert info["runs"] and info["api_error"] is None
    assert {r["flow"] for r in info["runs"]} >= {"train"}
    assert info["stack"] and "processes running" in info["stack"]


def test_every_flow_run_of_the_stack_was_forked_warm(loop: LocalStack) -> None:
    """Runs after the chain above: each finished run of ingest, features and train was forked by
    the warm-start server (which logs the run's id and exit status), none started cold."""
    recorded = read_stack(loop.settings)
    assert recorded is not None
    [warm] = [p for p in recorded.processes if p.name == "warmstart"]
    served = Path(warm.log).read_text()
    assert "modules preloaded" in served and "could not preload" not in served
    ran = {d: _done(loop.runs(d)) for d in ("ingest", "features", "train")}
    assert all(ran.values()), {d: len(runs) for d, runs in ran.items()}
    for run in [r for runs in ran.values() for r in runs]:
        assert f"warmstart: run {run['id']} started as " in served, run["name"]
    workers = [Path(p.log).read_text() for p in recorded.processes if p.name.startswith("worker-")]
    assert not [log for log in workers if "warmstart: cold start" in log]


def test_the_watcher_announces_each_object_once(loop: LocalStack) -> None:
    from driftloop.stack import WORKER_QUERY_SECONDS, stack_env

    with api.client(loop.stack.api_url) as http:
        events = http.post(
            "/events/filter",
            json={"filter": {"event": {"name": ["driftloop.data.landed"]}}, "limit": 50},
        ).json()["events"]
    assert events, "no landed event reached the API"
    keys = [o["key"] for e in events for o in e["payload"]["objects"]]
    assert sorted(keys) == sorted(set(keys)), "an object was announced twice"
    # one event per watcher scan, never one per object: the due day's two files came together
    assert all(e["payload"]["count"] == len(e["payload"]["objects"]) for e in events)
    assert stack_env(loop.settings, loop.stack.api_url)["PREFECT_WORKER_QUERY_SECONDS"] == str(
        WORKER_QUERY_SECONDS
    )
