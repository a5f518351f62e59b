"""The flows' shared publishing: what ``tasks/`` describes (artifacts, events) reaches the run
in the session's Prefect API as described, and a None publishes nothing."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.events.clients import AssertingEventsClient
from prefect.events.worker import EventsWorker
from prefect.runtime import flow_run

from flows.shared import announce, show
from tasks.artifacts import Link, Markdown, Table

pytestmark = pytest.mark.usefixtures("prefect_harness")


@flow
def publishing() -> str:
    show(
        Markdown("summary", "**all good**", description="one line"),
        None,
        Table("rows", [{"day": "2026-01-01", "rows": 3}], description="two columns"),
        Link("report", "https://reports.example/r.html"),
    )
    announce(
        [None, {"event": "driftloop.test.published", "resource": {"prefect.resource.id": "t"}}]
    )
    return str(flow_run.get_id())


def test_described_artifacts_and_events_are_published_on_the_run(
    asserting_events_worker: EventsWorker, reset_worker_events: None
) -> None:
    run_id = UUID(publishing())
    with get_client(sync_client=True) as api:
        found = api.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    shown: dict[str | None, Any] = {a.key: (a.type, a.data, a.description) for a in found}
    assert shown == {
        "summary": ("markdown", "**all good**", "one line"),
        "rows": ("table", '[{"day": "2026-01-01", "rows": 3}]', "two columns"),
        # Prefect keeps a link artifact as Markdown
        "report": (
            "markdown",
            "[https://reports.example/r.html](https://reports.example/r.html)",
            None,
        ),
    }
    asserting_events_worker.drain()
    client = asserting_events_worker._client
    assert isinstance(client, AssertingEventsClient)
    assert [e.event for e in client.events if e.event.startswith("driftloop.")] == [
        "driftloop.test.published"
    ]
