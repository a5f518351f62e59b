"""prefect.yaml as Prefect reads it: the triggers take the events the project emits (a
watcher's batch, an S3 object, an ingest run's batch-validated event), duplicates are cancelled
instead of queued, and reconcile runs on its own schedule."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import yaml
from prefect.client.schemas.objects import ConcurrencyLimitStrategy
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from prefect.events.schemas.events import Resource, ResourceSpecification

from driftloop.settings import PROJECT_ROOT
from tasks.ingest import IngestOutcome
from tasks.reconcile import batch_validated_event
from tasks.storage import ObjectInfo
from tasks.watch import batch_event, landed_event

LANDING = "s3://lake/landing"
WHEN = datetime(2026, 1, 5, tzinfo=UTC)


def _deployments() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text("utf-8"))
    return {d["name"]: d for d in config["deployments"]}


def _trigger(deployment: str) -> DeploymentEventTrigger:
    [raw] = _deployments()[deployment]["triggers"]
    return DeploymentEventTrigger(**raw)


def _fires(trigger: DeploymentEventTrigger, event: dict[str, Any]) -> bool:
    match = trigger.match
    assert isinstance(match, ResourceSpecification)
    return event["event"] in trigger.expect and match.matches(Resource(event["resource"]))


def test_collision_strategies() -> None:
    strategies = {
        name: (d["concurrency_limit"]["limit"], d["concurrency_limit"]["collision_strategy"])
        for name, d in _deployments().items()
    }
    assert strategies == {
        "ingest": (1, "CANCEL_NEW"),
        "features": (1, "CANCEL_NEW"),
        "train": (1, "ENQUEUE"),
        "score": (1, "CANCEL_NEW"),
        "drift": (1, "ENQUEUE"),
        "reconcile": (1, "CANCEL_NEW"),
    }
    for _, strategy in strategies.values():
        ConcurrencyLimitStrategy(strategy)  # a value Prefect knows


def test_ingest_starts_on_a_watcher_batch_and_on_a_single_s3_object() -> None:
    trigger = _trigger("ingest")
    obj = ObjectInfo(key="usage/2026-01-05.csv", size=10, etag="e", modified=WHEN)
    assert _fires(trigger, batch_event([(obj, "usage"), (obj, "usage")], LANDING))
    assert _fires(trigger, landed_event(obj, LANDING, "usage"))
    # the run ingests everything pending (no object list), waits for files still arriving,
    # and records what started it
    assert trigger.parameters == {
        "params": {"settle_seconds": 5, "trigger": "{{ event.resource.name }}"}
    }


def test_features_start_once_per_ingest_run_with_validated_rows() -> None:
    trigger = _trigger("features")
    outcome = IngestOutcome(
        key="usage/2026-01-05.csv",
        sha256="s",
        etag="e",
        size=1,
        dataset="usage",
        status="validated",
        rows_valid=3,
        partitions=["2026-01-05"],
    )
    event = batch_validated_event([outcome], LANDING, rounds=1)
    assert event is not None and _fires(trigger, event)
    per_object = {"event": "driftloop.data.validated", "resource": {"prefect.resource.id": "x"}}
    assert not _fires(trigger, per_object)


def test_reconcile_runs_every_five_minutes_on_the_monitoring_pool() -> None:
    reconcile = _deployments()["reconcile"]
    assert reconcile["entrypoint"] == "flows/reconcile.py:reconcile_flow"
    assert reconcile["work_pool"] == {"name": "monitoring-pool"}
    assert reconcile["schedules"] == [{"interval": 300}]
