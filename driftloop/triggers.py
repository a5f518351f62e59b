"""The deployment triggers of ``prefect.yaml``, applied to an event without a Prefect server.

A replay runs the flows in process, but the runs it starts from events must be the ones the
deployments start: which deployment an event fires and with which parameters. This module reads
the triggers from ``prefect.yaml`` (the file ``prefect deploy`` reads) into Prefect's own trigger
objects, matches events with Prefect's resource matching, and renders the parameters with the
server's own ``run-deployment`` action, so a change to a trigger in ``prefect.yaml`` changes the
replay too.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger


def deployments(prefect_yaml: Path) -> dict[str, dict[str, Any]]:
    """The deployments of ``prefect_yaml`` by name, anchors resolved."""
    config = yaml.safe_load(prefect_yaml.read_text("utf-8")) or {}
    return {str(d["name"]): d for d in config.get("deployments") or []}


def event_triggers(prefect_yaml: Path, deployment: str) -> list[DeploymentEventTrigger]:
    """The enabled event triggers of ``deployment``, as Prefect reads them."""
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    raw = deployments(prefect_yaml)[deployment].get("triggers") or []
    found = [DeploymentEventTrigger(**t) for t in raw if t.get("type", "event") == "event"]
    return [t for t in found if t.enabled]


def fires(trigger: DeploymentEventTrigger, event: dict[str, Any]) -> bool:
    """Whether ``event`` (``event``, ``resource``, ``payload``) fires ``trigger``."""
    from prefect.events.schemas.events import Resource, ResourceSpecification

    match = trigger.match
    assert isinstance(match, ResourceSpecification)
    return event["event"] in trigger.expect and match.matches(Resource(event["resource"]))


def render(
    trigger: DeploymentEventTrigger, event: dict[str, Any], *, when: datetime | None = None
) -> dict[str, Any]:
    """The parameters of the run ``trigger`` starts for ``event``: the automation `prefect
    deploy` registers for it, its run-deployment action rendered by the server's own code."""
    from prefect.server.events.actions import RunDeployment
    from prefect.server.events.schemas.automations import Automation, TriggeredAction
    from prefect.server.events.schemas.events import ReceivedEvent

    when = when or datetime.now(tz=UTC)
    trigger = trigger.model_copy()
    trigger.set_deployment_id(uuid.uuid4())
    core = trigger.as_automation().model_dump(mode="json")
    automation = Automation.model_validate({**core, "id": str(uuid.uuid4())})
    [action] = automation.actions
    assert isinstance(action, RunDeployment)
    received = ReceivedEvent(
        occurred=when,  # type: ignore[arg-type]
        id=uuid.uuid4(),
        **{k: event[k] for k in ("event", "resource", "payload")},
    )
    fired = TriggeredAction(
        automation=automation,
        triggered=when,  # type: ignore[arg-type]
        triggering_labels={},
        triggering_event=received,
        action=action,
    )
    rendered: dict[str, Any] = asyncio.run(action.render_parameters(fired))
    return rendered


def triggered(prefect_yaml: Path, deployment: str, event: dict[str, Any]) -> dict[str, Any] | None:
    """The parameters of the run of ``deployment`` that ``event`` starts, or None when none of
    its triggers fires."""
    for trigger in event_triggers(prefect_yaml, deployment):
        if fires(trigger, event):
            return render(trigger, event)
    return None
