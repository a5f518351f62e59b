"""What several flows share: the Prefect task wrappers of stages that more than one flow runs,
and the publishing of what ``tasks/`` describes (events, artifacts)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from tasks import feature_store as feast_glue
from tasks import policy
from tasks.artifacts import Artifact, Link, Markdown, Table
from tasks.storage import sweep_debris

#: the Feast store of the settings (its offline source synced from the lake)
feature_store = task(name="feature-store", cache_policy=NO_CACHE)(feast_glue.feature_store)
#: the retraining policy's state (labels newly known, back-off, what drift was recorded)
loop_state = task(name="loop-state", cache_policy=NO_CACHE, retries=1)(policy.current_state)
#: temporary files of writers killed mid-write (their PID is gone): removed before new work
sweep = task(name="sweep-debris", cache_policy=NO_CACHE)(sweep_debris)


def announce(events: Iterable[dict[str, Any] | None]) -> None:
    """Emit each event ``tasks/`` described (a None is an event that did not happen)."""
    for event in events:
        if event is not None:
            emit_event(**event)


def show(*artifacts: Artifact | None) -> None:
    """Create each artifact ``tasks/`` described on the current run (a None is one that is not
    shown)."""
    for artifact in artifacts:
        match artifact:
            case Markdown(key, markdown, description):
                create_markdown_artifact(key=key, markdown=markdown, description=description)
            case Table(key, table, description):
                create_table_artifact(key=key, table=table, description=description)
            case Link(key, link, description):
                create_link_artifact(key=key, link=link, description=description)
