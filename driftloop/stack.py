"""The local stack behind ``make up`` / ``make down``: Prefect server, MLflow UI, work pools,
deployments, one worker per pool and the landing watcher, all on 127.0.0.1.

Everything started is recorded (PID, command line, log file) in ``<state_dir>/stack/stack.json``;
``down`` stops exactly those processes (each was started in its own process group, so a worker's
flow-run subprocesses go with it) and the local Prefect API server the CLI commands share
(:mod:`driftloop.localapi`), and nothing else. How processes are started, checked and stopped by
PID is :mod:`driftloop.procs`. The Prefect server keeps its SQLite database
under ``<state_dir>/stack/prefect`` (``DRIFTLOOP_PREFECT_DATABASE_URL`` selects PostgreSQL).

Secrets stay out of command lines and state files: the database URLs reach the Prefect and MLflow
servers through their environment (``PREFECT_SERVER_DATABASE_CONNECTION_URL``,
``MLFLOW_BACKEND_STORE_URI``), and what ``stack.json`` records is redacted.

Flow runs of the stack's deployments still RUNNING or PENDING when the stack stops (or left so
by a crash) can never finish: ``down`` marks them CRASHED before it stops the server, and ``up``
does the same for any it finds before its workers start. While the stack runs, a flow run whose
process died (its heartbeat stopped) is marked CRASHED by an automation ``up`` creates
(:func:`ensure_zombie_automation`).

The Prefect database stays small and answers writes (:func:`server_env`): workers poll every
:data:`WORKER_QUERY_SECONDS`; a run waiting for its deployment's concurrency slot is retried every
``SLOT_WAIT_SECONDS - WORKER_PREFETCH_SECONDS`` seconds, not on every poll; events are kept
:data:`EVENT_RETENTION` (heartbeats and slot waits :data:`SHORT_EVENT_RETENTION`); finished flow
runs, their logs and artifacts :data:`FLOW_RUN_RETENTION`; concurrency leases live in files under
the stack folder, so a server restart keeps them. :func:`prefect_db_bytes` measures the database.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from driftloop import api
from driftloop.procs import (
    START_TIMEOUT,
    Proc,
    StackError,
    alive,
    bin_path,
    free_port,
    spawn,
    stop,
    wait_http,
)
from driftloop.warmstart import SOCKET_ENV
from driftloop_config.redact import redact
from driftloop_config.settings import PROJECT_ROOT, TELEMETRY_OFF

if TYPE_CHECKING:
    from driftloop_config.settings import Settings

log = logging.getLogger("driftloop.stack")

#: flow deployment -> work pool (prefect.yaml uses the same names)
POOLS = {
    "ingest": "ingest-pool",
    "features": "features-pool",
    "train": "training-pool",
    "score": "scoring-pool",
    "drift": "monitoring-pool",
}
#: how the pools' flow runs start: forked by the warm-start server, or (with none) as
#: ``python -m prefect.engine``, the process worker's own command (driftloop.warmstart)
FLOW_RUN_COMMAND = "python -m driftloop.warmstart"
#: the deployment that compares the lake with what ran and starts what is missing (it shares
#: monitoring-pool, so it has no worker of its own)
CATCH_UP = "reconcile"
#: every deployment of prefect.yaml
DEPLOYMENTS = (*POOLS, CATCH_UP)
#: workers poll this often (Prefect's default is 10 s): an event's run is picked up within ~1 s
#: (a poll is one read of the scheduled runs: five workers make five small reads a second)
WORKER_QUERY_SECONDS = 1
#: workers pick up runs scheduled up to this far ahead (Prefect's default is 10 s)
WORKER_PREFETCH_SECONDS = 5
#: a run refused for its deployment's concurrency slot is rescheduled this far ahead (Prefect:
#: 30 s). Longer than the prefetch, so workers retry it every SLOT_WAIT - PREFETCH seconds instead
#: of on every poll (each retry writes a state and an event)
SLOT_WAIT_SECONDS = 15
#: flow runs send a heartbeat event this often (Prefect's minimum is 30 s)
FLOW_HEARTBEAT_SECONDS = 60
#: a running flow run that missed this many heartbeats is marked CRASHED (a margin for a server
#: that processes events late under load: a live run must never be crashed)
ZOMBIE_MISSED_HEARTBEATS = 5
ZOMBIE_AUTOMATION = "driftloop: crash flow runs whose heartbeat stopped"
HEARTBEAT_EVENT = "prefect.flow-run.heartbeat"
#: the server writes the events it received to its database at least this often (Prefect: 5 s).
#: Automations act on events as they arrive; what reads them back from the API (a replay waiting
#: for the training.due its features run emitted, `driftloop status`) waits for the write.
EVENT_FLUSH_SECONDS = 0.5
EVENT_FLUSH_ENV = "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL"
#: the server records task runs from their state events in writes of up to this many events
#: (Prefect: one write per event, three per task run; each is a transaction, which on SQLite waits
#: for the single writer) ...
TASK_RUN_BATCH = 100
#: ... made at least this often, so a task run's state shows within a second (whole seconds:
#: Prefect reads the interval as an int, and 0 would be a flush loop that never sleeps)
TASK_RUN_FLUSH_SECONDS = 1
#: what every Prefect server of the loop runs with: the stack's, the CLI's local API server and
#: the temporary server of flows run in one process (:func:`tune_temporary_server`)
SERVER_TUNING = {
    EVENT_FLUSH_ENV: str(EVENT_FLUSH_SECONDS),
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": str(TASK_RUN_BATCH),
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": str(TASK_RUN_FLUSH_SECONDS),
}
#: events are deleted after this long (Prefect: 7 days) ...
EVENT_RETENTION = timedelta(days=1)
#: ... and these frequent ones sooner
SHORT_EVENT_RETENTION = {
    HEARTBEAT_EVENT: timedelta(hours=1),
    "prefect.flow-run.AwaitingConcurrencySlot": timedelta(hours=1),
}
#: finished flow runs (with their states, logs and artifacts) are deleted this long after their end
FLOW_RUN_RETENTION = timedelta(days=7)
#: the database vacuum runs this often (Prefect: hourly)
VACUUM_EVERY_SECONDS = 900
#: SQLite: seconds a write waits for the lock before it fails (Prefect: 10)
DATABASE_TIMEOUT_SECONDS = 30
#: concurrency leases in files under PREFECT_HOME (Prefect keeps them in the server's memory)
LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"
#: states of a flow run that is (or claims to be) on its way: with no worker, it never ends
INFLIGHT_STATES = ("RUNNING", "PENDING")


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


def prefect_home(settings: Settings) -> Path:
    return stack_dir(settings) / "prefect"


def prefect_db_path(settings: Settings) -> Path | None:
    """The stack's SQLite Prefect database (None when the server runs on PostgreSQL)."""
    if settings.prefect_database_url:
        return None
    return prefect_home(settings) / "prefect.db"


