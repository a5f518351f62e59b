"""A real local stack (``driftloop up``) over a small simulated telco, for the deployment tests.

History is ingested and featurised in-process first (under the session's test harness, so none
of its events reach the stack); the stack is then started on free ports, and the tests land the
next day's files and watch the deployments react. :func:`running_stack` stops every process it
started (by PID) whatever happens.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from driftloop import api
from driftloop.stack import Stack, down, free_port, up
from driftloop_config.settings import Settings, load_settings
from tasks.storage import Lake, Storage
from tests.support.usecases import usecase_with

START = date(2026, 1, 1)
T = TypeVar("T")

#: a use case whose first model is due after two weeks of data (short horizon and delay)
SMALL_LOOP: dict[str, dict[str, Any]] = {
    "target": {"horizon_days": 3, "label_delay_days": 2},
    "model": {
        "floor": 0.5,
        "min_history_days": 0,
        "holdout_days": 2,
        "validation_days": 2,
        "bootstrap_samples": 100,
        # a small world: the first due day's splits hold ~17 / 11 / 9 positives
        "min_train_positives": 10,
        "min_validation_positives": 5,
        "min_holdout_positives": 5,
    },
}


@dataclass
class LocalStack:
    settings: Settings
    stack: Stack
    lake: Lake
    feed: Storage  # the simulated files, landed into landing/ by the tests
    due_day: date  # landing this day's files makes the first training due
    http: httpx.Client

    def land(self, day: date) -> list[str]:
        keys = [i.key for i in self.feed.list() if day.isoformat() in i.key]
        for key in keys:
            self.lake.landing.write_bytes(key, self.feed.read_bytes(key))
        return keys

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for proc in self.stack.processes:
            text = Path(proc.log).read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {proc.name} ---\n" + "\n".join(text))
        return "\n".join(out)

    def deployment_id(self, name: str) -> str:
        r = self.http.post("/deployments/filter", json={"deployments": {"name": {"any_": [name]}}})
        r.raise_for_status()
        [dep] = r.json()
        return str(dep["id"])

    def runs(self, deployment: str) -> list[dict[str, Any]]:
        """Flow runs of a deployment, oldest first."""
        r = self.http.post(
            "/flow_runs/filter",
            json={
                "deployments": {"id": {"any_": [self.deployment_id(deployment)]}},
                "sort": "EXPECTED_START_TIME_ASC",
                "limit": 200,
            },
        )
        r.raise_for_status()
        runs: list[dict[str, Any]] = r.json()
        return runs

    def wait_for(self, what: str, check: Callable[[], T | None], timeout: float = 300.0) -> T:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(1.0)
        raise AssertionError(f"{what}: not within {timeout:.0f}s\n{self.log_tail()}")


def due_day(usecase: Any) -> date:
    """The first day on which the retraining policy (no champion yet) wants a model, for a
    simulated telco starting at ``START``."""
    from tasks.loop_state import LoopState
    from tasks.policy import should_train

    state = LoopState(first_snapshot=START + timedelta(days=1))
    return next(
        START + timedelta(days=d)
        for d in range(60)
        if should_train(
            START + timedelta(days=d),
            state,
            target=usecase.target,
            model=usecase.model,
            retrain=usecase.retrain,
        ).train
    )


@contextmanager
def running_stack(
    tmp: Path,
    *,
    customers: int = 500,
    seed: int = 5,
    preload: bool = True,
    feed_days: int | None = None,
) -> Iterator[LocalStack]:
    """A stack over a simulated telco. ``preload``: the history before the due day is ingested
    and featurised in-process first; else the lake starts empty and the tests land everything.
    ``feed_days``: how many days the simulated feed holds (default: up to 3 days past due)."""
    from driftloop.simulate import simulate
    from flows.features import FeaturesParams, features_flow
    from flows.ingest import IngestParams, ingest_flow

    mp = pytest.MonkeyPatch()
    settings: Settings | None = None
    try:
        mp.setenv("DRIFTLOOP_DATA_ROOT", str(tmp / "lake"))
        mp.setenv("DRIFTLOOP_USECASE", str(usecase_with(tmp, **SMALL_LOOP)))
        settings = load_settings()
        from driftloop_config.usecase import load_usecase

        usecase = load_usecase(settings.usecase)
        assert usecase.target and usecase.model
        due = due_day(usecase)
        lake = Lake.from_settings(settings)
        feed = lake.root.child("_feed")
        simulate(
            feed,
            days=feed_days or (due - START).days + 3,
            start=START,
            customers=customers,
            seed=seed,
            label_delay_days=usecase.target.label_delay_days,
        )
        if preload:
            history = [
                i.key for i in feed.list() if i.key.rsplit("/", 1)[-1][:10] < due.isoformat()
            ]
            for key in history:
                lake.landing.write_bytes(key, feed.read_bytes(key))
            ingest_flow(IngestParams(objects=history))
            features_flow(FeaturesParams(materialize=False))

        stack = up(settings, prefect_port=free_port(), mlflow_port=free_port(), watch_interval=0.5)
        # the stack's processes got these settings; the session's other tests must not see them
        mp.undo()
        with api.client(stack.api_url) as http:
            yield LocalStack(settings, stack, lake, feed, due, http)
    finally:
        if settings is not None:
            down(settings)
        mp.undo()
