"""The features flow under a real (temporary) Prefect API."""

from __future__ import annotations

from datetime import date

import pytest
from prefect.events.clients import AssertingEventsClient
from prefect.events.worker import EventsWorker
from pydantic import ValidationError

from driftloop_config.settings import Settings
from flows.features import FeaturesParams, features_flow
from tasks.feature_store import feature_store, online_features
from tasks.features import MATERIALIZED_EVENT
from tasks.storage import Lake, write_parquet
from tests.tasks.test_features import usage

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _validated(lake: Lake, days: range) -> None:
    """Hand-written validated usage: customers A and B on each of the given January days."""
    for n in days:
        day = date(2026, 1, n)
        rows = [
            {"customer_id": "A", "date": day, "minutes": 10.0 * n},
            {"customer_id": "B", "date": day, "minutes": 5.0, "plan": "premium"},
        ]
        key = f"usage/date={day.isoformat()}/usage__{day.isoformat()}.csv.parquet"
        write_parquet(lake.validated, key, usage(rows))


def _driftloop_events(worker: EventsWorker) -> list[object]:
    worker.drain()
    client = worker._client
    assert isinstance(client, AssertingEventsClient)
    return [e for e in client.events if e.event.startswith("driftloop.")]


def test_features_flow_end_to_end(
    local_settings: Settings, asserting_events_worker: EventsWorker, reset_worker_events: None
) -> None:
    lake = Lake.from_settings(local_settings)
    _validated(lake, range(1, 6))

    result = features_flow(FeaturesParams())
    assert result["dates_built"] == [f"2026-01-0{n}" for n in range(1, 6)]
    assert result["rows"] == 10
    assert sorted(result["materialized"]) == ["customer_profile", "usage_aggregates"]
    assert result["latest_feature_timestamp"] == "2026-01-06T00:00:00+00:00"

    [event] = _driftloop_events(asserting_events_worker)
    assert event.event == MATERIALIZED_EVENT  # type: ignore[attr-defined]
    assert event.resource.id == "driftloop.features.driftloop"  # type: ignore[attr-defined]
    assert event.payload["rows"] == 10  # type: ignore[attr-defined]
    assert event.payload["dates"] == result["dates_built"]  # type: ignore[attr-defined]

    online = online_features(
        feature_store(local_settings), ["A", "B"], "churn_v1", entity="customer_id"
    )
    assert online["minutes_mean_7d"].tolist() == [30.0, 5.0]  # Jan 5: mean of 10..50
    assert online["plan"].tolist() == ["basic", "premium"]

    # nothing new: nothing built, nothing loaded, no event
    client = asserting_events_worker._client
    assert isinstance(client, AssertingEventsClient)
    client.events.clear()
    again = features_flow()
    assert again["dates_built"] == [] and again["materialized"] == {}
    assert _driftloop_events(asserting_events_worker) == []

    # a new day lands: only it is built, and the online store moves on
    _validated(lake, range(6, 7))
    later = features_flow(FeaturesParams())
    assert later["dates_built"] == ["2026-01-06"]
    assert later["latest_feature_timestamp"] == "2026-01-07T00:00:00+00:00"
    online = online_features(feature_store(local_settings), ["A"], "churn_v1", entity="customer_id")
    assert online["minutes_mean_7d"].tolist() == [35.0]


def test_features_flow_explicit_dates_and_no_materialisation(local_settings: Settings) -> None:
    _validated(Lake.from_settings(local_settings), range(1, 4))
    result = features_flow(FeaturesParams(dates=[date(2026, 1, 2)], force=True, materialize=False))
    assert result["dates_built"] == ["2026-01-02"] and result["materialized"] == {}
    assert feature_store(local_settings).list_feature_views()  # the repo is still applied


def test_features_params_are_typed_and_strict() -> None:
    assert FeaturesParams().model_dump() == {
        "dates": None,
        "force": False,
        "materialize": True,
        "trigger": None,
    }
    assert FeaturesParams(dates=["2026-01-05"]).dates == [date(2026, 1, 5)]  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        FeaturesParams(day="2026-01-05")  # type: ignore[call-arg]
    schema = FeaturesParams.model_json_schema()
    assert all(p.get("description") for p in schema["properties"].values())


def test_features_flow_publishes_a_table_artifact(local_settings: Settings) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    _validated(Lake.from_settings(local_settings), range(1, 3))
    state = features_flow(FeaturesParams(), return_state=True)
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    [art] = [a for a in arts if a.key == "features-summary"]
    assert art.type == "table"
    assert "2026-01-02" in str(art.data)
