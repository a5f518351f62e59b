"""``driftloop serve`` as a real process on a real world.

A small telco is simulated and run through ingest → features; the server is started (as a
subprocess, on a free loopback port, with the same ``DRIFTLOOP_*`` environment) before any model
exists; then a champion is trained and promoted, and later replaced and rolled back, while the
same server process keeps answering.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from driftloop_config.settings import Settings
from flows.train import TrainParams, train_flow
from tasks import registry
from tasks.features import feature_key, latest_feature_timestamp
from tasks.storage import Lake, read_parquet
from tests.support.servers import free_port, stop, wait_http
from tests.support.world import simulated_world

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

NAME = "telco_churn"
SERVICE = "churn_v1"
REFRESH_SECONDS = 0.5


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> Iterator[Settings]:
    tmp = tmp_path_factory.mktemp("serve-world")
    with simulated_world(
        tmp,
        customers=600,
        days=34,
        label_delay_days=7,
        seed=5,
        # a low floor so the small world's first model is promoted; every day is a snapshot day
        model={"floor": 0.5, "bootstrap_samples": 100, "min_history_days": 0},
    ) as settings:
        yield settings


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    http: httpx.Client

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def predict(self, customer_id: str) -> httpx.Response:
        return self.http.post("/predict", json={"customer_id": customer_id})

    def wait_for_version(self, customer_id: str, version: str, timeout: float = 20.0) -> float:
        """Seconds until /predict answers with ``version``."""
        start = time.monotonic()
        seen = None
        while time.monotonic() - start < timeout:
            r = self.predict(customer_id)
            seen = (r.status_code, r.json())
            if r.status_code == 200 and r.json()["model_version"] == version:
                return time.monotonic() - start
            time.sleep(0.05)
        raise AssertionError(
            f"v{version} not served within {timeout}s; last answer {seen}\n{self.log_tail()}"
        )


@pytest.fixture(scope="module")
def server(world: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``driftloop serve`` on a free loopback port, started before any model exists."""
    env = dict(os.environ)
    assert env["DRIFTLOOP_DATA_ROOT"] == world.local_root.as_posix()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    exe = Path(sys.executable).with_name("driftloop")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(exe), "serve", "--port", str(port), "--refresh-seconds", str(REFRESH_SECONDS)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        wait_http(f"{url}/health", timeout=120, proc=proc)
        with httpx.Client(base_url=url, timeout=30) as http:
            yield Server(url, proc, log, http)
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def customers(world: Settings) -> list[str]:
    """Customers with features on the newest feature day (so in the online store)."""
    lake = Lake.from_settings(world)
    latest = latest_feature_timestamp(lake, "customer_daily")
    assert latest is not None
    day = read_parquet(
        lake.zone("features"), feature_key("customer_daily", latest.date() - timedelta(days=1))
    )
    return sorted(day["customer_id"])[:5]


@dataclass(frozen=True)
class FirstChampion:
    version: str
    health_before: httpx.Response
    predict_before: httpx.Response
    picked_up_after: float


@pytest.fixture(scope="module")
def first_champion(server: Server, customers: list[str]) -> FirstChampion:
    """Ask the server while there is no model, then train and promote one and wait for it."""
    health = server.http.get("/health")
    before = server.predict(customers[0])
    out = train_flow(TrainParams(seed=1))
    assert out["promoted"], out["decision"]["reason"]
    seconds = server.wait_for_version(customers[0], out["version"])
    return FirstChampion(out["version"], health, before, seconds)


def offline_scores(settings: Settings, version: str, ids: list[str]) -> list[float]:
    """The same customers scored in this process: the version's model on the online features."""
    from tasks.feature_store import feature_store, online_features
    from tasks.model import predict_scores
    from tasks.training import feature_schema

    store = feature_store(settings)
    frame = online_features(store, ids, SERVICE, entity="customer_id")
    model = registry.load_version(settings.tracking_uri, NAME, version)
    return [float(s) for s in predict_scores(model, frame, feature_schema(store, SERVICE, "y"))]


def test_before_any_champion_the_service_is_up_and_says_so(first_champion: FirstChampion) -> None:
    assert first_champion.health_before.status_code == 503
    assert first_champion.health_before.json()["status"] == "unavailable"
    assert first_champion.predict_before.status_code == 503
    assert "'telco_churn' has no champion yet" in first_champion.predict_before.json()["detail"]
    # the first promotion was picked up by the running server
    assert first_champion.version == "1"
    assert first_champion.picked_up_after < 10


