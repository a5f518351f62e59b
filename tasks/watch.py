"""The landing watcher: new objects in landing/ become ``driftloop.data.landed`` events.

Locally nothing tells Prefect that a file arrived, so ``driftloop watch`` lists the landing zone
through the storage layer (a folder or an S3 prefix alike) and announces every object the ledger
has not ingested and the watcher has not announced yet, once per (key, etag). In the cloud, S3
event notifications do the same job (docs/cloud.md); both emit the same event, which the ingest
deployment's trigger turns into an ingest run for that object.

An object is announced only once it has stopped changing for ``settle_seconds`` (a file still
being copied in is not half-read). What was announced is kept in the ledger zone
(``landing-events.json``) so a restarted watcher does not announce again. The event is emitted
before it is recorded: a crash in between announces that object again on restart, which is
harmless (ingest is exactly-once per content).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from driftloop.usecase import UseCase
from tasks.ingest import Ledger
from tasks.storage import ObjectInfo, Storage, read_json, write_json

LANDED_EVENT = "driftloop.data.landed"
STATE_KEY = "landing-events.json"


@dataclass(frozen=True)
class Announced:
    """The landing events of one scan."""

    events: list[dict[str, Any]]
    waiting: int  # objects seen but still changing (announced on a later scan)


def read_announced(ledger_zone: Storage) -> dict[str, str]:
    """``{landing key: etag}`` of what was announced so far."""
    if not ledger_zone.exists(STATE_KEY):
        return {}
    raw = read_json(ledger_zone, STATE_KEY)
    return {str(k): str(v) for k, v in raw.items()}


def landed_event(obj: ObjectInfo, landing_uri: str, dataset: str | None) -> dict[str, Any]:
    """The Prefect event for one landed object (the same resource id as its ingest events)."""
    return {
        "event": LANDED_EVENT,
        "resource": {
            "prefect.resource.id": f"driftloop.object.{landing_uri}/{obj.key}",
            "prefect.resource.name": obj.key,
            "driftloop.dataset": dataset or "",
            "driftloop.etag": obj.etag,
        },
        "payload": {
            "key": obj.key,
            "etag": obj.etag,
            "size": obj.size,
            "dataset": dataset,
            "modified": obj.modified.isoformat(),
        },
    }


def to_announce(
    landing: Storage,
    ledger: Ledger,
    announced: dict[str, str],
    usecase: UseCase,
    *,
    now: datetime,
    settle_seconds: float,
) -> Announced:
    """The events for landed objects that are neither ingested nor announced, and settled."""
    events: list[dict[str, Any]] = []
    waiting = 0
    settled_before = now - timedelta(seconds=settle_seconds)
    for obj in landing.list():
        if announced.get(obj.key) == obj.etag or ledger.knows_etag(obj):
            continue
        if obj.modified > settled_before:
            waiting += 1
            continue
        spec = usecase.dataset_for_key(obj.key)
        events.append(landed_event(obj, landing.uri, spec.name if spec else None))
    return Announced(events=events, waiting=waiting)


def scan_once(
    landing: Storage,
    ledger_zone: Storage,
    ledger: Ledger,
    usecase: UseCase,
    emit: Callable[[dict[str, Any]], None],
    *,
    settle_seconds: float = 2.0,
    now: datetime | None = None,
) -> Announced:
    """Announce what is new (calling ``emit`` per event) and remember it."""
    announced = read_announced(ledger_zone)
    found = to_announce(
        landing,
        ledger,
        announced,
        usecase,
        now=now or datetime.now(tz=UTC),
        settle_seconds=settle_seconds,
    )
    for event in found.events:
        emit(event)
        announced[event["payload"]["key"]] = event["payload"]["etag"]
    if found.events:
        write_json(ledger_zone, STATE_KEY, announced)
    return found