def prefect_db_bytes(settings: Settings) -> int:
    """Size on disk of the stack's SQLite Prefect database: the file and its write-ahead log
    (0 before the first start, and on PostgreSQL)."""
    path = prefect_db_path(settings)
    if path is None:
        return 0
    wal = path.with_name(path.name + "-wal")
    return sum(p.stat().st_size for p in (path, wal) if p.exists())


def _duration(value: timedelta) -> str:
    """A duration as Prefect's settings read it from the environment (ISO 8601)."""
    return f"PT{int(value.total_seconds())}S"


def warmstart_socket(settings: Settings) -> Path:
    """Where the warm-start server listens: in the stack's folder, or (a Unix socket's path has
    at most 107 bytes) under the temporary folder, named after the stack's folder."""
    path = stack_dir(settings) / "warmstart.sock"
    if len(os.fsencode(path)) <= 100:
        return path
    digest = hashlib.sha256(os.fsencode(stack_dir(settings).resolve())).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"driftloop-{os.getuid()}-{digest}.sock"


def tune_temporary_server() -> None:
    """Give the temporary Prefect server of flows run in this process (the demo's, the tests')
    :data:`SERVER_TUNING`, as the stack's has: set in this process's environment, which the
    server's process inherits, unless the environment sets them already."""
    for key, value in SERVER_TUNING.items():
        os.environ.setdefault(key, value)


#: Feast, when imported (``feast.metrics``), makes a temporary folder for Prometheus' metric files,
#: exports it in these variables and removes it when its process exits; a process started with
#: them writes its own metrics there (prometheus_client's multiprocess mode), and one that outlives
#: the folder's maker (a server a command started) fails on the next metric it makes
PROMETHEUS_DIR_VARS = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")
FEAST_METRICS_PREFIX = "feast_metrics_"


