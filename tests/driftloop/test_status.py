"""``driftloop status`` answers "why is nothing happening?": pending work without silent cuts,
the retraining policy's verdict, failed or crashed runs and failed automation actions of the
last day, from a real (temporary) Prefect API."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from driftloop.api import client as api_client
from driftloop.cli import app, status_lines
from driftloop.status import api_overview, collect
from driftloop_config.settings import Settings
from tasks.storage import Lake
from tests.helpers import to_csv, usage_rows

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> str:
    from prefect.settings import PREFECT_API_URL

    url = str(PREFECT_API_URL.value())
    monkeypatch.setenv("PREFECT_API_URL", url)
    return url


def _crashed_run(api: str, flow: str, message: str) -> str:
    """A run that was scheduled, then crashed on submission (as a worker reports it)."""
    with api_client(api) as http:
        flow_id = http.post("/flows/", json={"name": flow}).json()["id"]
        run = http.post(
            "/flow_runs/",
            json={"flow_id": flow_id, "name": f"{flow}-run", "state": {"type": "SCHEDULED"}},
        ).json()
        r = http.post(
            f"/flow_runs/{run['id']}/set_state",
            json={
                "state": {"type": "CRASHED", "name": "Crashed", "message": message},
                "force": True,
            },
        )
        r.raise_for_status()
    return str(run["name"])


def _failed_action(api: str, automation: str, reason: str) -> None:
    """What the server emits when an automation's run-deployment action fails."""
    event = {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(tz=UTC).isoformat(),
        "event": "prefect.automation.action.failed",
        "resource": {
            "prefect.resource.id": f"prefect.automation.{uuid.uuid4()}",
            "prefect.resource.name": automation,
        },
        "payload": {"action_index": 0, "action_type": "run-deployment", "reason": reason},
    }
    httpx.post(f"{api}/events", json=[event], timeout=30).raise_for_status()


def _mine(overview: dict[str, Any], automation: str) -> list[dict[str, Any]]:
    return [a for a in overview["failed_actions"] if a["automation"] == automation]


def test_status_shows_failed_actions_crashed_runs_and_all_pending_work(
    local_settings: Settings, api: str
) -> None:
    lake = Lake.from_settings(local_settings)
    keys = [f"usage/2026-01-{d:02d}.csv" for d in range(1, 13)]
    landed = (datetime.now(tz=UTC) - timedelta(minutes=10)).timestamp()
    for key in keys:
        lake.landing.write_bytes(key, to_csv(usage_rows(2, key[6:16])))
        os.utime(local_settings.local_root / "landing" / key, (landed, landed))
    flow = f"status-probe-{uuid.uuid4().hex[:8]}"
    run = _crashed_run(api, flow, "Flow run could not be submitted to infrastructure")
    automation = f"{flow}-automation"
    reason = "Unexpected status from 'run-deployment' action: 503"
    _failed_action(api, automation, reason)

    deadline = time.monotonic() + 60  # events are stored asynchronously
    overview = api_overview(api)
    while not _mine(overview, automation) and time.monotonic() < deadline:
        time.sleep(0.5)
        overview = api_overview(api)
    [action] = _mine(overview, automation)
    assert action["reason"] == reason
    [problem] = [r for r in overview["problem_runs"] if r["flow"] == flow]
    assert (problem["name"], problem["state"], problem["state_type"]) == (
        run,
        "Crashed",
        "CRASHED",
    )
    assert problem["message"] == "Flow run could not be submitted to infrastructure"

    info = collect(local_settings, settle_seconds=0)
    assert info["api_error"] is None
    assert info["pending"]["objects"] == keys
    assert info["next_action"] == [
        {
            "deployment": "ingest",
            "reason": "12 landed objects not ingested: " + ", ".join(keys[:10]) + ", +2 more",
        }
    ]
    lines = status_lines(info)
    start = lines.index("pending landed objects: 12")
    assert lines[start + 1 : start + 12] == [f"  {k}" for k in keys[:10]] + ["  +2 more"]
    # nothing validated yet: no pipeline day for the policy to judge
    assert [line for line in lines if line.startswith("retraining policy")] == []
    assert "loop state: last trained through -, drift since -, trains from the start" in lines
    assert "validated days without current features: 0" in lines

    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert "pending landed objects: 12\n" in result.output
    assert "  +2 more\n" in result.output
    assert f"{run}: Crashed: Flow run could not be submitted to infrastructure" in result.output
    assert f"{automation}: {reason}" in result.output
    assert "failed automation actions in the last day: " in result.output


