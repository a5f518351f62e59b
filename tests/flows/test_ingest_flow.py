"""The ingest flow under a real (temporary) Prefect API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prefect.events.clients import AssertingEventsClient
from prefect.events.worker import EventsWorker

from driftloop_config.settings import Settings
from flows.ingest import IngestParams, ingest_flow
from tasks.storage import Lake, read_parquet
from tests.helpers import to_csv, to_parquet, usage_rows

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _land(lake: Lake) -> None:
    bad = usage_rows(8, "2026-01-02").astype(str)
    bad.loc[1, "region"] = "atlantis"
    lake.landing.write_bytes("usage/2026-01-01.csv", to_csv(usage_rows(8)))
    lake.landing.write_bytes("usage/2026-01-02.parquet", to_parquet(bad))
    lake.landing.write_bytes("usage/2026-01-03.csv", b"")


def test_ingest_flow_end_to_end(
    local_settings: Settings, asserting_events_worker: EventsWorker, reset_worker_events: None
) -> None:
    lake = Lake.from_settings(local_settings)
    _land(lake)
    result = ingest_flow(IngestParams())
    assert result["totals"] == {
        "objects": 3,
        "accepted": 2,
        "rejected": 1,
        "ignored": 0,
        "rows_validated": 15,
        "rows_quarantined": 1,
    }
    asserting_events_worker.drain()
    client = asserting_events_worker._client
    assert isinstance(client, AssertingEventsClient)
    names = sorted(
        (e.event, e.resource["prefect.resource.name"])
        for e in client.events
        if e.event.startswith("driftloop.") and e.event != "driftloop.data.batch-validated"
    )
    assert names == [
        ("driftloop.data.rejected", "usage/2026-01-03.csv"),
        ("driftloop.data.validated", "usage/2026-01-01.csv"),
        ("driftloop.data.validated", "usage/2026-01-02.parquet"),
    ]
    # one run-level event starts one features run for the whole batch
    [batch] = [e for e in client.events if e.event == "driftloop.data.batch-validated"]
    assert batch.resource["prefect.resource.name"].endswith(
        ": 2 objects, 15 rows validated (2026-01-01..2026-01-02)"
    )
    assert lake.reports.exists("validation/index.html")

    # the same landing zone again: nothing new, nothing written, no events
    snapshot = {o.key: o.etag for o in lake.root.list()}
    client.events.clear()
    again = ingest_flow(IngestParams())
    assert again["totals"]["objects"] == 0
    assert {o.key: o.etag for o in lake.root.list()} == snapshot
    asserting_events_worker.drain()
    assert not [e for e in client.events if e.event.startswith("driftloop.")]


def test_ingest_flow_only_named_keys(local_settings: Settings) -> None:
    lake = Lake.from_settings(local_settings)
    _land(lake)
    result = ingest_flow(IngestParams(objects=["usage/2026-01-01.csv"]))
    assert [o["object"] for o in result["objects"]] == ["usage/2026-01-01.csv"]


def test_the_date_window_counts_from_the_day_given(local_settings: Settings) -> None:
    """A day after the real today is plausible when the run is told that is today (a replayed
    history), and implausible when not."""
    ahead = datetime.now(tz=UTC).date() + timedelta(days=400)
    lake = Lake.from_settings(local_settings)
    lake.landing.write_bytes(f"usage/{ahead}.csv", to_csv(usage_rows(5, ahead.isoformat())))
    played = ingest_flow(IngestParams(objects=[f"usage/{ahead}.csv"], today=ahead))
    assert (played["totals"]["rows_validated"], played["totals"]["rows_quarantined"]) == (5, 0)

    later = ahead + timedelta(days=1)
    lake.landing.write_bytes(f"usage/{later}.csv", to_csv(usage_rows(5, later.isoformat())))
    now = ingest_flow(IngestParams(objects=[f"usage/{later}.csv"]))
    assert (now["totals"]["rows_validated"], now["totals"]["rows_quarantined"]) == (0, 5)
    reasons = read_parquet(lake.quarantine, f"rows/usage/{later}.csv.parquet")["_reason"]
    assert set(reasons) == {"implausible_date(date)"}


def test_ingest_flow_publishes_a_table_artifact(local_settings: Settings) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    _land(Lake.from_settings(local_settings))
    state = ingest_flow(IngestParams(), return_state=True)
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    [art] = arts
    assert (art.key, art.type) == ("ingest-summary", "table")
    assert "usage/2026-01-03.csv" in str(art.data)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="Extra inputs"):
        IngestParams(objectz=["x"])  # type: ignore[call-arg]
