"""The local stack behind ``make up`` / ``make down``: Prefect server, MLflow UI, work pools,
deployments, one worker per pool and the landing watcher, all on 127.0.0.1.

Everything started is recorded (PID, command line, log file) in ``<state_dir>/stack/stack.json``;
``down`` stops exactly those processes (each was started in its own process group, so a worker's
flow-run subprocesses go with it) and nothing else. The Prefect server keeps its SQLite database
under ``<state_dir>/stack/prefect`` (``DRIFTLOOP_PREFECT_DATABASE_URL`` selects PostgreSQL).

Secrets stay out of command lines and state files: the database URLs reach the Prefect and MLflow
servers through their environment (``PREFECT_SERVER_DATABASE_CONNECTION_URL``,
``MLFLOW_BACKEND_STORE_URI``), and what ``stack.json`` records is redacted.

Flow runs of the stack's deployments still RUNNING or PENDING when the stack stops (or left so
by a crash) can never finish: ``down`` marks them CRASHED before it stops the server, and ``up``
does the same for any it finds before its workers start.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import closing, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from driftloop.redact import redact
from driftloop.settings import PROJECT_ROOT, TELEMETRY_OFF

if TYPE_CHECKING:
    from driftloop.settings import Settings

log = logging.getLogger("driftloop.stack")

#: flow deployment -> work pool (prefect.yaml uses the same names)
POOLS = {
    "ingest": "ingest-pool",
    "features": "features-pool",
    "train": "training-pool",
    "score": "scoring-pool",
    "drift": "monitoring-pool",
}
#: workers poll this often (Prefect's default is 10 s): an event's run starts within ~1 s
WORKER_QUERY_SECONDS = 1
START_TIMEOUT = 120.0
#: states of a flow run that is (or claims to be) on its way: with no worker, it never ends
INFLIGHT_STATES = ("RUNNING", "PENDING")


class StackError(RuntimeError):
    """The stack cannot be started or stopped as asked."""


@dataclass
class Proc:
    name: str
    pid: int
    cmdline: list[str]
    log: str
    started: int | None = None  # kernel start time of the PID: tells it from a reused PID


@dataclass
class Stack:
    prefect_url: str
    mlflow_url: str
    processes: list[Proc] = field(default_factory=list)
    #: runs left in flight by a previous stack, marked CRASHED when this one started
    crashed_runs: list[str] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"{self.prefect_url}/api"


def stack_dir(settings: Settings) -> Path:
    return settings.state_path / "stack"


def stack_file(settings: Settings) -> Path:
    return stack_dir(settings) / "stack.json"


def read_stack(settings: Settings) -> Stack | None:
    path = stack_file(settings)
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    return Stack(
        prefect_url=raw["prefect_url"],
        mlflow_url=raw["mlflow_url"],
        processes=[Proc(**p) for p in raw["processes"]],
        crashed_runs=list(raw.get("crashed_runs", [])),
    )


def _write_stack(settings: Settings, stack: Stack) -> None:
    path = stack_file(settings)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(stack), indent=2))  # Proc command lines are redacted
    tmp.replace(path)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port(preferred: int = 0, host: str = "127.0.0.1") -> int:
    """``preferred`` when it is free, otherwise a free port the OS picks."""
    if preferred and port_is_free(preferred, host):
        return preferred
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) of a PID from /proc, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()  # the command name may contain spaces
    return fields[0], int(fields[19])


def _alive(proc: Proc) -> bool:
    """The recorded process still runs and is the one we started (not a reused PID)."""
    if not Path("/proc").is_dir():  # no /proc (macOS): trust the PID
        try:
            os.kill(proc.pid, 0)
        except OSError:
            return False
        return True
    stat = _proc_stat(proc.pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return proc.started is None or stat[1] == proc.started


def stack_env(settings: Settings, api_url: str) -> dict[str, str]:
    """The environment of every stack process: the DRIFTLOOP_* settings as given, the API URL,
    telemetry off, and the project folder for prefect.yaml's pull step."""
    env = dict(os.environ)
    env.update(TELEMETRY_OFF)
    env.update(
        {
            "PREFECT_API_URL": api_url,
            "PREFECT_HOME": str(stack_dir(settings) / "prefect"),
            "DRIFTLOOP_PROJECT_DIR": str(settings.project_dir),
            "PREFECT_WORKER_QUERY_SECONDS": str(WORKER_QUERY_SECONDS),
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _spawn(name: str, cmd: list[str], env: dict[str, str], logs: Path) -> Proc:
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            cmd,
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    stat = _proc_stat(popen.pid)
    return Proc(
        name=name,
        pid=popen.pid,
        cmdline=[redact(arg) for arg in cmd],
        log=str(log),
        started=stat[1] if stat else None,
    )


def _wait_http(url: str, proc: Proc, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(proc):
            raise StackError(f"{proc.name} exited during start-up; see {proc.log}")
        try:
            if httpx.get(url, timeout=2.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise StackError(f"{proc.name} did not answer at {url} within {timeout:.0f}s; see {proc.log}")


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def create_pools(api_url: str) -> list[str]:
    """The five process work pools (existing ones are kept as they are)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.settings import PREFECT_API_URL, temporary_settings

    created = []
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        for pool in POOLS.values():
            try:
                client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
                created.append(pool)
            except ObjectAlreadyExists:
                pass
    return created


def wait_for_workers(stack: Stack, timeout: float = START_TIMEOUT) -> None:
    """Return once every pool has a worker polling it (the stack is ready for runs)."""
    workers = {
        p.name.removeprefix("worker-"): p for p in stack.processes if p.name.startswith("worker-")
    }
    waiting = set(workers)
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=stack.api_url, timeout=10.0) as http:
        while waiting and time.monotonic() < deadline:
            for pool in sorted(waiting):
                if not _alive(workers[pool]):
                    raise StackError(f"the {pool} worker exited; see {workers[pool].log}")
                r = http.post(f"/work_pools/{pool}/workers/filter", json={})
                if r.status_code == 200 and r.json():
                    waiting.discard(pool)
            if waiting:
                time.sleep(0.5)
    if waiting:
        raise StackError(f"no worker registered for {sorted(waiting)} within {timeout:.0f}s")


def deploy(env: dict[str, str], logs: Path) -> None:
    """``prefect deploy --all`` from the project root (prefect.yaml)."""
    with (logs / "deploy.log").open("ab") as out:
        done = subprocess.run(
            [_bin("prefect"), "--no-prompt", "deploy", "--all"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    if done.returncode:
        raise StackError(f"prefect deploy --all failed; see {logs / 'deploy.log'}")


def crash_inflight_runs(
    api_url: str, message: str, *, deployments: Iterable[str] = tuple(POOLS)
) -> list[str]:
    """Mark every RUNNING or PENDING flow run of ``deployments`` CRASHED (forced, so the server
    also releases the deployment concurrency slots they hold); returns their ids.

    Only for when no worker can be running them (the stack is stopping or not yet started).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Crashed

    crashed: list[str] = []
    in_flight = FlowRunFilter(
        state=FlowRunFilterState(
            type=FlowRunFilterStateType(any_=[StateType(s) for s in INFLIGHT_STATES])
        )
    )
    of_stack = DeploymentFilter(name=DeploymentFilterName(any_=list(deployments)))
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        while True:
            runs = [
                r
                for r in client.read_flow_runs(
                    flow_run_filter=in_flight, deployment_filter=of_stack, limit=200
                )
                if str(r.id) not in crashed
            ]
            if not runs:
                return crashed
            for run in runs:
                client.set_flow_run_state(run.id, Crashed(message=message), force=True)
                crashed.append(str(run.id))


def up(
    settings: Settings,
    *,
    prefect_port: int = 4200,
    mlflow_port: int = 5000,
    watch_interval: float = 2.0,
) -> Stack:
    """Start the stack (see the module docstring); returns what was started."""
    existing = read_stack(settings)
    if existing and any(_alive(p) for p in existing.processes):
        raise StackError(
            f"the stack is already up ({existing.prefect_url}); `make down` stops it first"
        )
    home = stack_dir(settings)
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (home / "prefect").mkdir(exist_ok=True)
    prefect_port = free_port(prefect_port)
    mlflow_port = free_port(mlflow_port)
    stack = Stack(
        prefect_url=f"http://127.0.0.1:{prefect_port}",
        mlflow_url=f"http://127.0.0.1:{mlflow_port}",
    )
    env = stack_env(settings, stack.api_url)
    env["PREFECT_UI_API_URL"] = stack.api_url
    env["PREFECT_SERVER_API_HOST"] = "127.0.0.1"
    env["PREFECT_SERVER_API_PORT"] = str(prefect_port)
    # a run waiting for its deployment's concurrency slot retries after 2 s (default 30 s)
    env["PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS"] = "2"
    # SQLite: wait for the write lock rather than fail when workers and flows write at once
    env["PREFECT_SERVER_DATABASE_TIMEOUT"] = "30"
    # the database URLs (which may carry passwords) go to their servers only, by environment
    server_env = dict(env)
    if settings.prefect_database_url:
        server_env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = settings.prefect_database_url
        server_env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
    mlflow_env = dict(env)
    mlflow_env["MLFLOW_BACKEND_STORE_URI"] = settings.tracking_uri
    mlflow_env["MLFLOW_DEFAULT_ARTIFACT_ROOT"] = settings.artifact_root
    try:
        server = _spawn(
            "prefect-server",
            [
                _bin("prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(prefect_port),
            ],
            server_env,
            logs,
        )
        stack.processes.append(server)
        _write_stack(settings, stack)
        settings.state_path.mkdir(parents=True, exist_ok=True)
        mlflow = _spawn(
            "mlflow",
            [
                _bin("mlflow"),
                "server",  # store and artifact root: MLFLOW_* in its environment
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
                "--workers",
                "1",
            ],
            mlflow_env,
            logs,
        )
        stack.processes.append(mlflow)
        _write_stack(settings, stack)
        _wait_http(f"{stack.api_url}/health", server)
        # no worker has run since the last stack stopped: whatever claims to run is a leftover
        stack.crashed_runs = crash_inflight_runs(
            stack.api_url, "left running when the previous stack stopped; no worker ran it since"
        )
        _write_stack(settings, stack)
        create_pools(stack.api_url)
        deploy(env, logs)
        for deployment, pool in POOLS.items():
            worker = _spawn(
                f"worker-{pool}",
                [
                    _bin("prefect"),
                    "worker",
                    "start",
                    "--pool",
                    pool,
                    "--type",
                    "process",
                    "--name",
                    f"driftloop-{deployment}",
                ],
                env,
                logs,
            )
            stack.processes.append(worker)
        watcher = _spawn(
            "landing-watcher",
            [_bin("driftloop"), "watch", "--interval", str(watch_interval)],
            env,
            logs,
        )
        stack.processes.append(watcher)
        _write_stack(settings, stack)
        _wait_http(f"{stack.mlflow_url}/health", mlflow)
        wait_for_workers(stack)
    except BaseException:
        down(settings)
        raise
    return stack


def _signal_group(pid: int, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _wait_gone(procs: list[Proc], timeout: float) -> list[Proc]:
    deadline = time.monotonic() + timeout
    left = [p for p in procs if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if _alive(p)]
    return left


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our child (tests start the stack in-process)."""
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def down(
    settings: Settings, *, timeout: float = 15.0, crashed: list[str] | None = None
) -> list[str]:
    """Stop what ``up`` started (watcher and workers first, the server last); returns names.

    Between the two, the flow runs of the stack's deployments still RUNNING or PENDING are marked
    CRASHED (their ids are appended to ``crashed`` when given); an unreachable server is skipped.
    """
    stack = read_stack(settings)
    if stack is None:
        return []
    stopped: list[str] = []
    order = sorted(stack.processes, key=lambda p: p.name in ("prefect-server", "mlflow"))
    servers = [p for p in order if p.name in ("prefect-server", "mlflow")]
    for group in ([p for p in order if p.name not in ("prefect-server", "mlflow")], servers):
        if group is servers and any(p.name == "prefect-server" and _alive(p) for p in group):
            try:
                ids = crash_inflight_runs(
                    stack.api_url, "the local stack was stopped (driftloop down) during the run"
                )
            except Exception as exc:  # never keep the stack from stopping
                log.warning("could not mark in-flight runs crashed: %s", redact(str(exc)))
            else:
                if crashed is not None:
                    crashed.extend(ids)
        alive = [p for p in group if _alive(p)]
        for p in alive:
            _signal_group(p.pid, signal.SIGTERM)
        for p in alive:
            _reap(p.pid)
        left = _wait_gone(alive, timeout)
        for p in left:
            _signal_group(p.pid, signal.SIGKILL)
        for p in alive:
            _reap(p.pid)
        if _wait_gone(left, 5.0):
            raise StackError(f"could not stop {[p.name for p in left]}")
        stopped += [p.name for p in alive]
    stack_file(settings).unlink(missing_ok=True)
    return stopped


def processes(settings: Settings) -> Iterator[tuple[Proc, bool]]:
    stack = read_stack(settings)
    for p in stack.processes if stack else []:
        yield p, _alive(p)


def describe(stack: Stack) -> dict[str, Any]:
    return {
        "prefect_ui": stack.prefect_url,
        "prefect_api": stack.api_url,
        "mlflow_ui": stack.mlflow_url,
        "pools": list(POOLS.values()),
        "processes": {p.name: p.pid for p in stack.processes},
        "crashed_runs": len(stack.crashed_runs),
    }
