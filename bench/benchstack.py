"""Shared by the stack benchmarks (P4, P8): a real local stack (``driftloop up``) on free
loopback ports with its state in a temporary folder, stopped by PID whatever happens, and a few
REST helpers over the Prefect API the UI uses."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np

from driftloop import api
from driftloop_config.settings import TELEMETRY_OFF

T = TypeVar("T")
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def log(message: str) -> None:
    print(message, flush=True)


def ts(value: str) -> datetime:
    """A timestamp of the Prefect API (ISO 8601, UTC)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def pct(samples: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(samples), q)), 3)


@dataclass
class BenchStack:
    settings: Any
    stack: Any
    http: httpx.Client

    def deployment_id(self, name: str) -> str:
        r = self.http.post("/deployments/filter", json={"deployments": {"name": {"any_": [name]}}})
        r.raise_for_status()
        [dep] = r.json()
        return str(dep["id"])

    def runs(self, deployment_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The newest flow runs of a deployment, newest first."""
        r = self.http.post(
            "/flow_runs/filter",
            json={
                "deployments": {"id": {"any_": [deployment_id]}},
                "sort": "EXPECTED_START_TIME_DESC",
                "limit": limit,
            },
        )
        r.raise_for_status()
        runs: list[dict[str, Any]] = r.json()
        return runs

    def states(self, run_id: str) -> dict[str, datetime]:
        """First time the run entered each state type (SCHEDULED, PENDING, RUNNING, ...)."""
        r = self.http.get("/flow_run_states/", params={"flow_run_id": run_id})
        r.raise_for_status()
        out: dict[str, datetime] = {}
        for s in sorted(r.json(), key=lambda s: s["timestamp"]):
            out.setdefault(s["type"], ts(s["timestamp"]))
        return out

    def log_tail(self, lines: int = 20) -> str:
        out = []
        for proc in self.stack.processes:
            text = Path(proc.log).read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {proc.name} ---\n" + "\n".join(text))
        return "\n".join(out)

    def wait_for(
        self, what: str, check: Callable[[], T | None], timeout: float, every: float = 0.1
    ) -> T:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(every)
        raise TimeoutError(f"{what}: not within {timeout:.0f}s\n{self.log_tail()}")


def use_state(work: Path, usecase: Path | None = None) -> Any:
    """Point driftloop at a lake and a state folder under ``work``; returns the settings."""
    os.environ.update(TELEMETRY_OFF)
    os.environ["DRIFTLOOP_DATA_ROOT"] = str(work / "lake")
    os.environ["DRIFTLOOP_STATE_DIR"] = str(work / "state")
    if usecase is not None:
        os.environ["DRIFTLOOP_USECASE"] = str(usecase)
    from driftloop_config.settings import load_settings

    return load_settings()


@contextmanager
def running_stack(settings: Any) -> Iterator[BenchStack]:
    """``driftloop up`` on free loopback ports; every process it started is stopped by PID."""
    from driftloop.stack import down, free_port, up

    t0 = time.perf_counter()
    try:
        stack = up(settings, prefect_port=free_port(), mlflow_port=free_port(), watch_interval=0.5)
        log(
            f"stack up in {time.perf_counter() - t0:.1f}s: {stack.prefect_url} "
            f"({len(stack.processes)} processes)"
        )
        with api.client(stack.api_url) as http:
            yield BenchStack(settings, stack, http)
    finally:
        stopped = down(settings)
        if stopped:
            log(f"stack down: stopped {len(stopped)} processes by PID")
