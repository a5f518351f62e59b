"""The stack's Prefect server alone (as ``driftloop up`` starts it, with its environment) on a free
port, for tests that need its settings but not the workers; stopped by PID."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from driftloop.procs import Proc, alive, free_port, reap
from driftloop.stack import Stack, stack_dir, start_prefect_server, wait_for_server
from driftloop_config.settings import Settings


class StackServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.logs = stack_dir(settings) / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.stack = Stack(prefect_url=f"http://127.0.0.1:{self.port}", mlflow_url="")
        self.proc: Proc | None = None

    def start(self) -> Proc:
        self.proc = start_prefect_server(self.settings, self.port, self.logs)
        wait_for_server(self.stack, self.proc)
        return self.proc

    def stop(self) -> None:
        """SIGTERM to the server's process group (SIGKILL if it lingers); by PID only."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + 20
            while alive(proc) and time.monotonic() < deadline:
                reap(proc.pid)
                time.sleep(0.2)
            reap(proc.pid)
            if not alive(proc):
                break

    @property
    def url(self) -> str:
        return self.stack.prefect_url

    @property
    def api(self) -> str:
        return self.stack.api_url

    @contextmanager
    def client(self) -> Iterator[Any]:
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.api}), get_client(sync_client=True) as c:
            yield c


@contextmanager
def stack_server(settings: Settings) -> Iterator[StackServer]:
    server = StackServer(settings)
    try:
        server.start()
        yield server
    finally:
        server.stop()
