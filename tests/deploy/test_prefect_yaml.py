"""prefect.yaml as Prefect reads it: the triggers take the events the project emits (a
watcher's batch, an S3 object, an ingest run's batch-validated event), duplicates are cancelled
instead of queued, and reconcile runs on its own schedule."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from prefect.client.schemas.objects import ConcurrencyLimitStrategy
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

from driftloop.triggers import deployments, render
from driftloop.triggers import fires as _fires
from driftloop_config.settings import PROJECT_ROOT
from tasks.drain import batch_validated_event
from tasks.ingest import IngestOutcome
from tasks.storage import ObjectInfo
from tasks.watch import batch_event, landed_event

LANDING = "s3://lake/landing"
WHEN = datetime(2026, 1, 5, tzinfo=UTC)


def _rendered(trigger: DeploymentEventTrigger, event: dict[str, Any]) -> dict[str, Any]:
    return render(trigger, event, when=WHEN)


def _deployments() -> dict[str, dict[str, Any]]:
    return deployments(PROJECT_ROOT / "prefect.yaml")


def _trigger(deployment: str) -> DeploymentEventTrigger:
    [raw] = _deployments()[deployment]["triggers"]
    return DeploymentEventTrigger(**raw)


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


# ---- the train deployment's triggers, rendered as the Prefect server renders them ---------------


def _train_triggers() -> dict[str, DeploymentEventTrigger]:
    raw = _deployments()["train"]["triggers"]
    return {t["expect"][0]: DeploymentEventTrigger(**t) for t in raw}


def _accepted(parameters: dict[str, Any]) -> None:
    """The check the server runs before creating the flow run (deployments enforce their
    parameter schema): raises when the rendered parameters do not fit the train flow's."""
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools.validation import validate

    from flows.train import train_flow

    schema = parameter_schema(train_flow.fn).model_dump_for_openapi()
    validate(parameters, schema, raise_on_error=True)


def _drift_event(**payload: Any) -> dict[str, Any]:
    return {
        "event": "driftloop.drift.detected",
        "resource": {"prefect.resource.id": "driftloop.model.telco_churn"},
        "payload": {"window": ["2026-02-01", "2026-02-03"], "model_version": "3", **payload},
    }


def test_the_drift_trigger_renders_the_signals_as_a_list() -> None:
    from flows.train import TrainParams

    trigger = _train_triggers()["driftloop.drift.detected"]
    event = _drift_event(signals=["input-drift", "realised-drop"], severity="severe")
    assert _fires(trigger, event)
    rendered = _rendered(trigger, event)
    assert rendered == {
        "params": {
            "reason": "drift",
            "as_of": "2026-02-03",
            "drift_start": "2026-02-01",
            "signals": ["input-drift", "realised-drop"],
            "severity": "severe",
        }
    }
    _accepted(rendered)
    params = TrainParams(**rendered["params"])
    assert params.signals == ["input-drift", "realised-drop"] and params.severity == "severe"
    assert str(params.drift_start) == "2026-02-01"


def test_a_drift_event_without_signals_renders_nulls_the_flow_reads_as_input_drift() -> None:
    from driftloop_config.usecase import RetrainSpec
    from flows.train import TrainParams
    from tasks.policy import enabled_signals

    trigger = _train_triggers()["driftloop.drift.detected"]
    rendered = _rendered(trigger, _drift_event())  # an event sent before signals existed
    assert rendered["params"]["signals"] is None and rendered["params"]["severity"] is None
    _accepted(rendered)
    params = TrainParams(**rendered["params"])
    # as the train flow hands them on
    signals = params.signals
    assert enabled_signals(signals, RetrainSpec()) == ["input-drift"]
    assert enabled_signals(signals, RetrainSpec(on_drift=False)) == []


def test_the_training_due_trigger_renders_reason_and_as_of() -> None:
    from datetime import date

    from flows.train import TrainParams
    from tasks.policy import TrainDecision, training_due_event

    trigger = _train_triggers()["driftloop.training.due"]
    event = training_due_event("telco_churn", date(2026, 2, 3), TrainDecision(True, "new-labels"))
    assert _fires(trigger, event)
    rendered = _rendered(trigger, event)
    assert rendered == {"params": {"reason": "new-labels", "as_of": "2026-02-03"}}
    _accepted(rendered)
    assert TrainParams(**rendered["params"]).as_of == date(2026, 2, 3)


def test_the_server_refuses_a_signal_the_flow_does_not_know() -> None:
    """The check of ``_accepted`` can fail: an unknown signal is refused before any run."""
    from prefect.utilities.schema_tools.validation import ValidationError

    trigger = _train_triggers()["driftloop.drift.detected"]
    rendered = _rendered(trigger, _drift_event(signals=["moon-phase"]))
    assert rendered["params"]["signals"] == ["moon-phase"]
    with pytest.raises(ValidationError, match="signals"):
        _accepted(rendered)