def inheritable_environ() -> dict[str, str]:
    """This process's environment less Feast's own metrics folder (:data:`PROMETHEUS_DIR_VARS`,
    named ``feast_metrics_*``); one set by the user is kept."""
    return {
        k: v
        for k, v in os.environ.items()
        if not (k in PROMETHEUS_DIR_VARS and Path(v).name.startswith(FEAST_METRICS_PREFIX))
    }


def stack_env(settings: Settings, api_url: str) -> dict[str, str]:
    """The environment of every stack process (this one's, less Feast's metrics folder): the
    DRIFTLOOP_* settings as given, the API URL, telemetry off, the project folder for
    prefect.yaml's pull step, how often workers poll and flow runs send heartbeats; this
    interpreter's folder first on PATH (the pools' flow-run command, :data:`FLOW_RUN_COMMAND`,
    runs ``python``) and, with warm starts on, the server's socket."""
    from driftloop_config.settings import ENV_PREFIX, settings_env

    # these settings, not whatever DRIFTLOOP_* variables this process happens to have
    env = {k: v for k, v in inheritable_environ().items() if not k.startswith(ENV_PREFIX)}
    env.update(settings_env(settings))
    env.pop(ENV_PREFIX + "PREFECT_DATABASE_URL", None)  # the server's alone (server_env)
    env.update(TELEMETRY_OFF)
    env.update(
        {
            "PREFECT_API_URL": api_url,
            "PREFECT_HOME": str(prefect_home(settings)),
            "DRIFTLOOP_PROJECT_DIR": str(settings.project_dir),
            "PREFECT_WORKER_QUERY_SECONDS": str(WORKER_QUERY_SECONDS),
            "PREFECT_WORKER_PREFETCH_SECONDS": str(WORKER_PREFETCH_SECONDS),
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(FLOW_HEARTBEAT_SECONDS),
            "PYTHONUNBUFFERED": "1",
            "PATH": os.pathsep.join(
                [str(Path(sys.executable).parent), *filter(None, [env.get("PATH")])]
            ),
        }
    )
    env.pop(SOCKET_ENV, None)
    if settings.warm_start:
        env[SOCKET_ENV] = str(warmstart_socket(settings))
    return env


def server_env(settings: Settings, port: int, *, home: Path | None = None) -> dict[str, str]:
    """The Prefect server's environment: :func:`stack_env` plus where it listens, its database
    (the URL, which may carry a password, goes only here), how long events and finished runs are
    kept, and concurrency leases in files under ``PREFECT_HOME`` (they survive a restart).

    ``home``: another ``PREFECT_HOME`` with its own SQLite database in it (the CLI's local API
    server); by default the stack's (:func:`prefect_home`, its database :func:`prefect_db_path`
    or ``DRIFTLOOP_PREFECT_DATABASE_URL``)."""
    api_url = f"http://127.0.0.1:{port}/api"
    env = stack_env(settings, api_url)
    env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
    sqlite = prefect_db_path(settings) if home is None else home / "prefect.db"
    if home is not None:
        env["PREFECT_HOME"] = str(home)
    env.update(
        {
            "PREFECT_UI_API_URL": api_url,
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": (
                f"sqlite+aiosqlite:///{sqlite}" if sqlite else str(settings.prefect_database_url)
            ),
            # SQLite (WAL, set by Prefect): wait for the write lock rather than fail
            "PREFECT_SERVER_DATABASE_TIMEOUT": str(DATABASE_TIMEOUT_SECONDS),
            "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": str(SLOT_WAIT_SECONDS),
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": LEASE_STORAGE,
            "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": _duration(EVENT_RETENTION),
            **SERVER_TUNING,
            "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
            "PREFECT_SERVER_SERVICES_DB_VACUUM_LOOP_SECONDS": str(VACUUM_EVERY_SECONDS),
            "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": str(
                int(FLOW_RUN_RETENTION.total_seconds())
            ),
            "PREFECT_SERVER_SERVICES_DB_VACUUM_EVENT_RETENTION_OVERRIDES": json.dumps(
                {name: int(kept.total_seconds()) for name, kept in SHORT_EVENT_RETENTION.items()}
            ),
        }
    )
    return env


