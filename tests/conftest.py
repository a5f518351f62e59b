"""Shared fixtures: isolated lakes on file:// and on a real S3 endpoint (moto server)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from driftloop.stack import SERVER_TUNING
from driftloop_config.settings import Settings, load_settings, quiet_telemetry
from tasks.storage import Lake
from tests.support.servers import moto_s3_server
from tests.support.stack import LocalStack

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    quiet_telemetry()
    # S3 credentials for the local endpoint only; never real ones.
    for key, value in {
        "AWS_ACCESS_KEY_ID": "driftloop-test",
        "AWS_SECRET_ACCESS_KEY": "driftloop-test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ[key] = value
    for key in list(os.environ):  # a developer's own settings must not leak into tests
        if key.startswith("DRIFTLOOP_") and key != "DRIFTLOOP_REQUIRE_SERVICES":
            del os.environ[key]
    os.environ.pop("AWS_ENDPOINT_URL", None)
    # the test API server writes received events and records task runs as the stack's does
    # (replays read the events back), whatever the developer's environment says
    os.environ.update(SERVER_TUNING)


#: The modules whose tests run on the session's ``local_stack`` (one ``driftloop up``).
STACK_MODULES = {
    "tests/browser/test_named_states.py",
    "tests/browser/test_prefect_ui.py",
    "tests/driftloop/test_stack.py",
}
#: The longest units of work, longest first (seconds of one `make test` on the 2-core machine,
#: both workers busy throughout, from ``--durations``).
LONGEST_FIRST = [
    "tests/flows/test_loop_decisions.py",  # 900: two 60-day loops sharing 30 days
    "tests/driftloop/test_replay.py",  # 640: two replays killed twice and resumed, one in bulk
    "tests/realdata/test_nyc_flight_delays.py",  # 550: the loop, then killed twice and resumed
    "tests/driftloop/test_stack_burst.py",  # 460: two stacks, 60 landed days
    "tests/driftloop/test_localapi.py",  # 200: a local API server per test
    "local_stack",  # 185: the browser and stack tests on one `driftloop up`
    "tests/realdata/test_us_low_birth_days.py",  # 160
    "tests/production/test_backends.py",  # 155
    "tests/driftloop/test_stack_secrets.py",  # 130
    "tests/flows/test_dask_runner.py",  # 120
    "tests/realdata/test_us_state_births.py",  # 70
]


def work_unit(nodeid: str) -> str:
    """The unit of work of a test under pytest-xdist: its module (module fixtures are built
    once), or ``local_stack`` for the modules sharing that stack."""
    module = nodeid.split("::", 1)[0]
    return "local_stack" if module in STACK_MODULES else module


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``make test``'s workers (``-n 2``) take whole units of work, in collection order."""
    from xdist.scheduler import LoadScopeScheduling

    class ByUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return ByUnit(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest units of work first (a stable sort: the rest keep their order), so that two
    workers end together; every test on ``local_stack`` is in one of :data:`STACK_MODULES`."""
    for item in items:
        uses_stack = "local_stack" in getattr(item, "fixturenames", ())
        if uses_stack and work_unit(item.nodeid) != "local_stack":
            raise pytest.UsageError(
                f"{item.nodeid} uses local_stack: add its module to STACK_MODULES"
            )
    rank = {unit: i for i, unit in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(work_unit(item.nodeid), len(rank)))


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_s3_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> Iterator[str]:
    """A fresh bucket on the local S3 endpoint, emptied and removed afterwards."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    name = f"driftloop-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


@pytest.fixture(params=["file", "s3"])
def settings(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """Settings whose data root is a fresh folder, or a fresh bucket on the local S3 server."""
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = request.getfixturevalue("s3_bucket")
        monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", f"s3://{bucket}/lake")
        monkeypatch.setenv("DRIFTLOOP_AWS_ENDPOINT_URL", endpoint)
        # an S3 lake keeps its local state in the project by default: each test its own
        monkeypatch.setenv("DRIFTLOOP_STATE_DIR", str(tmp_path / "state"))
    else:
        monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(tmp_path / "lake"))
    return load_settings()


@pytest.fixture
def local_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(tmp_path / "lake"))
    return load_settings()


@pytest.fixture
def lake(settings: Settings) -> Lake:
    return Lake.from_settings(settings)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect API (its own SQLite database) for flow tests. In-process flow runs
    send no heartbeats: each run would otherwise wait up to a second at its end for its
    heartbeat thread (deployed workers keep theirs: ``driftloop up`` sets them)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with (
        prefect_test_harness(server_startup_timeout=120),
        temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        yield


@pytest.fixture(scope="session")
def local_stack(
    tmp_path_factory: pytest.TempPathFactory, prefect_harness: None
) -> Iterator[LocalStack]:
    """``driftloop up`` on a small simulated telco (shared by the stack and browser tests)."""
    from tests.support.stack import running_stack

    with running_stack(tmp_path_factory.mktemp("stack")) as stack:
        yield stack


# Prefect's own fixtures for capturing emitted events.
from prefect.testing.fixtures import asserting_events_worker, reset_worker_events  # noqa: E402

__all__ = ["asserting_events_worker", "reset_worker_events"]
