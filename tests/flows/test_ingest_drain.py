"""One ingest run drains the landing zone: what is still being copied in when it starts is taken
in a later round of the same run, and the run announces itself once (features run once per
ingest run, not once per file)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from prefect.events.clients import AssertingEventsClient
from prefect.events.worker import EventsWorker

from driftloop_config.settings import Settings
from flows.ingest import IngestParams, ingest_flow
from tasks.drain import BATCH_VALIDATED_EVENT
from tasks.storage import Lake
from tests.helpers import to_csv, usage_rows

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _events(worker: EventsWorker) -> list[tuple[str, str]]:
    worker.drain()
    client = worker._client
    assert isinstance(client, AssertingEventsClient)
    return sorted(
        (e.event, e.resource["prefect.resource.name"])
        for e in client.events
        if e.event.startswith("driftloop.")
    )


def test_one_run_takes_what_settles_while_it_runs_and_announces_itself_once(
    local_settings: Settings, asserting_events_worker: EventsWorker, reset_worker_events: None
) -> None:
    lake = Lake.from_settings(local_settings)
    root = local_settings.local_root / "landing"
    old = (datetime.now(tz=UTC) - timedelta(minutes=5)).timestamp()
    for day in ("2026-01-01", "2026-01-02"):
        lake.landing.write_bytes(f"usage/{day}.csv", to_csv(usage_rows(4, day)))
        os.utime(root / "usage" / f"{day}.csv", (old, old))
    lake.landing.write_bytes("usage/2026-01-04.csv", b"")  # rejected: no rows validated
    os.utime(root / "usage" / "2026-01-04.csv", (old, old))
    # still being copied in when the run starts (it changes for a while yet): taken once it
    # has settled, in a second round of the same run
    lake.landing.write_bytes("usage/2026-01-03.csv", to_csv(usage_rows(4, "2026-01-03")))
    later = (datetime.now(tz=UTC) + timedelta(seconds=15)).timestamp()
    os.utime(root / "usage" / "2026-01-03.csv", (later, later))

    result = ingest_flow(IngestParams(settle_seconds=1.0))
    assert result["rounds"] == 2
    assert result["totals"] == {
        "objects": 4,
        "accepted": 3,
        "rejected": 1,
        "ignored": 0,
        "rows_validated": 12,
        "rows_quarantined": 0,
    }
    events = _events(asserting_events_worker)
    batch = [e for e in events if e[0] == BATCH_VALIDATED_EVENT]
    assert len(batch) == 1
    assert batch[0][1].endswith(": 3 objects, 12 rows validated (2026-01-01..2026-01-03)")
    assert [e for e in events if e[0] != BATCH_VALIDATED_EVENT] == [
        ("driftloop.data.rejected", "usage/2026-01-04.csv"),
        ("driftloop.data.validated", "usage/2026-01-01.csv"),
        ("driftloop.data.validated", "usage/2026-01-02.csv"),
        ("driftloop.data.validated", "usage/2026-01-03.csv"),
    ]


def test_a_run_that_validates_no_rows_does_not_start_features(
    local_settings: Settings, asserting_events_worker: EventsWorker, reset_worker_events: None
) -> None:
    lake = Lake.from_settings(local_settings)
    lake.landing.write_bytes("usage/2026-01-04.csv", b"")
    result = ingest_flow(IngestParams())
    assert (result["rounds"], result["totals"]["rejected"]) == (1, 1)
    assert _events(asserting_events_worker) == [("driftloop.data.rejected", "usage/2026-01-04.csv")]
    # nothing pending: no round, no event
    again = ingest_flow(IngestParams())
    assert (again["rounds"], again["totals"]["objects"]) == (0, 0)