def create_pools(api_url: str) -> list[str]:
    """The five process work pools; returns those created. Their flow runs start with
    :data:`FLOW_RUN_COMMAND` (the ``command`` job variable's default): an existing pool keeps
    what it has, except that a pool with no command of its own gets that one."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    template["variables"]["properties"]["command"]["default"] = FLOW_RUN_COMMAND
    created = []
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        for pool in POOLS.values():
            try:
                client.create_work_pool(
                    WorkPoolCreate(name=pool, type="process", base_job_template=template)
                )
                created.append(pool)
            except ObjectAlreadyExists:
                existing = client.read_work_pool(pool).base_job_template
                command = existing.get("variables", {}).get("properties", {}).get("command", {})
                if "default" not in command or command["default"] is None:
                    command["default"] = FLOW_RUN_COMMAND
                    client.update_work_pool(pool, WorkPoolUpdate(base_job_template=existing))
    return created


def wait_for_workers(stack: Stack, timeout: float = START_TIMEOUT) -> None:
    """Return once every pool has a worker polling it (the stack is ready for runs)."""
    workers = {
        p.name.removeprefix("worker-"): p for p in stack.processes if p.name.startswith("worker-")
    }
    waiting = set(workers)
    deadline = time.monotonic() + timeout
    with api.client(stack.api_url, timeout=10.0) as http:
        while waiting and time.monotonic() < deadline:
            for pool in sorted(waiting):
                if not alive(workers[pool]):
                    raise StackError(f"the {pool} worker exited; see {workers[pool].log}")
                r = http.post(f"/work_pools/{pool}/workers/filter", json={})
                if r.status_code == 200 and r.json():
                    waiting.discard(pool)
            if waiting:
                time.sleep(0.5)
    if waiting:
        raise StackError(f"no worker registered for {sorted(waiting)} within {timeout:.0f}s")


def wait_warmstart(proc: Proc, path: Path, timeout: float = START_TIMEOUT) -> bool:
    """True once the warm-start server ``proc`` accepts connections on ``path``; False when it
    exits first or does not within ``timeout`` seconds (flow runs then start cold)."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(proc):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                time.sleep(0.2)
                continue
        return True
    return False


