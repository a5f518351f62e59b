"""Runs that decide not to do their work say so: a score run without a champion or without rows
ends in the state "Skipped", a drift check of a day whose usage file was rejected ends in "NoData"
(report, result and artifact say "no data", never "no drift", and no drift event), each with the
reason as message, artifact and typed result. Real flows under the session's Prefect API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any
from uuid import UUID

import pytest
from prefect.events.clients import AssertingEventsClient
from prefect.events.worker import EventsWorker

from driftloop.simulate import simulate
from driftloop_config.settings import Settings, load_settings
from flows.drift import DriftParams, drift_flow
from flows.features import features_flow
from flows.ingest import ingest_flow
from flows.score import ScoreParams, score_flow
from flows.train import TrainParams, train_flow
from tasks import registry
from tasks.storage import Lake
from tests.support.usecases import usecase_with

pytestmark = pytest.mark.usefixtures("prefect_harness")

START = date(2026, 1, 1)
DAYS = 34
REJECTED = START + timedelta(days=DAYS - 1)  # its usage file is delivered empty
NAME = "telco_churn"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    tmp = tmp_path_factory.mktemp("skips-world")
    mp = pytest.MonkeyPatch()
    mp.setenv("DRIFTLOOP_DATA_ROOT", str(tmp / "lake"))
    mp.setenv(
        "DRIFTLOOP_USECASE",
        str(
            usecase_with(tmp, model={"floor": 0.5, "bootstrap_samples": 100, "min_history_days": 0})
        ),
    )
    settings = load_settings()
    landing = Lake.from_settings(settings).landing
    result = simulate(landing, days=DAYS, start=START, customers=500, label_delay_days=7, seed=5)
    [usage] = [k for k in result.objects if k.startswith(f"usage/{REJECTED.isoformat()}.")]
    landing.write_bytes(usage, b"")  # the whole file is rejected at ingest
    ingested = ingest_flow()
    assert [o["status"] for o in ingested["objects"] if o["object"] == usage] == ["rejected"]
    features_flow()
    yield settings
    mp.undo()


def _artifacts(state: Any, key: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    run_id = state.state_details.flow_run_id
    assert isinstance(run_id, UUID)
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
                key=ArtifactFilterKey(any_=[key]),
            )
        )


def _recorded_state(state: Any) -> tuple[str, str | None, str | None]:
    """(type, name, message) of the run's state as the server holds it (what the UI shows)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert run.state is not None
    return run.state.type.value, run.state.name, run.state.message


def _drift_events(worker: EventsWorker) -> list[Any]:
    worker.drain()
    client = worker._client
    assert isinstance(client, AssertingEventsClient)
    return [e for e in client.events if e.event == "driftloop.drift.detected"]


def test_without_a_champion_score_and_drift_are_skipped_and_say_why(world: Settings) -> None:
    assert registry.champion_version(world.tracking_uri, NAME) is None
    day = START + timedelta(days=20)

    state = score_flow(ScoreParams(day=day), return_state=True)
    message = (
        f"no champion yet: {NAME} has no promoted model to score with (training starts once "
        "the retraining policy has enough labelled data)"
    )
    assert (state.type.value, state.name, state.message) == ("COMPLETED", "Skipped", message)
    assert _recorded_state(state) == ("COMPLETED", "Skipped", message)
    assert state.result() == {
        "day": day.isoformat(),
        "scored": 0,
        "skipped": "no-champion",
        "reason": message,
    }
    [artifact] = _artifacts(state, "score-skipped")
    assert artifact.data == f"**Not scored** for {day.isoformat()} ({NAME}): {message}."
    lake = Lake.from_settings(world)
    assert lake.zone("predictions").list() == []

    # the plain call (the CLI's) gets the typed result
    assert score_flow(ScoreParams(day=day))["skipped"] == "no-champion"

    checked = drift_flow(DriftParams(day=day), return_state=True)
    reason = "no champion yet: there is no model to compare with"
    assert (checked.name, checked.message) == ("Skipped", reason)
    assert checked.result() == {
        "day": day.isoformat(),
        "detected": False,
        "status": "skipped",
        "reason": reason,
    }


def test_a_rejected_day_is_not_scored_and_its_drift_check_says_no_data(
    world: Settings, asserting_events_worker: EventsWorker, reset_worker_events: None
) -> None:
    trained = train_flow(TrainParams(seed=1))
    assert trained["promoted"], trained["decision"]["reason"]
    version = trained["version"]
    lake = Lake.from_settings(world)

    # a day with rows is scored under the rule the model was trained on, counting who is not
    from driftloop_config.usecase import load_usecase
    from tasks import score
    from tasks.feature_store import feature_store

    day_before = REJECTED - timedelta(days=1)
    usecase = load_usecase(world.usecase)
    scored = score.score_day(world, usecase, lake, feature_store(world), day_before)
    assert isinstance(scored, score.Scored)
    population = scored.population
    assert population["rule"] == population["model_rule"] == "terminal"
    assert population["mismatch"] is None
    assert population["scored"] == len(scored.scores) > 0
    assert population["active"] == population["scored"] + sum(population["excluded"].values())

    state = score_flow(ScoreParams(day=REJECTED), return_state=True)
    message = (
        f"no validated usage rows on {REJECTED.isoformat()}: the day's file was rejected or has "
        "not arrived (see the validation report)"
    )
    assert (state.type.value, state.name, state.message) == ("COMPLETED", "Skipped", message)
    assert state.result() == {
        "day": REJECTED.isoformat(),
        "scored": 0,
        "skipped": "no-rows",
        "reason": message,
    }
    [artifact] = _artifacts(state, "score-skipped")
    assert artifact.data == f"**Not scored** for {REJECTED.isoformat()} ({NAME}): {message}."
    assert lake.zone("predictions").list(f"{NAME}/date={REJECTED.isoformat()}") == []

    checked = drift_flow(DriftParams(day=REJECTED), return_state=True)
    reason = (
        f"no data: no feature rows for {REJECTED.isoformat()}, so nothing was compared (the day's "
        "files were rejected or have not arrived; see the validation report)"
    )
    assert (checked.type.value, checked.name, checked.message) == ("COMPLETED", "NoData", reason)
    assert _recorded_state(checked) == ("COMPLETED", "NoData", reason)
    report = f"drift/{NAME}-{REJECTED.isoformat()}.html"
    assert checked.result() == {
        "day": REJECTED.isoformat(),
        "detected": False,
        "status": "no-data",
        "model": NAME,
        "model_version": version,
        "reason": reason,
        "report": report,
    }
    page = lake.reports.read_bytes(report).decode()
    assert "no data" in page and "no drift" not in page.lower()
    assert reason in page
    stored = json.loads(lake.reports.read_bytes(report.replace(".html", ".json")))
    assert (stored["status"], stored["detected"], stored["scores"]) == ("no-data", False, [])
    assert stored["window"] == [REJECTED.isoformat(), REJECTED.isoformat()]
    [summary] = _artifacts(checked, "drift-summary")
    assert summary.data == (
        f"**No data** for {NAME} v{version} in {REJECTED.isoformat()} → {REJECTED.isoformat()}: "
        f"{reason}"
    )
    assert _drift_events(asserting_events_worker) == []

    # the day before has data: checked as usual, never "no data"
    before = drift_flow(DriftParams(day=REJECTED - timedelta(days=1)))
    assert before["status"] in ("drift", "no-drift")
    assert before["scores"]
