"""The Prefect API a ``driftloop`` command talks to (:func:`ensure_api`).

Without ``PREFECT_API_URL``, Prefect starts a temporary server inside every process that runs a
flow: 20–60 s under load, sometimes a start-up time-out, and a server left running when the
command is stopped with SIGTERM. A CLI command asks :func:`ensure_api` first, which takes, in
this order:

1. the API Prefect is already configured with: ``PREFECT_API_URL`` in the environment, a Prefect
   profile, or the settings of the caller (a test harness in the same process);
2. the local stack's API (``driftloop up``) when its server process is alive and answers
   ``/api/health``;
3. the local API server: one per state folder, shared by every command and kept running after
   them. The first command that needs it starts it (detached: its own session, so a Ctrl-C of the
   command does not stop it; SQLite under ``<state_dir>/localapi/prefect``, telemetry off,
   127.0.0.1 on a free port) and records it in ``<state_dir>/localapi/server.json`` (PID, its
   kernel start time, command line, port, log file); later commands reuse it while it is alive
   and healthy, and start a new one when it is not. A file lock makes two commands starting at
   once end up with one server. ``driftloop down`` stops it (:func:`stop_server`, by PID).

The URL of 2. or 3. is exported as ``PREFECT_API_URL`` for the rest of the process (and the
processes it starts); the one of 1. is already what Prefect uses. A SIGINT or SIGTERM that arrives while the server is being started waits until the
server is recorded: whatever happens, a started server is in the state file, where the next
command finds it and ``down`` stops it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import httpx

from driftloop import api
from driftloop.procs import START_TIMEOUT, Proc, StackError, alive, free_port, stop, wait_http

if TYPE_CHECKING:
    from driftloop_config.settings import Settings

log = logging.getLogger("driftloop.localapi")

#: the local API server's name in its state file, its log file and what ``down`` reports
SERVER_NAME = "local-prefect-api"
#: seconds a health check of a running server may take (a busy server is waited out)
HEALTH_TIMEOUT = 10.0


@dataclass
class LocalServer:
    """The local API server as recorded in its state file."""

    port: int
    proc: Proc

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"


def localapi_dir(settings: Settings) -> Path:
    return settings.state_path / "localapi"


def server_file(settings: Settings) -> Path:
    return localapi_dir(settings) / "server.json"


def lock_file(settings: Settings) -> Path:
    return localapi_dir(settings) / "server.lock"


def prefect_home(settings: Settings) -> Path:
    """The server's ``PREFECT_HOME``; its SQLite database is ``prefect.db`` in it."""
    return localapi_dir(settings) / "prefect"


def read_server(settings: Settings) -> LocalServer | None:
    """The recorded server (alive or not), or None."""
    try:
        raw = json.loads(server_file(settings).read_text())
        return LocalServer(port=int(raw["port"]), proc=Proc(**raw["proc"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:  # written atomically: unexpected
        log.warning("ignoring the unreadable %s: %s", server_file(settings), exc)
        return None


def _write_server(settings: Settings, server: LocalServer) -> None:
    path = server_file(settings)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**asdict(server), "api_url": server.api_url}, indent=2))
    tmp.replace(path)


@contextmanager
def _locked(settings: Settings, timeout: float = START_TIMEOUT + 30.0) -> Iterator[None]:
    """Hold the state folder's lock (one command at a time starts, checks or stops the server)."""
    localapi_dir(settings).mkdir(parents=True, exist_ok=True)
    with lock_file(settings).open("a") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StackError(
                        f"another driftloop command held {lock_file(settings)} for more than "
                        f"{timeout:.0f}s"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive inside the block take effect when it ends (as they would
    have: KeyboardInterrupt, or the process ends): what the block starts, it also records."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread, and only it gets signals
        return
    held: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        for signum in dict.fromkeys(held):
            signal.raise_signal(signum)


def healthy(api_url: str, timeout: float = HEALTH_TIMEOUT) -> bool:
    """The Prefect API at ``api_url`` answers ``/health`` (a busy server is waited out)."""
    try:
        with api.client(api_url, timeout=timeout) as http:
            return http.get("/health").status_code == 200
    except httpx.HTTPError:
        return False


def running_server(settings: Settings) -> LocalServer | None:
    """The recorded server when its process still runs (checked by PID and start time); starts
    nothing."""
    server = read_server(settings)
    return server if server is not None and alive(server.proc) else None


def ensure_server(settings: Settings, *, timeout: float = START_TIMEOUT) -> LocalServer:
    """The local API server of ``settings``' state folder, healthy: the recorded one when it is
    alive and answers, otherwise a new one (a recorded one that does not answer is stopped)."""
    with _locked(settings):
        server = read_server(settings)
        if server is not None and alive(server.proc):
            try:  # answers at once, unless another command started it a moment ago
                wait_http(f"{server.api_url}/health", server.proc, timeout)
                return server
            except StackError as exc:
                log.warning("restarting the local Prefect API server: %s", exc)
                stop([server.proc])
        server_file(settings).unlink(missing_ok=True)
        from driftloop.stack import start_prefect_server

        port = free_port()
        with _signals_held():  # started and recorded, or neither
            proc = start_prefect_server(
                settings,
                port,
                localapi_dir(settings),
                name=SERVER_NAME,
                home=prefect_home(settings),
            )
            server = LocalServer(port=port, proc=proc)
            _write_server(settings, server)
        try:
            wait_http(f"{server.api_url}/health", proc, timeout)
        except StackError:
            stop([proc])
            server_file(settings).unlink(missing_ok=True)
            raise
        return server


def stop_server(settings: Settings, *, timeout: float = 15.0) -> Proc | None:
    """Stop the recorded local API server (its process group; by PID, after checking the PID's
    start time) and forget it; returns it, or None when none was running."""
    if not server_file(settings).exists():
        return None
    with _locked(settings):
        server = read_server(settings)
        stopped = stop([server.proc], timeout) if server is not None else []
        server_file(settings).unlink(missing_ok=True)
    return server.proc if server is not None and stopped else None


def _configured() -> str | None:
    """The API Prefect would use as it is configured (environment, profile, or the caller's
    temporary settings), or None."""
    url = os.environ.get("PREFECT_API_URL")
    if url:
        return url
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def _stack_api(settings: Settings) -> str | None:
    """The running local stack's API, when its server is alive and answers."""
    from driftloop.stack import read_stack

    stack = read_stack(settings)
    if stack is None:
        return None
    server = next((p for p in stack.processes if p.name == "prefect-server"), None)
    if server is None or not alive(server) or not healthy(stack.api_url):
        return None
    return stack.api_url


def _export(url: str) -> None:
    os.environ["PREFECT_API_URL"] = url
    if "prefect.context" in sys.modules:  # its settings were read before: read them again
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()


def ensure_api(settings: Settings, *, timeout: float = START_TIMEOUT) -> str:
    """The Prefect API URL this process should use, exported as ``PREFECT_API_URL`` (see the
    module docstring for the order); :class:`~driftloop.procs.StackError` when the local API
    server cannot be started."""
    url = _configured()
    if url:
        return url
    url = _stack_api(settings) or ensure_server(settings, timeout=timeout).api_url
    _export(url)
    return url
