"""Runs left in flight when the stack stops: :func:`driftloop.stack.crash_inflight_runs` against a
real Prefect API (the session's test server), with a deployment concurrency limit in play."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from driftloop.stack import crash_inflight_runs

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _api() -> str:
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())


def _client() -> Any:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def test_in_flight_runs_of_the_stack_are_crashed_and_their_slot_freed() -> None:
    from prefect.states import Completed, Pending, Running, Scheduled

    flow_name = f"train-{uuid.uuid4().hex[:8]}"  # the session's API is shared: a fresh flow
    deployment = f"dep-{uuid.uuid4().hex[:8]}"
    other = f"other-{uuid.uuid4().hex[:8]}"
    with _client() as client:
        flow_id = client.create_flow_from_name(flow_name)
        dep_id = client.create_deployment(flow_id, deployment, concurrency_limit=1)
        other_id = client.create_deployment(flow_id, other)

        running = client.create_flow_run_from_deployment(dep_id, state=Scheduled())
        # through the orchestration rules, so the run takes the deployment's only slot
        assert client.set_flow_run_state(running.id, Pending()).status.value == "ACCEPT"
        assert client.set_flow_run_state(running.id, Running()).status.value == "ACCEPT"
        pending = client.create_flow_run_from_deployment(dep_id, state=Pending())
        waiting = client.create_flow_run_from_deployment(dep_id, state=Scheduled())
        # the slot is taken: the server refuses and parks the run
        assert client.set_flow_run_state(waiting.id, Pending()).status.value == "REJECT"
        assert client.read_flow_run(waiting.id).state.name == "AwaitingConcurrencySlot"
        done = client.create_flow_run_from_deployment(dep_id, state=Completed())
        elsewhere = client.create_flow_run_from_deployment(other_id, state=Running())

    crashed = crash_inflight_runs(_api(), "the stack stopped", deployments=[deployment])

    assert sorted(crashed) == sorted([str(running.id), str(pending.id)])
    with _client() as client:

        def state(run: Any) -> tuple[str, str | None]:
            s = client.read_flow_run(run.id).state
            return s.type.value, s.message

        assert state(running) == ("CRASHED", "the stack stopped")
        assert state(pending) == ("CRASHED", "the stack stopped")
        assert state(done)[0] == "COMPLETED"
        assert state(elsewhere)[0] == "RUNNING"  # not one of the given deployments
        assert state(waiting)[0] == "SCHEDULED"  # waiting for a slot is not in flight
        # the crashed run gave its concurrency slot back: the waiting run may start now
        assert client.set_flow_run_state(waiting.id, Pending()).status.value == "ACCEPT"
    # the run that got the slot is in flight now, and the only one
    assert crash_inflight_runs(_api(), "again", deployments=[deployment]) == [str(waiting.id)]


def test_runs_a_dying_process_marked_crashed_during_the_stop_get_the_stops_message() -> None:
    """``down`` lists the runs in flight, stops the processes, then marks what is left; a run
    whose own process (or worker) marked it Crashed while dying gets the stop's message too."""
    from prefect.states import Completed, Crashed, Running

    from driftloop.stack import inflight_run_ids

    flow_name = f"ingest-{uuid.uuid4().hex[:8]}"
    deployment = f"dep-{uuid.uuid4().hex[:8]}"
    with _client() as client:
        flow_id = client.create_flow_from_name(flow_name)
        dep_id = client.create_deployment(flow_id, deployment)
        killed = client.create_flow_run_from_deployment(dep_id, state=Running())
        finished = client.create_flow_run_from_deployment(dep_id, state=Running())
        still = client.create_flow_run_from_deployment(dep_id, state=Running())
    before = inflight_run_ids(_api(), deployments=[deployment])
    assert sorted(before) == sorted(str(r.id) for r in (killed, finished, still))
    with _client() as client:  # what the stop did to them
        client.set_flow_run_state(
            killed.id, Crashed(message="Process exited with status code -15."), force=True
        )
        client.set_flow_run_state(finished.id, Completed(), force=True)

    crashed = crash_inflight_runs(
        _api(), "the stack stopped", deployments=[deployment], were_running=before
    )

    assert sorted(crashed) == sorted([str(killed.id), str(still.id)])
    with _client() as client:
        states = {
            run_id: (s.type.value, s.message)
            for run_id in (killed.id, finished.id, still.id)
            if (s := client.read_flow_run(run_id).state) is not None
        }
    assert states[killed.id] == ("CRASHED", "the stack stopped")
    assert states[still.id] == ("CRASHED", "the stack stopped")
    assert states[finished.id][0] == "COMPLETED"  # a run that finished keeps its end
