"""Online inference: the champion cache, id validation, scoring and the HTTP error mapping.

Everything here runs on fakes (a registry, a feature reader and a model as small classes), so
the tests are fast; ``tests/flows/test_serve_e2e.py`` runs the real server on a real world.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from driftloop.serve import MAX_BATCH, create_app
from driftloop_config.settings import PROJECT_ROOT, Settings
from driftloop_config.usecase import load_usecase
from tasks.model import Columns, FeatureSchema
from tasks.serve import (
    Champion,
    ChampionCache,
    InvalidIds,
    NoChampion,
    Predictor,
    UnknownIds,
    entity_id_pattern,
)

SCHEMA = FeatureSchema(categorical=("plan",), numeric=("monthly_charge",), label="churned")
ASOF = pd.Timestamp("2026-02-04", tz=UTC)
TELCO_PATTERN = r"^C[0-9]{7}\Z"  # as the shipped row suites say


class EntityNames(TypedDict):
    """The ``entity`` and ``prediction`` keyword arguments of :class:`Predictor`."""

    entity: str
    prediction: str


#: the telco use case's id key and prediction column
TELCO_NAMES: EntityNames = {"entity": "customer_id", "prediction": "churn_probability"}


# ---- fakes --------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeModel:
    """P(churn) = monthly_charge / scale: which model scored shows in the number."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def predict_proba(self, x: pd.DataFrame) -> np.ndarray:
        assert list(x.columns) == list(SCHEMA.features)
        p = x["monthly_charge"].to_numpy() / self.scale
        return np.column_stack([1 - p, p])


@dataclass
class Registry:
    """A registry with one alias; counts how often it is read and which versions are loaded."""

    alias: str | None = "1"
    resolves: int = 0
    loaded: list[str] = field(default_factory=list)
    broken_versions: set[str] = field(default_factory=set)
    down: bool = False
    gate: threading.Event | None = None  # when set, loading waits for it

    def resolve(self) -> str | None:
        self.resolves += 1
        if self.down:
            raise ConnectionError("tracking server unreachable")
        return self.alias

    def load(self, version: str) -> Champion:
        if self.gate is not None:
            assert self.gate.wait(10)
        if version in self.broken_versions:
            raise OSError(f"model files of v{version} are missing")
        self.loaded.append(version)
        return Champion(version, FakeModel(100.0 * int(version)), "churn_v1", SCHEMA)

    def cache(self, clock: Clock, refresh_seconds: float = 5.0) -> ChampionCache:
        return ChampionCache(
            "telco_churn", self.resolve, self.load, refresh_seconds=refresh_seconds, clock=clock
        )


CUSTOMERS = {
    "C0000001": ("basic", 20.0),
    "C0000002": ("premium", 50.0),
    "C0000003": ("standard", 35.0),
}


