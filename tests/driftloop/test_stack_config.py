"""The stack's Prefect server as ``driftloop up`` starts it, on a free port: the settings that keep
its database small and unlocked are in its environment and in effect, concurrency leases are files
under the stack folder that survive a restart, and the automation that crashes flow runs whose
heartbeat stopped exists and works. The workers' polling and heartbeat settings are checked in a
process started with the workers' environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from driftloop.stack import (
    FEAST_METRICS_PREFIX,
    FLOW_HEARTBEAT_SECONDS,
    LEASE_STORAGE,
    SERVER_TUNING,
    SLOT_WAIT_SECONDS,
    TASK_RUN_BATCH,
    TASK_RUN_FLUSH_SECONDS,
    WORKER_PREFETCH_SECONDS,
    WORKER_QUERY_SECONDS,
    ZOMBIE_AUTOMATION,
    ZOMBIE_MISSED_HEARTBEATS,
    crash_inflight_runs,
    ensure_zombie_automation,
    prefect_db_bytes,
    prefect_db_path,
    prefect_home,
    stack_env,
)
from driftloop_config.settings import Settings
from tests.support.prefect_server import StackServer, stack_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def server(local_settings: Settings) -> Iterator[StackServer]:
    with stack_server(local_settings) as srv:
        yield srv


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_the_server_runs_with_retention_vacuum_sqlite_and_file_leases(server: StackServer) -> None:
    settings = server.settings
    db = prefect_db_path(settings)
    assert db == prefect_home(settings) / "prefect.db"
    assert server.proc is not None
    env = _environ(server.proc.pid)
    assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == f"sqlite+aiosqlite:///{db}"
    assert env["PREFECT_HOME"] == str(prefect_home(settings))

    # what the server itself runs with (the settings it reports, as the UI's settings page)
    got = httpx.get(f"{server.api}/admin/settings", timeout=30).json()
    srv = got["server"]
    assert srv["events"]["retention_period"] == "P1D"
    vacuum = srv["services"]["db_vacuum"]
    assert sorted(vacuum["enabled"]) == ["events", "flow_runs"]
    assert vacuum["loop_seconds"] == 900
    assert vacuum["retention_period"] == "P7D"
    assert vacuum["event_retention_overrides"] == {
        "prefect.flow-run.heartbeat": "PT1H",
        "prefect.flow-run.AwaitingConcurrencySlot": "PT1H",
    }
    assert srv["concurrency"]["lease_storage"] == LEASE_STORAGE
    assert srv["deployments"]["concurrency_slot_wait_seconds"] == SLOT_WAIT_SECONDS
    assert srv["database"]["timeout"] == 30
    recorder = srv["services"]["task_run_recorder"]
    assert (recorder["batch_size"], recorder["flush_interval"]) == (TASK_RUN_BATCH, 1)
    assert got["home"] == str(prefect_home(settings))

    # the server writes the SQLite file under the stack folder; its size is measurable
    assert db is not None and db.exists()
    wal = db.with_name("prefect.db-wal")
    expected = db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    assert prefect_db_bytes(settings) == expected > 0


def test_workers_poll_every_second_and_flow_runs_send_heartbeats(local_settings: Settings) -> None:
    env = stack_env(local_settings, "http://127.0.0.1:9/api")
    code = (
        "import json\n"
        "from prefect.settings import get_current_settings\n"
        "s = get_current_settings()\n"
        "print(json.dumps([s.worker.query_seconds, s.worker.prefetch_seconds,"
        " s.worker.heartbeat_seconds, s.flows.heartbeat_frequency]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [
        WORKER_QUERY_SECONDS,
        WORKER_PREFETCH_SECONDS,
        30,  # Prefect's default worker heartbeat
        FLOW_HEARTBEAT_SECONDS,
    ]
    assert (WORKER_QUERY_SECONDS, WORKER_PREFETCH_SECONDS, SLOT_WAIT_SECONDS) == (1, 5, 15)


def test_stack_processes_do_not_inherit_feasts_metrics_folder(local_settings: Settings) -> None:
    # Feast sets the folder's variables when it is imported, in the importing process: a server
    # a command starts would write there and fail once the command exits and Feast removes it
    code = (
        "import json, os, feast.metrics\n"
        "from driftloop.stack import stack_env\n"
        "from driftloop_config.settings import load_settings\n"
        "env = stack_env(load_settings(), 'http://127.0.0.1:9/api')\n"
        "names = ('PROMETHEUS_MULTIPROC_DIR', 'PROMETHEUS_MULTIPROCESS_DIR')\n"
        "print(json.dumps([[os.environ.get(n) for n in names], [env.get(n) for n in names]]))\n"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=base, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    made, passed = json.loads(out.stdout.strip().splitlines()[-1])
    assert made[0] == made[1] and Path(made[0]).name.startswith(FEAST_METRICS_PREFIX)
    assert passed == [None, None]
    assert not Path(made[0]).exists()  # the importing process removed it as it exited

    # a folder the user chose for multiprocess metrics is theirs to keep
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROMETHEUS_MULTIPROC_DIR", "/var/lib/metrics")
        env = stack_env(local_settings, "http://127.0.0.1:9/api")
    assert env["PROMETHEUS_MULTIPROC_DIR"] == "/var/lib/metrics"


def test_a_concurrency_lease_survives_a_server_restart(server: StackServer) -> None:
    from prefect.states import Pending, Running, Scheduled

    with server.client() as client:
        flow_id = client.create_flow_from_name("train")
        dep_id = client.create_deployment(flow_id, "train", concurrency_limit=1)
        running = client.create_flow_run_from_deployment(dep_id, state=Scheduled())
        assert client.set_flow_run_state(running.id, Pending()).status.value == "ACCEPT"
        assert client.set_flow_run_state(running.id, Running()).status.value == "ACCEPT"
        lease_id = client.read_flow_run(
            running.id
        ).state.state_details.deployment_concurrency_lease_id
        waiting = client.create_flow_run_from_deployment(dep_id, state=Scheduled())
    assert lease_id is not None
    lease_file = prefect_home(server.settings) / "concurrency_leases" / f"{lease_id}.json"
    assert lease_file.exists()

    server.stop()
    server.start()

    # the restarted server still knows the lease (in memory it would be gone: 410)
    r = httpx.post(
        f"{server.api}/v2/concurrency_limits/leases/{lease_id}/renew",
        json={"lease_duration": 300},
        timeout=30,
    )
    assert r.status_code == 204, r.text
    with server.client() as client:
        # the slot is still held: the next run waits
        assert client.set_flow_run_state(waiting.id, Pending()).status.value == "REJECT"
    assert crash_inflight_runs(server.api, "stopped", deployments=["train"]) == [str(running.id)]
    assert not lease_file.exists()
    with server.client() as client:
        assert client.set_flow_run_state(waiting.id, Pending()).status.value == "ACCEPT"


def test_the_crashed_run_automation_crashes_a_run_whose_heartbeat_stopped(
    server: StackServer,
) -> None:
    from prefect.states import Completed, Running

    first = ensure_zombie_automation(server.api)
    automations = httpx.post(f"{server.api}/automations/filter", json={}, timeout=30).json()
    [auto] = [a for a in automations if a["name"] == ZOMBIE_AUTOMATION]
    assert auto["id"] == first
    trigger = auto["trigger"]
    assert (trigger["posture"], trigger["after"], trigger["expect"]) == (
        "Proactive",
        ["prefect.flow-run.heartbeat"],
        ["prefect.flow-run.*"],
    )
    assert trigger["within"] == FLOW_HEARTBEAT_SECONDS * ZOMBIE_MISSED_HEARTBEATS
    assert trigger["for_each"] == ["prefect.resource.id"]
    assert [(a["type"], a["state"]) for a in auto["actions"]] == [
        ("change-flow-run-state", "CRASHED")
    ]

    # created again (every `up`): replaced, not doubled; here with a 10 s window
    second = ensure_zombie_automation(server.api, heartbeat_seconds=5, misses=2)
    automations = httpx.post(f"{server.api}/automations/filter", json={}, timeout=30).json()
    assert [a["id"] for a in automations if a["name"] == ZOMBIE_AUTOMATION] == [second]

    with server.client() as client:
        flow_id = client.create_flow_from_name("score")
        dep_id = client.create_deployment(flow_id, "score")
        finished = client.create_flow_run_from_deployment(dep_id, state=Running())
        zombie = client.create_flow_run_from_deployment(dep_id, state=Running())

    def heartbeat(run_id: Any) -> None:
        r = httpx.post(
            f"{server.api}/events",
            json=[
                {
                    "id": str(uuid.uuid4()),
                    "occurred": datetime.now(UTC).isoformat(),
                    "event": "prefect.flow-run.heartbeat",
                    "resource": {"prefect.resource.id": f"prefect.flow-run.{run_id}"},
                }
            ],
            timeout=30,
        )
        assert r.status_code < 300, r.text

    heartbeat(finished.id)
    with server.client() as client:
        client.set_flow_run_state(finished.id, Completed())
    heartbeat(zombie.id)  # ... and then nothing: its process is gone

    deadline = time.monotonic() + 180
    with server.client() as client:
        state = client.read_flow_run(zombie.id).state
        while state.type.value == "RUNNING" and time.monotonic() < deadline:
            time.sleep(1.0)
            state = client.read_flow_run(zombie.id).state
        assert (state.type.value, state.message) == (
            "CRASHED",
            "no heartbeat for 10s: the flow run's process is gone",
        )
        assert client.read_flow_run(finished.id).state.type.value == "COMPLETED"


def test_make_up_passes_the_ports_to_driftloop_up() -> None:
    from driftloop_config.settings import PROJECT_ROOT

    def planned(*args: str) -> list[str]:
        out = subprocess.run(
            ["make", "-n", "up", *args],
            cwd=PROJECT_ROOT,
            env={k: v for k, v in os.environ.items() if k not in ("PREFECT_PORT", "MLFLOW_PORT")},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return [line for line in out.stdout.splitlines() if "driftloop up" in line]

    assert planned("PREFECT_PORT=4300", "MLFLOW_PORT=5300") == [
        ".venv/bin/driftloop up --prefect-port 4300 --mlflow-port 5300"
    ]
    assert planned() == [".venv/bin/driftloop up --prefect-port 4200 --mlflow-port 5000"]


@pytest.mark.usefixtures("prefect_harness")
def test_flows_run_in_process_record_every_task_run_in_batches() -> None:
    """The temporary server of in-process flows (here the tests') runs with the stack's
    :data:`SERVER_TUNING`; batched, every task run is still recorded with its final state: 250
    tasks (750 state events, several full batches and a partial one that only the periodic flush
    writes)."""
    from prefect import flow, task
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_API_URL

    api = str(PREFECT_API_URL.value())
    assert {k: os.environ[k] for k in SERVER_TUNING} == SERVER_TUNING
    got = httpx.get(f"{api}/admin/settings", timeout=30).json()
    recorder = got["server"]["services"]["task_run_recorder"]
    assert (recorder["batch_size"], recorder["flush_interval"]) == (
        TASK_RUN_BATCH,
        TASK_RUN_FLUSH_SECONDS,
    )

    @task(name="square")
    def square(i: int) -> int:
        return i * i

    @flow(name="many-tasks")
    def many(n: int) -> tuple[str, int]:
        return str(flow_run.get_id()), sum(square(i) for i in range(n))

    run_id, total = many(250)
    assert total == sum(i * i for i in range(250))

    def count(state: str | None = None) -> int:
        body: dict[str, Any] = {"flow_runs": {"id": {"any_": [run_id]}}}
        if state is not None:
            body["task_runs"] = {"state": {"name": {"any_": [state]}}}
        return int(httpx.post(f"{api}/task_runs/count", json=body, timeout=30).json())

    deadline = time.monotonic() + 60  # bounded: a lost event would leave a run behind forever
    while count("Completed") < 250 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (count(), count("Completed")) == (250, 250)