def test_prediction_equals_offline_scoring_with_the_champion(
    world: Settings, server: Server, first_champion: FirstChampion, customers: list[str]
) -> None:
    from tasks.feature_store import feature_store, online_features

    r = server.predict(customers[0])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["customer_id"] == customers[0]
    assert body["model_version"] == first_champion.version
    assert 0.0 <= body["churn_probability"] <= 1.0
    [expected] = offline_scores(world, first_champion.version, customers[:1])
    assert body["churn_probability"] == pytest.approx(expected, abs=1e-12)
    asof = online_features(feature_store(world), customers[:1], SERVICE, entity="customer_id")[
        "features_asof"
    ].iloc[0]
    assert body["features_asof"] == asof.strftime("%Y-%m-%dT%H:%M:%SZ")

    # the server scores with the champion's fast scorer, which its loader builds
    from tasks.serve import registry_champions
    from tasks.training import feature_schema

    store = feature_store(world)
    loaded = registry_champions(
        world.tracking_uri,
        NAME,
        schema_for=lambda service: feature_schema(store, service, "y"),
        default_service=SERVICE,
    ).get()
    assert loaded.version == first_champion.version and loaded.scorer is not None

    batch = server.http.post("/predict/batch", json={"customer_ids": customers})
    assert batch.status_code == 200, batch.text
    got = [p["churn_probability"] for p in batch.json()["predictions"]]
    assert [p["customer_id"] for p in batch.json()["predictions"]] == customers
    assert got == pytest.approx(offline_scores(world, first_champion.version, customers), abs=1e-12)


def test_unknown_and_malformed_ids(
    server: Server, first_champion: FirstChampion, world: Settings
) -> None:
    r = server.predict("C9999999")
    assert r.status_code == 404
    assert r.json()["unknown_ids"] == ["C9999999"]
    assert "C9999999 is unknown" in r.json()["detail"]

    from driftloop_config.usecase import load_usecase
    from tasks.serve import entity_id_pattern

    pattern = entity_id_pattern(load_usecase(world.usecase))
    for bad in ("customer-42", "C0000001\n"):  # a trailing newline is malformed too
        r = server.predict(bad)
        assert r.status_code == 422, r.text
        [error] = r.json()["detail"]
        assert error["msg"] == f"customer_id is malformed: it must match {pattern}"
        assert error["loc"] == ["body", "customer_id"]
        assert "input" not in error and "customer-42" not in r.text


def test_the_served_process_refuses_a_body_above_one_mib(server: Server) -> None:
    body = b'{"customer_id": "' + b"C" * (2 * 1024 * 1024) + b'"}'
    r = server.http.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json() == {"detail": "request body larger than 1048576 bytes"}
    assert r.headers["connection"] == "close"


def test_health_names_the_champion(server: Server, first_champion: FirstChampion) -> None:
    r = server.http.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
    assert r.json()["champion_version"] == first_champion.version
    assert r.json()["feature_service"] == SERVICE


def test_a_new_champion_and_a_rollback_are_served_without_restart(
    world: Settings, server: Server, first_champion: FirstChampion, customers: list[str]
) -> None:
    pid = server.proc.pid
    out = train_flow(TrainParams(seed=2))
    second = out["version"]
    assert second != first_champion.version
    if not out["promoted"]:  # the gate kept v1: move the alias as an operator would
        client = registry.client_for(world.tracking_uri)
        client.set_registered_model_alias(NAME, registry.CHAMPION, second)
    assert registry.champion_version(world.tracking_uri, NAME) == second

    assert server.wait_for_version(customers[1], second) < 10
    r = server.predict(customers[1])
    [expected] = offline_scores(world, second, customers[1:2])
    assert r.json()["churn_probability"] == pytest.approx(expected, abs=1e-12)

    lock = registry.promotion_lock_path(world.state_path, NAME)
    restored = registry.rollback(registry.client_for(world.tracking_uri), NAME, lock_path=lock)
    assert restored == first_champion.version
    assert server.wait_for_version(customers[1], restored) < 10
    assert server.http.get("/health").json()["champion_version"] == restored

    assert server.proc.poll() is None and server.proc.pid == pid  # the same process throughout
    assert "serving telco_churn v" in server.log_tail(200)