class Features:
    """An online store holding :data:`CUSTOMERS`; unknown ids come back as all-null rows."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str]] = []

    def __call__(self, ids: list[str], service: str) -> pd.DataFrame:
        self.calls.append((list(ids), service))
        rows = [CUSTOMERS.get(i, (None, np.nan)) for i in ids]
        return pd.DataFrame(
            {
                "customer_id": ids,
                "plan": [r[0] for r in rows],
                "monthly_charge": [r[1] for r in rows],
                "features_asof": [ASOF if i in CUSTOMERS else pd.NaT for i in ids],
            }
        )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def features() -> Features:
    return Features()


@pytest.fixture
def predictor(registry: Registry, clock: Clock, features: Features) -> Predictor:
    return Predictor(registry.cache(clock), features, **TELCO_NAMES, id_pattern=TELCO_PATTERN)


@pytest.fixture
def client(predictor: Predictor, tmp_path: Path) -> TestClient:
    settings = Settings(data_root=str(tmp_path / "lake"))
    return TestClient(create_app(settings, predictor=predictor))


# ---- the champion cache -------------------------------------------------------------------------


def test_the_alias_is_read_at_most_once_per_interval_and_a_model_loaded_once_per_version(
    registry: Registry, clock: Clock
) -> None:
    cache = registry.cache(clock, refresh_seconds=5)
    assert cache.get().version == "1"
    assert (registry.resolves, registry.loaded) == (1, ["1"])

    for _ in range(50):  # within the interval: neither the registry nor the model is touched
        clock.now += 0.09
        assert cache.get().version == "1"
    assert registry.resolves == 1

    clock.now += 0.6  # past the interval: the alias is read again, same version, no reload
    assert cache.get().version == "1"
    assert (registry.resolves, registry.loaded) == (2, ["1"])

    registry.alias = "2"  # promoted: served once the interval has passed, without a restart
    clock.now += 4.9
    assert cache.get().version == "1"
    clock.now += 0.2
    assert cache.get().version == "2"
    assert registry.loaded == ["1", "2"]

    registry.alias = "1"  # rolled back: the old version is loaded again
    clock.now += 5
    assert cache.get().version == "1"
    assert registry.loaded == ["1", "2", "1"]
    assert cache.status().loads == 3


def test_zero_interval_reads_the_alias_every_time(registry: Registry, clock: Clock) -> None:
    cache = registry.cache(clock, refresh_seconds=0)
    for _ in range(3):
        cache.get()
    assert registry.resolves == 3
    assert registry.loaded == ["1"]


def test_no_champion_is_a_clear_error_until_one_is_promoted(
    registry: Registry, clock: Clock
) -> None:
    registry.alias = None
    cache = registry.cache(clock)
    with pytest.raises(NoChampion, match=r"'telco_churn' has no champion yet.*driftloop train"):
        cache.get()
    assert cache.status().version is None
    registry.alias = "3"
    clock.now += 5
    assert cache.get().version == "3"


def test_a_version_that_fails_to_load_leaves_the_current_one_serving(
    registry: Registry, clock: Clock
) -> None:
    cache = registry.cache(clock)
    cache.get()
    registry.alias = "2"
    registry.broken_versions.add("2")
    clock.now += 5
    assert cache.get().version == "1"
    status = cache.status()
    assert status.version == "1"
    assert status.problem is not None
    assert "v2 could not be loaded" in status.problem and "still serving v1" in status.problem

    registry.broken_versions.clear()  # retried after the interval, not on every request
    clock.now += 1
    assert cache.get().version == "1"
    clock.now += 5
    assert cache.get().version == "2"
    assert cache.status().problem is None


def test_an_unreachable_registry_keeps_the_current_model(registry: Registry, clock: Clock) -> None:
    cache = registry.cache(clock)
    cache.get()
    registry.down = True
    clock.now += 5
    assert cache.get().version == "1"
    assert "unreachable" in (cache.status().problem or "")

    fresh = registry.cache(clock)  # nothing loaded yet: the error is why nothing is served
    with pytest.raises(NoChampion, match="cannot read the champion alias.*unreachable"):
        fresh.get()


def test_a_removed_alias_stops_serving(registry: Registry, clock: Clock) -> None:
    cache = registry.cache(clock)
    cache.get()
    registry.alias = None
    clock.now += 5
    with pytest.raises(NoChampion):
        cache.get()


def test_requests_keep_the_current_model_while_a_new_one_loads(
    registry: Registry, clock: Clock
) -> None:
    cache = registry.cache(clock)
    cache.get()
    registry.alias = "2"
    registry.gate = threading.Event()
    clock.now += 5
    loader = threading.Thread(target=cache.get)
    loader.start()
    try:
        for _ in range(100):  # the loader holds the refresh; others are not held up by it
            if registry.resolves == 2:
                break
            threading.Event().wait(0.01)
        assert registry.resolves == 2
        assert cache.get().version == "1"
    finally:
        registry.gate.set()
        loader.join(10)
    assert cache.get().version == "2"
    assert registry.loaded == ["1", "2"]


def test_refresh_seconds_must_not_be_negative(registry: Registry) -> None:
    with pytest.raises(ValueError, match="refresh_seconds"):
        registry.cache(Clock(), refresh_seconds=-1)


# ---- ids ----------------------------------------------------------------------------------------


def _usecase_with_id_regex(tmp: Path, regex: str | None) -> Path:
    """The shipped use case whose row suites expect ``regex`` of customer_id (None: no rule)."""
    raw = yaml.safe_load((PROJECT_ROOT / "usecases" / "telco_churn.yaml").read_text())
    for name, spec in raw["datasets"].items():
        spec["batch_suite"] = str(PROJECT_ROOT / spec["batch_suite"])
        suite = json.loads((PROJECT_ROOT / spec["row_suite"]).read_text())
        suite["expectations"] = [
            e for e in suite["expectations"] if e["type"] != "expect_column_values_to_match_regex"
        ]
        if regex is not None:
            suite["expectations"].append(
                {
                    "type": "expect_column_values_to_match_regex",
                    "kwargs": {"column": "customer_id", "regex": regex},
                }
            )
        path = tmp / f"{name}.rows.json"
        path.write_text(json.dumps(suite))
        spec["row_suite"] = str(path)
    out = tmp / "usecase.yaml"
    out.write_text(yaml.safe_dump(raw))
    return out


def test_the_id_pattern_comes_from_the_row_suite(tmp_path: Path) -> None:
    shipped = load_usecase(PROJECT_ROOT / "usecases" / "telco_churn.yaml")
    assert entity_id_pattern(shipped) == TELCO_PATTERN

    other = load_usecase(_usecase_with_id_regex(tmp_path, "^X-[0-9]{3}$"))
    assert entity_id_pattern(other) == "^X-[0-9]{3}$"

    (tmp_path / "none").mkdir()
    assert entity_id_pattern(load_usecase(_usecase_with_id_regex(tmp_path / "none", None))) is None


def test_malformed_ids_are_rejected_before_anything_is_read(
    registry: Registry, clock: Clock, features: Features
) -> None:
    registry.alias = None  # no champion either: the ids are checked first
    predictor = Predictor(registry.cache(clock), features, **TELCO_NAMES, id_pattern=TELCO_PATTERN)
    bad = ["C000001", "c0000001", "C0000001 ", "C00000012", "", "X0000001"]
    with pytest.raises(InvalidIds) as info:
        predictor.predict(["C0000001", *bad])
    assert [b.position for b in info.value.bad] == list(range(1, len(bad) + 1))
    assert f"[1] customer_id is malformed: it must match {TELCO_PATTERN}" in str(info.value)
    assert "C000001" not in str(info.value)  # the message does not echo the id
    assert registry.resolves == 0 and features.calls == []

    with pytest.raises(InvalidIds, match="non-empty string"):
        predictor.predict([42])  # type: ignore[list-item]


def test_without_a_pattern_any_non_empty_id_is_looked_up(
    registry: Registry, clock: Clock, features: Features
) -> None:
    predictor = Predictor(registry.cache(clock), features, **TELCO_NAMES, id_pattern=None)
    with pytest.raises(UnknownIds):
        predictor.predict(["anything"])
    with pytest.raises(InvalidIds):
        predictor.predict([""])


# ---- predictions --------------------------------------------------------------------------------


def test_predictions_in_order_with_version_and_feature_time(
    predictor: Predictor, features: Features
) -> None:
    out = predictor.predict(["C0000002", "C0000001", "C0000002"])
    assert [r["customer_id"] for r in out] == ["C0000002", "C0000001", "C0000002"]
    assert [r["churn_probability"] for r in out] == [0.5, 0.2, 0.5]
    assert {r["model_version"] for r in out} == {"1"}
    assert out[0]["features_asof"] == datetime(2026, 2, 4, tzinfo=UTC)
    assert features.calls == [(["C0000002", "C0000001"], "churn_v1")]  # each id read once
    assert predictor.predict([]) == []


def test_unknown_ids_are_named(predictor: Predictor) -> None:
    with pytest.raises(UnknownIds, match="customer_id C0000009 is unknown") as one:
        predictor.predict(["C0000009"])
    assert one.value.ids == ["C0000009"]
    with pytest.raises(UnknownIds, match=r"2 of 3 ids \(customer_id\) are unknown") as some:
        predictor.predict(["C0000008", "C0000001", "C0000009", "C0000008"])
    assert some.value.ids == ["C0000008", "C0000009"]


def test_too_many_ids_in_one_call(predictor: Predictor) -> None:
    with pytest.raises(ValueError, match="at most 1000"):
        predictor.predict(["C0000001"] * 1001)


def test_a_feature_time_in_epoch_seconds_or_naive_is_read_as_utc() -> None:
    from tasks.serve import _as_utc

    expected = datetime(2026, 2, 4, tzinfo=UTC)
    assert _as_utc(int(expected.timestamp())) == expected
    assert _as_utc(pd.Timestamp("2026-02-04")) == expected
    assert _as_utc(pd.Timestamp("2026-02-04 01:00", tz="Europe/Paris")) == expected
    assert _as_utc(pd.NaT) is None and _as_utc(None) is None


# ---- the HTTP API -------------------------------------------------------------------------------


def test_predict_one(client: TestClient) -> None:
    r = client.post("/predict", json={"customer_id": "C0000003"})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "customer_id": "C0000003",
        "churn_probability": 0.35,
        "model_version": "1",
        "features_asof": "2026-02-04T00:00:00Z",
    }


def test_predict_batch(client: TestClient) -> None:
    ids = ["C0000003", "C0000001", "C0000003"]
    r = client.post("/predict/batch", json={"customer_ids": ids})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "1"
    assert [p["customer_id"] for p in body["predictions"]] == ids
    assert [p["churn_probability"] for p in body["predictions"]] == [0.35, 0.2, 0.35]


def test_unknown_id_is_404(client: TestClient) -> None:
    r = client.post("/predict", json={"customer_id": "C0000009"})
    assert r.status_code == 404
    assert r.json() == {
        "detail": "customer_id C0000009 is unknown: the online store holds no features for it",
        "unknown_ids": ["C0000009"],
    }
    r = client.post("/predict/batch", json={"customer_ids": ["C0000001", "C0000009"]})
    assert r.status_code == 404
    assert r.json()["unknown_ids"] == ["C0000009"]


def test_malformed_id_is_422_with_the_pattern(client: TestClient, features: Features) -> None:
    r = client.post("/predict", json={"customer_id": "42"})
    assert r.status_code == 422
    [error] = r.json()["detail"]
    assert error["loc"] == ["body", "customer_id"]
    assert error["msg"] == f"customer_id is malformed: it must match {TELCO_PATTERN}"
    assert error["ctx"] == {"pattern": TELCO_PATTERN}
    assert "input" not in error and "42" not in r.text

    r = client.post("/predict/batch", json={"customer_ids": ["C0000001", "C1", "C0000002", "x"]})
    assert r.status_code == 422
    assert [e["loc"] for e in r.json()["detail"]] == [
        ["body", "customer_ids", 1],
        ["body", "customer_ids", 3],
    ]
    assert features.calls == []


@pytest.mark.parametrize(
    "path, body",
    [
        ("/predict", {}),
        ("/predict", {"customer_id": 42}),
        ("/predict", {"customer_id": ""}),
        ("/predict", {"customer_id": "C0000001", "extra": 1}),
        ("/predict/batch", {"customer_ids": []}),
        ("/predict/batch", {"customer_ids": ["C0000001"] * (MAX_BATCH + 1)}),
        ("/predict/batch", {"customer_ids": "C0000001"}),
    ],
)
def test_malformed_requests_are_422(client: TestClient, path: str, body: Any) -> None:
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    assert isinstance(r.json()["detail"], list)


def test_a_full_batch_is_accepted(client: TestClient) -> None:
    r = client.post("/predict/batch", json={"customer_ids": ["C0000001"] * MAX_BATCH})
    assert r.status_code == 200
    assert len(r.json()["predictions"]) == MAX_BATCH


def test_no_champion_is_503_with_a_clear_message(
    client: TestClient, registry: Registry, clock: Clock
) -> None:
    registry.alias = None
    r = client.post("/predict", json={"customer_id": "C0000001"})
    assert r.status_code == 503
    assert "has no champion yet" in r.json()["detail"]
    assert r.headers["retry-after"] == "5"
    health = client.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "unavailable"
    assert health.json()["champion_version"] is None

    registry.alias = "2"  # promoted: served after the interval, same app
    clock.now += 5
    assert client.get("/health").json()["champion_version"] == "2"
    r = client.post("/predict", json={"customer_id": "C0000002"})
    assert r.json()["model_version"] == "2"
    assert r.json()["churn_probability"] == 0.25


def test_health(client: TestClient, registry: Registry, clock: Clock) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {
        "status": "ok",
        "model": "telco_churn",
        "champion_version": "1",
        "feature_service": "churn_v1",
        "refresh_seconds": 5.0,
        "detail": None,
    }
    registry.alias = "2"
    registry.broken_versions.add("2")
    clock.now += 5
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "degraded"
    assert r.json()["champion_version"] == "1"
    assert "v2 could not be loaded" in r.json()["detail"]


def test_openapi_documents_the_typed_api(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {"/predict", "/predict/batch", "/health"}
    schemas = spec["components"]["schemas"]
    assert {"PredictRequest", "BatchPredictRequest", "Prediction", "HealthResponse"} <= set(schemas)
    assert set(schemas["Prediction"]["properties"]) == {
        "customer_id",
        "churn_probability",
        "model_version",
        "features_asof",
    }
    responses = spec["paths"]["/predict"]["post"]["responses"]
    assert {"200", "404", "413", "422", "503"} <= set(responses)
    assert schemas["BatchPredictRequest"]["properties"]["customer_ids"]["maxItems"] == MAX_BATCH


def test_the_factory_touches_nothing_until_start_up(tmp_path: Path) -> None:
    settings = Settings(data_root=str(tmp_path / "lake"))
    app = create_app(settings)
    assert app.state.predictor is None
    assert not (tmp_path / "lake").exists()  # no store, registry or state folder yet
    with pytest.raises(ValueError, match="refresh_seconds"):
        create_app(settings, refresh_seconds=-1)


def test_serve_command_binds_to_loopback_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from driftloop.cli import app

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: calls.append({"app": target, **kw}))
    result = CliRunner().invoke(app, ["serve", "--refresh-seconds", "0.5"])
    assert result.exit_code == 0, result.output
    [call] = calls
    assert (call["host"], call["port"]) == ("127.0.0.1", 8765)
    assert call["app"].title == "driftloop online inference"
    assert "0.5 s" in call["app"].description
    assert call["app"].state.max_body_bytes == 1024 * 1024  # the default limit

    result = CliRunner().invoke(app, ["serve", "--max-body-bytes", "2048"])
    assert result.exit_code == 0, result.output
    assert calls[-1]["app"].state.max_body_bytes == 2048
    assert CliRunner().invoke(app, ["serve", "--max-body-bytes", "0"]).exit_code == 2


# ---- limits: body size, what a 422 shows ------------------------------------------------------


def test_a_body_above_the_limit_is_413_before_it_is_read(
    client: TestClient, features: Features
) -> None:
    body = b'{"customer_id": "' + b"C" * (2 * 1024 * 1024) + b'"}'  # 2 MiB, Content-Length set
    r = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json() == {"detail": "request body larger than 1048576 bytes"}
    assert len(r.content) < 100
    assert features.calls == []


def test_a_streamed_body_without_length_is_counted(predictor: Predictor, tmp_path: Path) -> None:
    settings = Settings(data_root=str(tmp_path / "lake"))
    small = TestClient(create_app(settings, predictor=predictor, max_body_bytes=1000))

    def chunks() -> Any:  # no Content-Length: the body is only known as it arrives
        yield b'{"customer_ids": ['
        yield b'"C0000001",' * 200
        yield b'"C0000001"]}'

    r = small.post("/predict/batch", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.json() == {"detail": "request body larger than 1000 bytes"}
    # just under the limit is served
    ok = small.post("/predict/batch", json={"customer_ids": ["C0000001"] * 50})
    assert ok.status_code == 200, ok.text
    with pytest.raises(ValueError, match="max_body_bytes"):
        create_app(settings, max_body_bytes=0)


def test_the_real_server_refuses_a_chunked_upload_above_the_limit(
    predictor: Predictor, tmp_path: Path
) -> None:
    import socket

    import uvicorn

    from tests.support.servers import free_port, wait_http

    settings = Settings(data_root=str(tmp_path / "lake"))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, predictor=predictor, max_body_bytes=4096),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            chunk = b" " * 1024
            for _ in range(8):  # 8 KiB in 1 KiB chunks, twice the limit
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                part = sock.recv(4096)
                if not part:
                    break
                answer += part
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 413 Request Entity Too Large", answer
        assert rest.endswith(b'{"detail":"request body larger than 4096 bytes"}')
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert not thread.is_alive()


@pytest.mark.parametrize(
    "body",
    [
        {"customer_id": "Z" * 200},  # does not match the pattern
        {"customer_id": "Q" * 5000},  # longer than the field allows
        {"customer_id": ["Q" * 5000]},  # not a string
        {"customer_id": "C0000001", "Q" * 5000: 1},  # unknown field, named by a long key
    ],
    ids=["pattern", "too-long", "wrong-type", "extra-key"],
)
def test_a_422_names_the_field_but_never_echoes_the_input(
    client: TestClient, body: dict[str, Any]
) -> None:
    r = client.post("/predict", json=body)
    assert r.status_code == 422, r.text
    assert (
        "ZZZZ" not in r.text
        and "QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ" not in r.text
    )
    assert len(r.content) < 600
    [error] = r.json()["detail"]
    assert "input" not in error
    assert error["loc"][:2] == ["body", "customer_id"] or error["loc"][0] == "body"


def test_an_id_with_a_trailing_newline_is_malformed(client: TestClient, features: Features) -> None:
    r = client.post("/predict", json={"customer_id": "C0000001\n"})
    assert r.status_code == 422, r.text
    [error] = r.json()["detail"]
    assert error["loc"] == ["body", "customer_id"]
    assert error["msg"] == f"customer_id is malformed: it must match {TELCO_PATTERN}"
    r = client.post("/predict/batch", json={"customer_ids": ["C0000001", "C0000002\n"]})
    assert r.status_code == 422
    assert [e["loc"] for e in r.json()["detail"]] == [["body", "customer_ids", 1]]
    assert features.calls == []


def test_the_pattern_must_match_the_whole_id_even_when_it_ends_in_dollar(
    registry: Registry, clock: Clock, features: Features
) -> None:
    # Python's "$" also matches before a final newline; the whole id must match
    predictor = Predictor(registry.cache(clock), features, **TELCO_NAMES, id_pattern="^C[0-9]{7}$")
    with pytest.raises(InvalidIds) as info:
        predictor.predict(["C0000001", "C0000001\n"])
    assert [b.position for b in info.value.bad] == [1]
    # an unanchored pattern is anchored too: the id is the match, not a substring of it
    unanchored = Predictor(registry.cache(clock), features, **TELCO_NAMES, id_pattern="C[0-9]{7}")
    with pytest.raises(InvalidIds):
        unanchored.predict(["xC0000001"])
    assert features.calls == []


def test_a_422_lists_at_most_twenty_errors(client: TestClient) -> None:
    from driftloop.serve import MAX_ERRORS

    r = client.post("/predict/batch", json={"customer_ids": ["bad"] * MAX_BATCH})
    assert r.status_code == 422
    body = r.json()
    assert len(body["detail"]) == MAX_ERRORS == 20
    assert body["more_errors"] == MAX_BATCH - 20
    assert [e["loc"][2] for e in body["detail"]] == list(range(20))
    assert len(r.content) < 5000


def test_a_regression_use_case_answers_a_predicted_value_not_a_probability() -> None:
    from pydantic import ValidationError

    from driftloop.serve import api_types

    binary = api_types("state", "quiet_day_probability", "quiet_day")
    counts = api_types("state", "births_next_7d_predicted", "births_next_7d", regression=True)
    answer = {"state": "CA", "model_version": "1", "features_asof": "1977-10-02T00:00:00Z"}
    one = counts.prediction_model(**answer, births_next_7d_predicted=6012.5)
    assert one.model_dump()["births_next_7d_predicted"] == 6012.5
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        binary.prediction_model(**answer, quiet_day_probability=6012.5)
    schema = counts.prediction_model.model_json_schema()
    assert "maximum" not in schema["properties"]["births_next_7d_predicted"]
    assert (
        "predicted births_next_7d"
        in schema["properties"]["births_next_7d_predicted"]["description"]
    )


def test_a_champion_scores_with_its_fast_scorer_when_it_has_one() -> None:
    frame = pd.DataFrame({"monthly_charge": [20.0, 50.0]})
    seen: list[int] = []

    def fast(rows: pd.DataFrame | Columns) -> np.ndarray:
        seen.append(len(rows))
        return np.array([0.25, 0.5])

    with_scorer = Champion("1", FakeModel(100.0), "churn_v1", SCHEMA, scorer=fast)
    assert list(with_scorer.score(frame)) == [0.25, 0.5] and seen == [2]
    rows = pd.DataFrame({c: [1.0] for c in SCHEMA.features}).assign(monthly_charge=[30.0])
    assert list(Champion("1", FakeModel(100.0), "churn_v1", SCHEMA).score(rows)) == [0.3]
