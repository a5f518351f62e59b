"""S3 → ``driftloop.data.landed``: the Lambda handler and the Prefect Cloud webhook template in
deploy/aws/ announce an object exactly as the local landing watcher (tasks/watch.py) does."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

import httpx
import pytest
from jinja2.sandbox import SandboxedEnvironment

from driftloop_config.settings import PROJECT_ROOT
from driftloop_config.usecase import load_usecase
from tasks.storage import ObjectInfo
from tasks.watch import landed_event as watcher_event
from tests.deploy.modules import DEPLOY, load

bridge = load("aws/landed_lambda.py")

BUCKET = "driftloop-lake"
DATA_ROOT = f"s3://{BUCKET}/lake"
LANDING_URI = f"{DATA_ROOT}/landing"
WHEN = datetime(2026, 1, 5, 2, 0, 7, tzinfo=UTC)


def _usecase_datasets() -> dict[str, str]:
    """What docs/cloud.md tells to put in DRIFTLOOP_LANDING_DATASETS."""
    usecase = load_usecase(PROJECT_ROOT / "usecases" / "telco_churn.yaml")
    return {spec.landing_prefix: spec.name for spec in usecase.datasets.values()}


def s3_notification(key: str, *, bucket: str = BUCKET, name: str = "ObjectCreated:Put") -> dict:
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2026-01-05T02:00:07.000Z",
                "eventName": name,
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {
                        "key": quote_plus(key, safe="/"),
                        "size": 917519,
                        "eTag": "b1946ac92492d2347c6235b4d2611184",
                        "sequencer": "0A1B2C3D4E5F678901",
                    },
                },
            }
        ]
    }


def eventbridge_event(key: str, *, bucket: str = BUCKET) -> dict:
    return {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "111122223333",
        "time": "2026-01-05T02:00:07Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": {
                "key": key,
                "size": 917519,
                "etag": "b1946ac92492d2347c6235b4d2611184",
                "sequencer": "617f08299329d189",
            },
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "111122223333",
            "reason": "PutObject",
        },
    }


def _expected(key: str) -> dict[str, Any]:
    """What the local watcher emits for the same object."""
    obj = ObjectInfo(key=key, size=917519, etag="b1946ac92492d2347c6235b4d2611184", modified=WHEN)
    usecase = load_usecase(PROJECT_ROOT / "usecases" / "telco_churn.yaml")
    spec = usecase.dataset_for_key(key)
    return watcher_event(obj, LANDING_URI, spec.name if spec else None)


def _announce(event: dict) -> list[dict[str, Any]]:
    return [
        e
        for obj in bridge.objects_from_event(event)
        if (e := bridge.landed_event(obj, DATA_ROOT, _usecase_datasets())) is not None
    ]


@pytest.mark.parametrize("source", [s3_notification, eventbridge_event])
@pytest.mark.parametrize("key", ["usage/2026-01-05.csv", "labels/2026-01-05.csv", "x/odd.csv"])
def test_same_event_as_the_local_watcher(source: Any, key: str) -> None:
    (event,) = _announce(source(f"lake/landing/{key}"))
    expected = _expected(key)
    assert event["event"] == expected["event"] == "driftloop.data.landed"
    assert event["resource"] == expected["resource"]
    assert event["payload"] == expected["payload"]
    assert datetime.fromisoformat(event["occurred"]) == WHEN


def test_notification_keys_are_url_decoded() -> None:
    (event,) = _announce(s3_notification("lake/landing/usage/2026-01-05 (copy)+1.csv"))
    assert event["payload"]["key"] == "usage/2026-01-05 (copy)+1.csv"
    assert event["resource"]["prefect.resource.id"].endswith(
        "/landing/usage/2026-01-05 (copy)+1.csv"
    )


def test_only_created_objects_of_the_landing_zone_are_announced() -> None:
    assert _announce(s3_notification("lake/landing/usage/a.csv", bucket="elsewhere")) == []
    assert _announce(s3_notification("lake/validated/usage/a.parquet")) == []
    assert _announce(s3_notification("lake/landing/usage/")) == []
    assert _announce(s3_notification("lake/landing/usage/a.csv", name="ObjectRemoved:Delete")) == []
    assert _announce({"detail-type": "Object Deleted", "source": "aws.s3", "detail": {}}) == []
    assert _announce(eventbridge_event("lake/landing/usage/a.csv", bucket="elsewhere")) == []


def test_lake_without_prefix() -> None:
    (obj,) = bridge.objects_from_event(eventbridge_event("landing/usage/2026-01-05.csv"))
    event = bridge.landed_event(obj, f"s3://{BUCKET}")
    assert event is not None
    assert event["payload"]["key"] == "usage/2026-01-05.csv"
    assert event["payload"]["dataset"] is None  # no dataset map given
    assert event["resource"]["prefect.resource.id"] == (
        f"driftloop.object.s3://{BUCKET}/landing/usage/2026-01-05.csv"
    )
    with pytest.raises(ValueError, match="not an s3"):
        bridge.landed_event(obj, "file:///srv/lake")


def test_webhook_template_renders_the_same_event() -> None:
    """The Prefect Cloud webhook template, rendered by a sandboxed Jinja2 as webhooks are."""
    template = SandboxedEnvironment().from_string(
        (DEPLOY / "aws" / "landed-webhook.j2").read_text("utf-8")
    )
    for key in ("usage/2026-01-05.csv", "labels/2026-01-05.csv"):
        body = eventbridge_event(f"lake/landing/{key}")
        rendered = json.loads(template.render(body=body, headers={}, method="POST"))
        (from_lambda,) = _announce(body)
        assert rendered["event"] == from_lambda["event"]
        assert rendered["resource"] == from_lambda["resource"]
        payload = dict(rendered["payload"])
        assert datetime.fromisoformat(payload.pop("modified")) == WHEN
        assert payload == {k: v for k, v in from_lambda["payload"].items() if k != "modified"}


def test_webhook_template_dataset_map_matches_the_use_case() -> None:
    text = (DEPLOY / "aws" / "landed-webhook.j2").read_text("utf-8")
    declared = text.split("{%- set datasets = ", 1)[1].split(" -%}", 1)[0]
    assert json.loads(declared) == _usecase_datasets()


@pytest.mark.usefixtures("prefect_harness")
def test_handler_posts_events_a_prefect_api_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler against a real Prefect API: the event is stored as sent."""
    from prefect.settings import PREFECT_API_URL

    api = str(PREFECT_API_URL.value())
    monkeypatch.setenv("PREFECT_API_URL", api)
    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", DATA_ROOT)
    monkeypatch.setenv("DRIFTLOOP_LANDING_DATASETS", json.dumps(_usecase_datasets()))
    notification = s3_notification("lake/landing/usage/2026-01-05.csv")
    notification["Records"][0]["eventTime"] = datetime.now(tz=UTC).isoformat()

    sent: list[dict[str, Any]] = []
    original = bridge.post_events

    def spy(events: list[dict[str, Any]], environ: dict[str, str], timeout: float = 10) -> None:
        sent.extend(events)
        original(events, environ, timeout)

    monkeypatch.setattr(bridge, "post_events", spy)
    assert bridge.handler(notification) == {"announced": ["usage/2026-01-05.csv"]}
    (event,) = sent

    stored: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while not stored and time.monotonic() < deadline:
        page = httpx.post(
            f"{api}/events/filter",
            json={"filter": {"id": {"id": [event["id"]]}}, "limit": 10},
            timeout=10,
        )
        page.raise_for_status()
        stored = page.json()["events"]
        if not stored:
            time.sleep(0.5)
    assert stored, "the Prefect API did not store the posted event"
    (got,) = stored
    assert got["event"] == "driftloop.data.landed"
    assert got["resource"] == event["resource"]
    assert got["payload"] == event["payload"]


def test_handler_fails_loudly_when_the_api_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused POST fails the invocation (so AWS retries it) instead of losing the event."""
    import http.server
    import threading

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(422)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{server.server_port}/api")
        monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", DATA_ROOT)
        with pytest.raises(Exception, match="422"):
            bridge.handler(eventbridge_event("lake/landing/usage/2026-01-05.csv"))
    finally:
        server.shutdown()
        server.server_close()


def test_auth_headers() -> None:
    assert bridge._headers({})["Content-Type"] == "application/json"
    assert "Authorization" not in bridge._headers({})
    assert bridge._headers({"PREFECT_API_KEY": "k"})["Authorization"] == "Bearer k"
    basic = bridge._headers({"PREFECT_API_AUTH_STRING": "admin:pass"})["Authorization"]
    assert basic == "Basic YWRtaW46cGFzcw=="