def test_status_shows_the_retraining_policy_verdict(local_settings: Settings, api: str) -> None:
    from flows.ingest import IngestParams, ingest_flow

    lake = Lake.from_settings(local_settings)
    for day in ("2026-01-01", "2026-01-02"):
        lake.landing.write_bytes(f"usage/{day}.csv", to_csv(usage_rows(3, day)))
    ingest_flow(IngestParams())
    info = collect(local_settings, settle_seconds=0)
    lines = status_lines(info)
    # the shipped use case: 30 days of history before the first snapshot, none labelled yet
    assert (
        "retraining policy (as of 2026-01-02): not training: no champion: waiting for "
        "labelled snapshots (0/10 days)"
    ) in lines
    assert "pending landed objects: 0" in lines
    assert "validated days without current features: 2" in lines
    assert info["next_action"] == [
        {
            "deployment": "features",
            "reason": "2 validated days without current features: 2026-01-01, 2026-01-02",
        }
    ]
    assert "reconcile would start: features (2 validated days without current features: " in (
        "\n".join(lines)
    )


def test_status_without_an_api_says_so(local_settings: Settings, monkeypatch: Any) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    info = collect(local_settings)
    assert info["api"] is None
    assert status_lines(info)[-1] == (
        "flow runs: no Prefect API reachable (PREFECT_API_URL is not set and the stack is not up)"
    )


def test_runs_older_than_a_day_are_not_read(api: str) -> None:
    overview = api_overview(api, now=datetime.now(tz=UTC) + timedelta(days=3))
    assert overview["runs_last_day"] == 0
    assert overview["problem_runs"] == [] and overview["pending_runs"] == []


def test_objects_that_just_landed_are_listed_and_left_to_their_event(
    local_settings: Settings, monkeypatch: Any
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    lake = Lake.from_settings(local_settings)
    lake.landing.write_bytes("usage/2026-01-01.csv", to_csv(usage_rows(2)))
    info = collect(local_settings, settle_seconds=3600)
    lines = status_lines(info)
    start = lines.index("pending landed objects: 1 (1 just landed, left to their event)")
    assert lines[start + 1] == "  usage/2026-01-01.csv"
    assert "reconcile would start: nothing" in lines
    assert info["pending_objects"] == ["usage/2026-01-01.csv"]


def test_status_shows_the_last_policy_decisions_and_the_back_off(
    local_settings: Settings, monkeypatch: Any
) -> None:
    from datetime import date

    from tasks import loop_state, policy

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    lake = Lake.from_settings(local_settings)
    info = collect(local_settings)
    lines = status_lines(info)
    assert "back-off: none" in lines and "last policy decisions: none yet" in lines

    day = date(2026, 2, 10)
    state = loop_state.LoopState(drift_since=date(2026, 1, 31), drift_signals=("realised-drop",))
    for i in range(12):
        state = loop_state.log(
            state, loop_state.Entry(date(2026, 1, 20 + i), "defer", f"waiting {i}")
        )
    state = policy.record_training(
        state,
        trained_through=date(2026, 1, 28),
        promoted=False,
        since=date(2026, 1, 31),
        as_of=day,
        version="7",
        trigger="drift",
        day=day,
        reason="rejected: the challenger does not beat the champion",
    )
    loop_state.write_state(lake.ledger, state)

    info = collect(local_settings)
    backoff = info["policy"]["backoff"]
    assert (backoff["why"], backoff["after"], backoff["rows"], backoff["rows_needed"]) == (
        "v7 rejected",
        "2026-01-28",
        0,
        500,
    )
    lines = status_lines(info)
    assert (
        "back-off since 2026-02-10 (after v7 rejected as of 2026-02-10): 0/500 newly labelled "
        "rows and 0/20 positives after 2026-01-28"
    ) in lines
    # the shipped use case: 10 post-change days (or 4 + 3 + 3), doubled after one rejection
    assert (
        "pending change (realised-drop): waits for 20 labelled days after it (widened after 1 "
        "unsuccessful attempts)"
    ) in lines
    start = lines.index("last policy decisions (8 of 13, newest last):")
    shown = lines[start + 1 : start + 9]
    assert shown[:-1] == [f"  2026-01-{25 + i} defer: waiting {5 + i}" for i in range(7)]
    assert shown[-1] == (
        "  2026-02-10 rejected (drift) as of 2026-02-10 v7: rejected: the challenger does not "
        "beat the champion; backing off until 500 newly labelled rows and 20 positives after "
        "2026-01-28"
    )
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert "back-off since 2026-02-10 (after v7 rejected" in result.output