def deploy(env: dict[str, str], logs: Path) -> None:
    """``prefect deploy --all`` from the project root (prefect.yaml)."""
    with (logs / "deploy.log").open("ab") as out:
        done = subprocess.run(
            [bin_path("prefect"), "--no-prompt", "deploy", "--all"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    if done.returncode:
        raise StackError(f"prefect deploy --all failed; see {logs / 'deploy.log'}")


def start_catch_up(api_url: str) -> str:
    """Start one run of the reconcile deployment now; returns its id.

    Through Prefect's client, which retries a busy server's 503 and 429 with back-off; the
    idempotency key makes a retried create return the same run instead of a second one.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        [dep] = client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[CATCH_UP]))
        )
        run = client.create_flow_run_from_deployment(
            dep.id,
            # the watcher announced what landed before the restart already: take all of it
            parameters={"params": {"settle_seconds": 5}},
            tags=["catch-up"],
            idempotency_key=f"catch-up-{uuid.uuid4()}",
        )
        return str(run.id)


def inflight_run_ids(api_url: str, *, deployments: Iterable[str] = DEPLOYMENTS) -> list[str]:
    """Ids of the RUNNING or PENDING flow runs of ``deployments``."""
    with api.client(api_url) as http:
        r = http.post(
            "/flow_runs/filter",
            json={
                "flow_runs": {"state": {"type": {"any_": list(INFLIGHT_STATES)}}},
                "deployments": {"name": {"any_": list(deployments)}},
                "limit": 200,
            },
        )
        r.raise_for_status()
        return [str(run["id"]) for run in r.json()]


def crash_inflight_runs(
    api_url: str,
    message: str,
    *,
    deployments: Iterable[str] = DEPLOYMENTS,
    were_running: Iterable[str] = (),
) -> list[str]:
    """Mark every RUNNING or PENDING flow run of ``deployments`` CRASHED (forced, so the server
    also releases the deployment concurrency slots they hold); returns their ids.

    ``were_running``: ids of runs that were in flight before their processes were stopped; those
    that a dying process (or its worker) marked CRASHED meanwhile get ``message`` too, so every
    run the stop ended says why.

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
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        for run_id in were_running:
            state = client.read_flow_run(uuid.UUID(run_id)).state
            if state is not None and state.type == StateType.CRASHED and state.message != message:
                client.set_flow_run_state(uuid.UUID(run_id), Crashed(message=message), force=True)
                crashed.append(run_id)
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


def ensure_zombie_automation(
    api_url: str,
    *,
    heartbeat_seconds: float = FLOW_HEARTBEAT_SECONDS,
    misses: int = ZOMBIE_MISSED_HEARTBEATS,
) -> str:
    """The automation that marks a flow run CRASHED when, after a heartbeat, nothing is heard of
    it (no heartbeat, no state change) for ``misses`` heartbeat intervals: its process died while
    the server kept running. Replaces an earlier one of the same name; returns its id."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification
    from prefect.settings import PREFECT_API_URL, temporary_settings

    within = timedelta(seconds=heartbeat_seconds * misses)
    automation = AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description=f"A flow run silent for {within.total_seconds():.0f}s after a heartbeat "
        "lost its process: mark it crashed (which frees its concurrency slot).",
        trigger=EventTrigger(
            after={HEARTBEAT_EVENT},
            # any sign of the run (heartbeat or state change, final ones included) keeps it alive
            expect={"prefect.flow-run.*"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=within,
        ),
        actions=[
            ChangeFlowRunState(
                name=None,  # the state type's own name: "Crashed"
                force=False,  # a run that finished meanwhile stays finished
                state=StateType.CRASHED,
                message=f"no heartbeat for {within.total_seconds():.0f}s: "
                "the flow run's process is gone",
            )
        ],
    )
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        for old in client.read_automations_by_name(ZOMBIE_AUTOMATION):
            client.delete_automation(old.id)
        return str(client.create_automation(automation))


def start_prefect_server(
    settings: Settings,
    port: int,
    logs: Path,
    *,
    name: str = "prefect-server",
    home: Path | None = None,
) -> Proc:
    """Start the Prefect server on 127.0.0.1:``port`` with :func:`server_env` (not waited for),
    detached (its own session); its output goes to ``<logs>/<name>.log``. ``home``: as in
    :func:`server_env`."""
    (home or prefect_home(settings)).mkdir(parents=True, exist_ok=True)
    return spawn(
        name,
        [bin_path("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        server_env(settings, port, home=home),
        logs,
    )


def wait_for_server(stack: Stack, server: Proc, timeout: float = START_TIMEOUT) -> None:
    wait_http(f"{stack.api_url}/health", server, timeout)


class _Steps:
    """Reports each start-up step with the seconds since the start."""

    def __init__(self, progress: Callable[[str], None] | None) -> None:
        self.progress = progress
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        if self.progress is not None:
            self.progress(f"[{time.monotonic() - self.started:5.1f}s] {message}")


def up(
    settings: Settings,
    *,
    prefect_port: int = 4200,
    mlflow_port: int = 5000,
    watch_interval: float = 2.0,
    progress: Callable[[str], None] | None = None,
) -> Stack:
    """Start the stack (see the module docstring); returns what was started.

    ``progress`` gets one line per step (server, pools, deployments, workers, watcher) with the
    seconds since the start: a first start takes a minute or two.
    """
    step = _Steps(progress)
    existing = read_stack(settings)
    if existing and any(alive(p) for p in existing.processes):
        raise StackError(
            f"the stack is already up ({existing.prefect_url}); `make down` stops it first"
        )
    home = stack_dir(settings)
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    prefect_port = free_port(prefect_port)
    mlflow_port = free_port(mlflow_port)
    stack = Stack(
        prefect_url=f"http://127.0.0.1:{prefect_port}",
        mlflow_url=f"http://127.0.0.1:{mlflow_port}",
    )
    env = stack_env(settings, stack.api_url)
    # the database URLs (which may carry passwords) go to their servers only, by environment
    env.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
    env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
    mlflow_env = dict(env)
    mlflow_env["MLFLOW_BACKEND_STORE_URI"] = settings.tracking_uri
    mlflow_env["MLFLOW_DEFAULT_ARTIFACT_ROOT"] = settings.artifact_root
    # tracking and the registry are all the loop uses: no job runner process (MLflow's GenAI
    # evaluation jobs and trace roll-ups) polling its queue next to the server
    mlflow_env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    try:
        warm = None
        if settings.warm_start:  # its imports take a while: started first, waited for last
            warm = spawn(
                "warmstart",
                [
                    sys.executable,
                    "-m",
                    "driftloop.warmstart",
                    "serve",
                    "--socket",
                    env[SOCKET_ENV],
                    "--root",
                    str(settings.project_dir),
                ],
                env,
                logs,
            )
            stack.processes.append(warm)
        step(f"starting the Prefect server on {stack.prefect_url}")
        server = start_prefect_server(settings, prefect_port, logs)
        stack.processes.append(server)
        _write_stack(settings, stack)
        settings.state_path.mkdir(parents=True, exist_ok=True)
        mlflow = spawn(
            "mlflow",
            [
                bin_path("mlflow"),
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
        wait_for_server(stack, server)
        step("Prefect server is up")
        # no worker has run since the last stack stopped: whatever claims to run is a leftover
        stack.crashed_runs = crash_inflight_runs(
            stack.api_url, "left running when the previous stack stopped; no worker ran it since"
        )
        _write_stack(settings, stack)
        if stack.crashed_runs:
            step(f"marked {len(stack.crashed_runs)} runs left running by the last stack crashed")
        create_pools(stack.api_url)
        ensure_zombie_automation(stack.api_url)
        step(f"work pools {', '.join(POOLS.values())} and the crashed-run automation are ready")
        step("deploying the flows (prefect deploy --all)")
        deploy(env, logs)
        step(f"deployed {', '.join(POOLS)}")
        for deployment, pool in POOLS.items():
            worker = spawn(
                f"worker-{pool}",
                [
                    bin_path("prefect"),
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
        step(f"started {len(POOLS)} workers (one per pool)")
        watcher = spawn(
            "landing-watcher",
            [bin_path("driftloop"), "watch", "--interval", str(watch_interval)],
            env,
            logs,
        )
        stack.processes.append(watcher)
        _write_stack(settings, stack)
        step(f"started the landing watcher on {settings.zone('landing')}")
        wait_http(f"{stack.mlflow_url}/health", mlflow)
        step(f"MLflow is up on {stack.mlflow_url}")
        wait_for_workers(stack)
        step("every pool has a worker polling it")
        if warm is not None:
            if wait_warmstart(warm, Path(env[SOCKET_ENV])):
                step("flow runs start warm (forked from the warm-start server)")
            else:
                step(f"the warm-start server is not serving: flow runs start cold; see {warm.log}")
        start_catch_up(stack.api_url)  # what landed or was due while the stack was down
        step("started a reconcile run to catch up: ready")
    except BaseException:
        down(settings, local_api=False)  # what this start started, not the commands' server
        raise
    return stack


def down(
    settings: Settings,
    *,
    timeout: float = 15.0,
    crashed: list[str] | None = None,
    local_api: bool = True,
) -> list[str]:
    """Stop what ``up`` started (watcher and workers first, the server last), then (``local_api``)
    the local Prefect API server of the CLI commands (:mod:`driftloop.localapi`) if one runs;
    returns the names of what was running.

    Between the two, the flow runs of the stack's deployments still RUNNING or PENDING are marked
    CRASHED (their ids are appended to ``crashed`` when given); an unreachable server is skipped.
    """
    from driftloop import localapi

    stopped: list[str] = []
    stack = read_stack(settings)
    if stack is not None:
        order = sorted(stack.processes, key=lambda p: p.name in ("prefect-server", "mlflow"))
        servers = [p for p in order if p.name in ("prefect-server", "mlflow")]
        were_running: list[str] = []
        if any(p.name == "prefect-server" and alive(p) for p in servers):
            try:
                were_running = inflight_run_ids(stack.api_url)
            except Exception as exc:  # never keep the stack from stopping
                log.warning("could not list in-flight runs: %s", redact(str(exc)))
        for group in ([p for p in order if p.name not in ("prefect-server", "mlflow")], servers):
            if group is servers and any(p.name == "prefect-server" and alive(p) for p in group):
                try:
                    ids = crash_inflight_runs(
                        stack.api_url,
                        "the local stack was stopped (driftloop down) during the run",
                        were_running=were_running,
                    )
                except Exception as exc:  # never keep the stack from stopping
                    log.warning("could not mark in-flight runs crashed: %s", redact(str(exc)))
                else:
                    if crashed is not None:
                        crashed.extend(ids)
            stopped += [p.name for p in stop(group, timeout)]
        stack_file(settings).unlink(missing_ok=True)
    if local_api and localapi.stop_server(settings, timeout=timeout) is not None:
        stopped.append(localapi.SERVER_NAME)
    return stopped


def processes(settings: Settings) -> Iterator[tuple[Proc, bool]]:
    stack = read_stack(settings)
    for p in stack.processes if stack else []:
        yield p, alive(p)


def describe(stack: Stack) -> dict[str, Any]:
    return {
        "prefect_ui": stack.prefect_url,
        "prefect_api": stack.api_url,
        "mlflow_ui": stack.mlflow_url,
        "pools": list(POOLS.values()),
        "processes": {p.name: p.pid for p in stack.processes},
        "crashed_runs": len(stack.crashed_runs),
    }
