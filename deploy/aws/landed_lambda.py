"""S3 → Prefect: every object that lands in the lake's landing/ zone becomes one
``driftloop.data.landed`` event, the cloud counterpart of ``driftloop watch`` (tasks/watch.py).

Runs as an AWS Lambda function (Python 3.11+, standard library only: zip this one file, handler
``landed_lambda.handler``), invoked by

* an S3 event notification (``s3:ObjectCreated:*`` on the ``<prefix>/landing/`` key prefix), or
* an EventBridge rule matching S3 ``Object Created`` events of the bucket (same prefix).

Each object is posted to the Prefect API (``POST <PREFECT_API_URL>/events``, the endpoint a
self-hosted Prefect server exposes for batches of events) with the resource and payload the local
watcher emits, so the ingest deployment's trigger in prefect.yaml starts an ingest run for that
object either way. S3 delivers notifications at least once; a repeated event is harmless because
ingestion is exactly-once per object content (the ledger).

Environment of the function:

``PREFECT_API_URL``            e.g. ``http://prefect.driftloop.internal:4200/api``
``PREFECT_API_AUTH_STRING``    optional ``user:password`` when the server uses basic auth
``PREFECT_API_KEY``            optional bearer token (Prefect Cloud API keys)
``DRIFTLOOP_DATA_ROOT``        the lake, ``s3://bucket/prefix``: the same value as the work pools
``DRIFTLOOP_LANDING_DATASETS`` optional JSON ``{"<landing prefix>": "<dataset>"}`` (docs/cloud.md
                               prints it from the use case); without it events carry no dataset
"""

from __future__ import annotations

import base64
import json
import os
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

LANDED_EVENT = "driftloop.data.landed"


@dataclass(frozen=True)
class Landed:
    """One created object as S3 describes it (full key, decoded)."""

    bucket: str
    key: str
    etag: str
    size: int
    time: datetime


def _parse_time(value: str | None) -> datetime:
    if not value:
        return datetime.now(tz=UTC)
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def objects_from_event(event: dict[str, Any]) -> list[Landed]:
    """The created objects of an S3 notification or an EventBridge ``Object Created`` event."""
    found: list[Landed] = []
    for record in event.get("Records", []):
        if record.get("eventSource") != "aws:s3":
            continue
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = record["s3"]
        found.append(
            Landed(
                bucket=s3["bucket"]["name"],
                # S3 notifications URL-encode the key ("red flower.csv" → "red+flower.csv")
                key=unquote_plus(s3["object"]["key"]),
                etag=str(s3["object"].get("eTag", "")).strip('"'),
                size=int(s3["object"].get("size", 0)),
                time=_parse_time(record.get("eventTime")),
            )
        )
    if event.get("source") == "aws.s3" and event.get("detail-type") == "Object Created":
        detail = event["detail"]
        found.append(
            Landed(
                bucket=detail["bucket"]["name"],
                key=detail["object"]["key"],
                etag=str(detail["object"].get("etag", "")).strip('"'),
                size=int(detail["object"].get("size", 0)),
                time=_parse_time(event.get("time")),
            )
        )
    return found


def landing_location(data_root: str) -> tuple[str, str]:
    """``(bucket, key prefix of landing/)`` of an ``s3://bucket[/prefix]`` data root."""
    if not data_root.startswith("s3://"):
        raise ValueError(f"DRIFTLOOP_DATA_ROOT={data_root!r} is not an s3:// lake")
    bucket, _, prefix = data_root[len("s3://") :].rstrip("/").partition("/")
    if not bucket:
        raise ValueError(f"DRIFTLOOP_DATA_ROOT={data_root!r} names no bucket")
    return bucket, f"{prefix}/landing/" if prefix else "landing/"


def landed_event(
    obj: Landed, data_root: str, datasets: dict[str, str] | None = None
) -> dict[str, Any] | None:
    """The Prefect event for one object, or None when it is not in the landing zone."""
    bucket, landing_prefix = landing_location(data_root)
    if obj.bucket != bucket or not obj.key.startswith(landing_prefix) or obj.key.endswith("/"):
        return None
    key = obj.key[len(landing_prefix) :]
    dataset = next(
        (name for prefix, name in (datasets or {}).items() if key.startswith(prefix)), None
    )
    landing_uri = f"s3://{bucket}/{landing_prefix.rstrip('/')}"
    return {
        "id": str(uuid.uuid4()),
        "occurred": obj.time.isoformat(),
        "event": LANDED_EVENT,
        "resource": {
            "prefect.resource.id": f"driftloop.object.{landing_uri}/{key}",
            "prefect.resource.name": key,
            "driftloop.dataset": dataset or "",
            "driftloop.etag": obj.etag,
        },
        "related": [],
        "payload": {
            "key": key,
            "etag": obj.etag,
            "size": obj.size,
            "dataset": dataset,
            "modified": obj.time.isoformat(),
        },
    }


def _headers(environ: dict[str, str]) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if environ.get("PREFECT_API_KEY"):
        headers["Authorization"] = f"Bearer {environ['PREFECT_API_KEY']}"
    elif environ.get("PREFECT_API_AUTH_STRING"):
        token = base64.b64encode(environ["PREFECT_API_AUTH_STRING"].encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    return headers


def post_events(events: list[dict[str, Any]], environ: dict[str, str], timeout: float = 10) -> None:
    """POST the events to ``<PREFECT_API_URL>/events``; raises on any non-2xx answer (so the
    invocation fails and AWS retries it)."""
    url = environ["PREFECT_API_URL"].rstrip("/") + "/events"
    request = urllib.request.Request(
        url, data=json.dumps(events).encode(), headers=_headers(environ), method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if not 200 <= response.status < 300:
            raise RuntimeError(f"POST {url} answered {response.status}")


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Lambda entry point."""
    environ = dict(os.environ)
    datasets = json.loads(environ.get("DRIFTLOOP_LANDING_DATASETS") or "{}")
    events = [
        e
        for obj in objects_from_event(event)
        if (e := landed_event(obj, environ["DRIFTLOOP_DATA_ROOT"], datasets)) is not None
    ]
    if events:
        post_events(events, environ)
    return {"announced": [e["payload"]["key"] for e in events]}
