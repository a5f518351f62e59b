"""The landing watcher: new objects in landing/ become ``driftloop.data.landed`` events.

Locally nothing tells Prefect that a file arrived, so ``driftloop watch`` lists the landing zone
through the storage layer (a folder or an S3 prefix alike) and announces the objects the ledger
has not ingested and the watcher has not announced yet, once per (key, etag). What settled in
one scan is announced by **one** event (resource ``driftloop.landing.<landing URI>``, the objects
in its payload), so a burst of files becomes one ingest run, not one per file: the ingest
deployment's trigger starts a run that ingests everything pending. In the cloud, S3 event
notifications announce single objects (:func:`landed_event`, resource
``driftloop.object.<URI>``); the same trigger takes both.

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

from driftloop_config.usecase import UseCase
from tasks.ingest import Ledger
from tasks.storage import ObjectInfo, Storage, read_json, write_json

LANDED_EVENT = "driftloop.data.landed"
STATE_KEY = "landing-events.json"
#: objects named in one event at most (a bigger scan is announced in several events)
MAX_EVENT_OBJECTS = 500


@dataclass(frozen=True)
class Announced:
    """The landing events of one scan."""

    events: list[dict[str, Any]]
    waiting: int  # objects seen but still changing (announced on a later scan)

    @property
    def keys(self) -> list[str]:
        """The landing keys announced, in event order."""
        return [o["key"] for e in self.events for o in e["payload"]["objects"]]


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


def landing_resource_id(landing_uri: str) -> str:
    """The resource of the watcher's events: one per landing zone."""
    return f"driftloop.landing.{landing_uri}"


def batch_event(objects: list[tuple[ObjectInfo, str | None]], landing_uri: str) -> dict[str, Any]:
    """One event for objects that settled in the same scan: ``(object, dataset)`` pairs, each
    described in the payload exactly as :func:`landed_event` describes it."""
    described = [landed_event(obj, landing_uri, dataset)["payload"] for obj, dataset in objects]
    keys = [o["key"] for o in described]
    name = keys[0] if len(keys) == 1 else f"{keys[0]} (+{len(keys) - 1} more)"
    return {
        "event": LANDED_EVENT,
        "resource": {
            "prefect.resource.id": landing_resource_id(landing_uri),
            "prefect.resource.name": name,
            "driftloop.objects": str(len(keys)),
        },
        "payload": {"count": len(keys), "objects": described},
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
    """The event(s) for the landed objects that are neither ingested nor announced, and
    settled: one event per scan (several only beyond :data:`MAX_EVENT_OBJECTS` objects)."""
    ready: list[tuple[ObjectInfo, str | None]] = []
    waiting = 0
    settled_before = now - timedelta(seconds=settle_seconds)
    for obj in landing.list():
        if announced.get(obj.key) == obj.etag or ledger.knows_etag(obj):
            continue
        if obj.modified > settled_before:
            waiting += 1
            continue
        spec = usecase.dataset_for_key(obj.key)
        ready.append((obj, spec.name if spec else None))
    events = [
        batch_event(ready[i : i + MAX_EVENT_OBJECTS], landing.uri)
        for i in range(0, len(ready), MAX_EVENT_OBJECTS)
    ]
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
    """Announce what is new (calling ``emit`` per event, once per scan for up to
    :data:`MAX_EVENT_OBJECTS` objects) and remember it."""
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
        for obj in event["payload"]["objects"]:
            announced[obj["key"]] = obj["etag"]
    if found.events:
        write_json(ledger_zone, STATE_KEY, announced)
    return found
