"""``driftloop up`` / ``down`` on PostgreSQL-backed Prefect and MLflow servers whose URLs carry a
password: the password reaches the servers (they really use PostgreSQL) but no command line, state
file, log or status output; runs left in flight are marked CRASHED by ``down``, and by ``up``
after a stack died without ``down``."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from driftloop.procs import alive
from driftloop.stack import Stack, down, free_port, read_stack, stack_dir, up
from driftloop_config.settings import Settings, load_settings
from tests.support.services import POSTGRES_HOST, POSTGRES_PORT, require_postgres

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(900)]


def _pg() -> Any:
    import psycopg2

    conn = psycopg2.connect(host=POSTGRES_HOST, port=POSTGRES_PORT, user="postgres")
    conn.autocommit = True
    return conn


def _sql(dbname: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    import psycopg2

    conn = psycopg2.connect(host=POSTGRES_HOST, port=POSTGRES_PORT, user="postgres", dbname=dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            return list(cur.fetchall())
    finally:
        conn.close()


@contextmanager
def _database(name: str) -> Iterator[str]:
    conn = _pg()
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def _group_members(leaders: set[int]) -> dict[int, bytes]:
    """Every live process in the process groups of ``leaders`` (the stack started each in its own
    group, so this includes the servers' and workers' children): PID -> raw command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            pgrp = int(stat.rsplit(")", 1)[1].split()[2])
            if pgrp in leaders:
                found[int(entry.name)] = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
    return found


def _in_flight_run(api_url: str, deployment: str) -> str:
    """A run of ``deployment`` created directly in RUNNING (no worker picks it up)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Running

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(f"{deployment}/{deployment}")
        run = client.create_flow_run_from_deployment(dep.id, state=Running())
        assert run.state is not None and run.state.type.value == "RUNNING"
        return str(run.id)


def _in_flight(prefect_db: str) -> set[str]:
    rows = _sql(
        prefect_db,
        "SELECT r.id::text FROM flow_run r JOIN flow_run_state s ON s.id = r.state_id "
        "WHERE s.type IN ('RUNNING', 'PENDING')",
    )
    return {str(r[0]) for r in rows}


def _state(prefect_db: str, run_id: str) -> tuple[str, str]:
    [(state_type, message)] = _sql(
        prefect_db,
        "SELECT s.type, s.message FROM flow_run r JOIN flow_run_state s ON s.id = r.state_id "
        "WHERE r.id = %s",
        run_id,
    )
    return str(state_type), str(message)


@pytest.fixture
def secret_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Settings, str, str, str]]:
    require_postgres()
    tag = uuid.uuid4().hex[:10]
    password = f"FakePw{tag}"  # trust auth accepts any password
    with (
        _database(f"driftloop_pf_{tag}") as prefect_db,
        _database(f"driftloop_ml_{tag}") as mlflow_db,
    ):
        base = f"postgres:{password}@{POSTGRES_HOST}:{POSTGRES_PORT}"
        monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(tmp_path / "lake"))
        monkeypatch.setenv(
            "DRIFTLOOP_MLFLOW_TRACKING_URI", f"postgresql+psycopg2://{base}/{mlflow_db}"
        )
        monkeypatch.setenv(
            "DRIFTLOOP_PREFECT_DATABASE_URL", f"postgresql+asyncpg://{base}/{prefect_db}"
        )
        monkeypatch.setenv("DRIFTLOOP_REDIS_URL", f"127.0.0.1:6379,db=0,password={password}")
        settings = load_settings()
        try:
            yield settings, password, prefect_db, mlflow_db
        finally:
            down(settings)


def _assert_nowhere(password: str, stack: Stack, settings: Settings) -> None:
    leaders = {p.pid for p in stack.processes}
    members = _group_members(leaders)
    assert leaders <= set(members), "a stack process is not running"
    for pid, cmdline in members.items():
        assert password.encode() not in cmdline, f"PID {pid}: {cmdline!r}"
    assert b"--backend-store-uri" not in b"".join(members.values())
    state = stack_dir(settings) / "stack.json"
    assert password not in state.read_text()
    logs = sorted((stack_dir(settings) / "logs").glob("*.log"))
    assert {p.name for p in logs} >= {"prefect-server.log", "mlflow.log", "deploy.log"}
    for log in logs:
        assert password not in log.read_text(errors="replace"), log.name


def test_secrets_reach_the_servers_but_no_argv_state_file_log_or_status(
    secret_settings: tuple[Settings, str, str, str],
) -> None:
    settings, password, prefect_db, mlflow_db = secret_settings
    stack = up(settings, prefect_port=free_port(), mlflow_port=free_port(), watch_interval=0.5)
    assert stack.crashed_runs == []  # a fresh database: nothing left over

    # the servers got their URLs through the environment: both databases now hold their tables
    assert _sql(prefect_db, "SELECT to_regclass('public.flow_run')::text") == [("flow_run",)]
    assert _sql(mlflow_db, "SELECT to_regclass('public.experiments')::text") == [("experiments",)]
    _assert_nowhere(password, stack, settings)
    recorded = json.loads((stack_dir(settings) / "stack.json").read_text())
    mlflow_cmd = next(p["cmdline"] for p in recorded["processes"] if p["name"] == "mlflow")
    assert mlflow_cmd[1:3] == ["server", "--host"]

    from driftloop.cli import app

    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert (
        f"mlflow_tracking_uri: postgresql+psycopg2://postgres:***@127.0.0.1:5432/{mlflow_db}"
        in result.output
    )
    assert (
        f"prefect_database_url: postgresql+asyncpg://postgres:***@127.0.0.1:5432/{prefect_db}"
        in result.output
    )
    assert password not in result.output

    # a run in flight when the stack stops: `down` marks it crashed before stopping the server
    run_id = _in_flight_run(stack.api_url, "train")
    crashed: list[str] = []
    stopped = down(settings, crashed=crashed)
    assert "prefect-server" in stopped
    # ours, plus any scheduled run (reconcile, score) a worker happened to be running
    assert run_id in crashed
    assert _in_flight(prefect_db) == set()
    for crashed_id in crashed:
        assert _state(prefect_db, crashed_id) == (
            "CRASHED",
            "the local stack was stopped (driftloop down) during the run",
        )
    assert read_stack(settings) is None


def test_up_crashes_runs_a_dead_stack_left_running(
    secret_settings: tuple[Settings, str, str, str],
) -> None:
    settings, password, prefect_db, _ = secret_settings
    first = up(settings, prefect_port=free_port(), mlflow_port=free_port(), watch_interval=0.5)
    left = _in_flight_run(first.api_url, "score")
    # the stack dies without `down` (a crash, a reboot): kill what it started, by PID
    for proc in first.processes:
        os.killpg(proc.pid, signal.SIGKILL)
    for proc in first.processes:
        os.waitpid(proc.pid, 0)
    assert not any(alive(p) for p in first.processes)
    assert _state(prefect_db, left)[0] == "RUNNING"

    second = up(settings, prefect_port=free_port(), mlflow_port=free_port(), watch_interval=0.5)
    # ours, plus any scheduled run a worker of the dead stack happened to be running
    assert left in second.crashed_runs
    for crashed_id in second.crashed_runs:
        assert _state(prefect_db, crashed_id) == (
            "CRASHED",
            "left running when the previous stack stopped; no worker ran it since",
        )
    recorded = json.loads((stack_dir(settings) / "stack.json").read_text())["crashed_runs"]
    assert recorded == second.crashed_runs
    _assert_nowhere(password, second, settings)
