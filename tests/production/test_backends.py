"""The production profile, by settings only: the same closed loop on the real production backends
and on the embedded defaults, with the same outcomes.

Production: a Prefect server on PostgreSQL, an MLflow tracking server on PostgreSQL with its
artifacts in S3, the Feast online store on Redis and the lake in S3 (a moto S3 server on a
loopback port). Embedded: Prefect's test harness (SQLite), MLflow on SQLite with local
artifacts, the SQLite online store and a folder lake. Each run is a process of its own
(tests/production/run_loop.py) whose environment holds only the ``DRIFTLOOP_*`` settings and
``PREFECT_API_URL``; both run at the same time.

Per test run: its own PostgreSQL databases, bucket and Feast project, dropped and removed at the
end; every server in its own process group, stopped by PID; their logs are shown on failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from driftloop_config.settings import PROJECT_ROOT, Settings, load_settings
from tests.support.servers import free_port, moto_s3_server, stop, wait_http
from tests.support.services import (
    POSTGRES_HOST,
    POSTGRES_PORT,
    REDIS_HOST,
    REDIS_PORT,
    require_postgres,
    require_redis,
)
from tests.support.usecases import usecase_with

pytestmark = [pytest.mark.services, pytest.mark.slow]

# a small telco on short horizons: a first champion is trained, promoted and scores, and drift
# checks run on the days after
DAYS, DRIFT_DAY, HISTORY, CUSTOMERS, SEED = 4, 1, 16, 300, 3
RUN_TIMEOUT = 480
SERVER_START_TIMEOUT = 180
#: The servers' log files, shown by tests/production/conftest.py when a test fails.
SERVER_LOGS: list[Path] = []
BIN = Path(sys.executable).parent
LAKE_ZONES = ("landing", "ledger", "validated", "quarantine", "features", "predictions", "reports")


@dataclass(frozen=True)
class Backends:
    prefect_url: str
    prefect_db: str
    mlflow_url: str
    mlflow_db: str
    s3_endpoint: str
    bucket: str
    feast_project: str
    redis_url: str
    servers: tuple[subprocess.Popen[bytes], ...]  # started, maybe not answering yet

    @property
    def health_urls(self) -> list[str]:
        return [f"{self.prefect_url}/health", f"{self.mlflow_url}/health"]

    def wait_ready(self) -> None:
        for url, proc in zip(self.health_urls, self.servers, strict=True):
            wait_http(url, timeout=SERVER_START_TIMEOUT, proc=proc)


@dataclass(frozen=True)
class Run:
    """One loop's result (run_loop.py's JSON) and the settings it ran with."""

    result: dict[str, Any]
    settings: Settings

    @property
    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = self.result["summary"]
        return summary


# ---- PostgreSQL, servers -------------------------------------------------------------------------


def _pg(dbname: str = "postgres") -> Any:
    import psycopg2

    conn = psycopg2.connect(host=POSTGRES_HOST, port=POSTGRES_PORT, user="postgres", dbname=dbname)
    conn.autocommit = True
    return conn


def sql(dbname: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    conn = _pg(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            return list(cur.fetchall())
    finally:
        conn.close()


@contextmanager
def postgres_database(name: str) -> Iterator[str]:
    """A fresh database, dropped afterwards (with any connection still open to it)."""
    conn = _pg()
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@contextmanager
def server(name: str, cmd: list[str], env: dict[str, str], logs: Path) -> Iterator[Any]:
    """A server process in its own process group, logging to ``logs/<name>.log``; stopped by
    PID (its group) on exit."""
    log_path = logs / f"{name}.log"
    SERVER_LOGS.append(log_path)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield proc
        finally:
            stop(proc)


def _base_env() -> dict[str, str]:
    """This process's environment without any driftloop, Prefect API or MLflow S3 setting."""
    drop = ("DRIFTLOOP_", "PREFECT_API_URL", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        {
            "DO_NOT_TRACK": "true",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "GX_ANALYTICS_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@contextmanager
def production_backends(tmp: Path) -> Iterator[Backends]:
    require_postgres()
    redis_address = require_redis()
    tag = uuid.uuid4().hex[:10]
    logs = tmp / "logs"
    with ExitStack() as stack:
        prefect_db = stack.enter_context(postgres_database(f"driftloop_prefect_{tag}"))
        mlflow_db = stack.enter_context(postgres_database(f"driftloop_mlflow_{tag}"))
        endpoint = stack.enter_context(moto_s3_server(logs))
        SERVER_LOGS.append(logs / "moto.log")
        import boto3

        bucket = f"driftloop-prod-{tag}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket=bucket
        )

        prefect_port, mlflow_port = free_port(), free_port()
        prefect_env = _base_env() | {
            "PREFECT_HOME": str(tmp / "prefect-server-home"),
            "PREFECT_API_DATABASE_CONNECTION_URL": (
                f"postgresql+asyncpg://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/{prefect_db}"
            ),
            "PREFECT_UI_ENABLED": "false",
        }
        prefect = stack.enter_context(
            server(
                "prefect-server",
                [
                    str(BIN / "prefect"),
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(prefect_port),
                ],
                prefect_env,
                logs,
            )
        )
        # the server's own S3 client (it lists and serves artifacts); its job runner (GenAI
        # scoring and trace archival) is not used by driftloop
        mlflow_env = _base_env() | {
            "MLFLOW_S3_ENDPOINT_URL": endpoint,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        mlflow = stack.enter_context(
            server(
                "mlflow-server",
                [
                    str(BIN / "mlflow"),
                    "server",
                    "--backend-store-uri",
                    f"postgresql+psycopg2://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/{mlflow_db}",
                    "--default-artifact-root",
                    f"s3://{bucket}/mlartifacts",
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
        )
        prefect_url = f"http://127.0.0.1:{prefect_port}/api"
        mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        backends = Backends(
            prefect_url=prefect_url,
            prefect_db=prefect_db,
            mlflow_url=mlflow_url,
            mlflow_db=mlflow_db,
            s3_endpoint=endpoint,
            bucket=bucket,
            feast_project=f"dl_{tag}",
            redis_url=f"{redis_address},db=0",
            servers=(prefect, mlflow),
        )
        try:
            yield backends
        finally:
            _remove_feast_project(backends)


def _redis() -> Any:
    import redis

    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=0)


def project_keys(project: str) -> list[bytes]:
    """The Redis keys of a Feast project (Feast appends the project name to every key)."""
    return list(_redis().scan_iter(match=f"*{project}", count=1000))


def _remove_feast_project(backends: Backends) -> None:
    keys = project_keys(backends.feast_project)
    if keys:
        _redis().delete(*keys)


# ---- the two runs ----------------------------------------------------------------------------------


def _loop(
    tmp: Path, name: str, env: dict[str, str], wait_for: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    log = tmp / "logs" / f"loop-{name}.log"
    SERVER_LOGS.append(log)
    with open(log, "wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.production.run_loop",
                str(tmp / f"{name}.json"),
                "--days",
                str(DAYS),
                "--customers",
                str(CUSTOMERS),
                "--drift-day",
                str(DRIFT_DAY),
                "--history",
                str(HISTORY),
                "--seed",
                str(SEED),
                *(arg for url in wait_for for arg in ("--wait-for", url)),
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _usecase(tmp: Path) -> Path:
    return usecase_with(
        tmp,
        target={"horizon_days": 3, "label_delay_days": 2},
        model={
            "holdout_days": 2,
            "validation_days": 2,
            "min_history_days": 2,
            "floor": 0.5,
            "bootstrap_samples": 100,
            # 300 customers: a few churns a day (the backends, not the evidence, are tested)
            "min_train_rows": 100,
            "min_train_positives": 5,
            "min_validation_positives": 2,
            "min_holdout_rows": 50,
            "min_holdout_positives": 2,
        },
        retrain={"min_post_change_days": 6, "new_labelled_days": 5},
    )


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("production")
    (path / "logs").mkdir()
    return path


def _embedded_env(tmp: Path) -> dict[str, str]:
    return {
        "DRIFTLOOP_DATA_ROOT": str(tmp / "lake"),
        "DRIFTLOOP_USECASE": str(tmp / "usecase.yaml"),
    }


def _production_env(tmp: Path, b: Backends) -> dict[str, str]:
    return {
        "DRIFTLOOP_DATA_ROOT": f"s3://{b.bucket}/lake",
        "DRIFTLOOP_AWS_ENDPOINT_URL": b.s3_endpoint,
        "DRIFTLOOP_STATE_DIR": str(tmp / "prod-state"),
        "DRIFTLOOP_MLFLOW_TRACKING_URI": b.mlflow_url,
        "DRIFTLOOP_MLFLOW_ARTIFACT_ROOT": f"s3://{b.bucket}/mlartifacts",
        "DRIFTLOOP_ONLINE_STORE": "redis",
        "DRIFTLOOP_REDIS_URL": b.redis_url,
        "DRIFTLOOP_FEAST_PROJECT": b.feast_project,
        "DRIFTLOOP_USECASE": str(tmp / "usecase.yaml"),
    }


@pytest.fixture(scope="module")
def embedded_loop(tmp: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The embedded run, started first: it needs none of the servers, so it runs while they
    start."""
    require_postgres()  # skip (or fail) before any work when a service is missing
    require_redis()
    assert _usecase(tmp) == tmp / "usecase.yaml"
    env = _base_env() | _embedded_env(tmp) | {"PREFECT_HOME": str(tmp / "emb-home")}
    proc = _loop(tmp, "embedded", env)
    yield proc
    stop(proc)


@pytest.fixture(scope="module")
def backends(embedded_loop: subprocess.Popen[bytes], tmp: Path) -> Iterator[Backends]:
    with production_backends(tmp) as b:
        yield b


@pytest.fixture(scope="module")
def runs(embedded_loop: subprocess.Popen[bytes], backends: Backends, tmp: Path) -> dict[str, Run]:
    started = time.monotonic()
    prod_env = _production_env(tmp, backends)
    env = _base_env() | prod_env | {"PREFECT_API_URL": backends.prefect_url}
    env["PREFECT_HOME"] = str(tmp / "prod-home")
    # started while the servers may still be starting: it imports, then waits for them
    production = _loop(tmp, "production", env, wait_for=tuple(backends.health_urls))
    try:
        backends.wait_ready()
        for name, proc in (("production", production), ("embedded", embedded_loop)):
            while proc.poll() is None:
                assert time.monotonic() - started < RUN_TIMEOUT, f"the {name} loop timed out"
                for server in backends.servers:
                    assert server.poll() is None, f"a server died: {server.args!r}"
                time.sleep(1)
            assert proc.returncode == 0, f"the {name} loop failed (see its log below)"
    finally:
        stop(production)
    print(f"the loops took {time.monotonic() - started:.0f} s after the servers were started")

    def settings(env: dict[str, str]) -> Settings:
        return load_settings(**{k[len("DRIFTLOOP_") :].lower(): v for k, v in env.items()})

    return {
        name: Run(json.loads((tmp / f"{name}.json").read_text()), settings(env))
        for name, env in (("production", prod_env), ("embedded", _embedded_env(tmp)))
    }


# ---- the same outcomes -------------------------------------------------------------------------------


def test_the_loop_has_the_same_outcomes_on_both_profiles(runs: dict[str, Run]) -> None:
    prod, emb = runs["production"].summary, runs["embedded"].summary
    # the loop did what the profile comparison is about: a first champion was trained, promoted,
    # scored with, and drift checks ran with it
    assert emb["promotions"], "no champion was promoted"
    assert any(d["champion_version"] for d in emb["daily"])
    assert any(d["auc"] is not None for d in emb["daily"]), "the champion was never evaluated"

    columns = ("rows_validated", "rows_quarantined", "drift_detected", "champion_version")
    for p, e in zip(prod["daily"], emb["daily"], strict=True):
        assert p["date"] == e["date"]
        assert {c: p[c] for c in columns} == {c: e[c] for c in columns}, p["date"]
        # the same data and seeds give the same model: AUCs agree to the last bit
        assert p["auc"] == e["auc"], p["date"]
    assert prod["promotions"] == emb["promotions"]  # same days, versions and CIs
    assert prod["drift_detected_first_day"] == emb["drift_detected_first_day"]
    assert prod["defects"] == emb["defects"] and prod["defects"]["missed"] == 0
    for key in ("auc_pre_drift", "auc_post_recovery", "auc_stale_champion_post_drift"):
        assert prod[key] == emb[key], key
    prod_runs, emb_runs = runs["production"].result, runs["embedded"].result
    assert prod_runs["flow_runs"] == emb_runs["flow_runs"]
    assert set(prod_runs["materialized"]) == {"customer_profile", "usage_aggregates"}
    assert prod_runs["materialized"] == emb_runs["materialized"]


def test_the_production_run_used_the_production_settings(
    runs: dict[str, Run], backends: Backends
) -> None:
    b = backends
    prod, emb = runs["production"], runs["embedded"]
    assert prod.result["prefect_api_url"] == b.prefect_url
    assert emb.result["prefect_api_url"] != b.prefect_url
    # the program itself pointed MLflow's S3 client at the endpoint (the run's env had no such
    # variable); the embedded run has local artifacts and needs none
    assert prod.result["mlflow_s3_endpoint_url"] == b.s3_endpoint
    assert emb.result["mlflow_s3_endpoint_url"] is None


# ---- the backends were really used -----------------------------------------------------------------


def test_flow_runs_are_in_the_postgres_prefect_database(
    runs: dict[str, Run], backends: Backends
) -> None:
    b = backends
    rows = sql(
        b.prefect_db,
        "SELECT f.name, r.state_type, count(*) FROM flow_run r JOIN flow f ON f.id = r.flow_id "
        "GROUP BY f.name, r.state_type",
    )
    in_db: dict[str, dict[str, int]] = {}
    for flow, state, n in rows:
        in_db.setdefault(flow, {})[state] = int(n)
    assert in_db == runs["production"].result["flow_runs"]
    assert set(in_db) == {"ingest", "features", "train", "score", "drift"}
    assert all(set(states) == {"COMPLETED"} for states in in_db.values()), in_db
    assert in_db["ingest"]["COMPLETED"] == DAYS + 1  # the backfill, then one per day

    # and the server's REST API answers from that database
    request = urllib.request.Request(
        f"{b.prefect_url}/flow_runs/count",
        data=b"{}",
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert int(json.load(resp)) == sum(sum(s.values()) for s in in_db.values())
    events = sql(b.prefect_db, "SELECT count(*) FROM events WHERE event LIKE 'driftloop.%%'")
    assert events[0][0] > 0


def test_models_are_in_the_postgres_mlflow_registry_with_artifacts_in_s3(
    runs: dict[str, Run], backends: Backends
) -> None:
    import boto3

    from tasks import registry

    b = backends
    run = runs["production"]
    assert run.settings.usecase is not None
    from driftloop_config.usecase import load_usecase

    model = load_usecase(run.settings.usecase).model
    assert model is not None
    name = model.registered_name
    champion = run.summary["daily"][-1]["champion_version"]
    assert champion is not None

    assert sql(b.mlflow_db, "SELECT name FROM registered_models") == [(name,)]
    aliases = dict(
        sql(
            b.mlflow_db, "SELECT alias, version FROM registered_model_aliases WHERE name = %s", name
        )
    )
    assert str(aliases["champion"]) == str(champion)
    versions = sql(
        b.mlflow_db, "SELECT version, source FROM model_versions WHERE name = %s ORDER BY 1", name
    )
    assert [str(v) for v, _ in versions] == [str(i + 1) for i in range(len(versions))] and versions
    assert all(src.startswith(f"s3://{b.bucket}/mlartifacts/") for _, src in versions), versions
    assert registry.champion_version(b.mlflow_url, name) == str(champion)  # through the server

    s3 = boto3.client("s3", endpoint_url=b.s3_endpoint, region_name="us-east-1")
    keys = {
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=b.bucket, Prefix="mlartifacts/"
        )
        for o in page.get("Contents", [])
    }
    for _, source in versions:
        prefix = source[len(f"s3://{b.bucket}/") :].rstrip("/")
        assert f"{prefix}/MLmodel" in keys, prefix
        assert any(k.startswith(prefix) and k.endswith(".skops") for k in keys), prefix
    assert sum(k.endswith("/reference.json") for k in keys) == len(versions)
    assert not (run.settings.state_path / "mlartifacts").exists()
    assert not (run.settings.state_path / "mlflow.db").exists()


def test_the_lake_is_in_s3(runs: dict[str, Run], backends: Backends) -> None:
    from tasks.storage import Lake, LocalStorage

    b = backends
    run = runs["production"]
    lake = Lake.from_settings(run.settings)
    assert lake.root.uri == f"s3://{b.bucket}/lake"
    counts = {zone: len(lake.zone(zone).list()) for zone in LAKE_ZONES}
    assert all(counts.values()), counts
    local = Lake.from_settings(runs["embedded"].settings)
    for zone in ("validated", "features", "predictions"):
        assert [o.key for o in lake.zone(zone).list()] == [o.key for o in local.zone(zone).list()]
    assert any(o.key.startswith("drift/") for o in lake.reports.list())
    # the offline store's copy of the feature table is exactly the lake's features/ zone
    mirror = LocalStorage(run.settings.state_path / "offline-mirror" / "features")
    assert {o.key for o in mirror.list()} == {o.key for o in lake.zone("features").list()}
    # nothing else of the lake is on local disk: the state dir holds Feast's registry, locks and
    # the mirror only
    assert {p.name for p in run.settings.state_path.iterdir()} <= {
        "feast_registry.db",
        "feature_store.yaml",
        "offline-mirror",
        "locks",
    }


def test_online_features_from_redis_equal_the_offline_values(
    runs: dict[str, Run], backends: Backends
) -> None:
    from tasks.feature_store import feature_store, online_features
    from tasks.features import feature_key, latest_feature_timestamp
    from tasks.storage import Lake, read_parquet
    from tasks.training_set import training_frame

    b = backends
    assert project_keys(b.feast_project), "no Feast keys in Redis for this project"
    run = runs["production"]
    store = feature_store(run.settings)
    assert store.config.online_store.type == "redis"
    lake = Lake.from_settings(run.settings)
    end = latest_feature_timestamp(lake, "customer_daily")
    assert end is not None
    last_day = read_parquet(
        lake.zone("features"), feature_key("customer_daily", end.date() - timedelta(days=1))
    )
    ids = sorted(last_day["customer_id"])[:: max(1, len(last_day) // 8)][:8]
    online = online_features(store, ids, "churn_v1", entity="customer_id")
    offline = training_frame(
        store,
        pd.DataFrame({"customer_id": ids, "event_timestamp": [end] * len(ids)}),
        "churn_v1",
        entity="customer_id",
    )
    embedded = online_features(
        feature_store(runs["embedded"].settings), ids, "churn_v1", entity="customer_id"
    )
    assert list(online["customer_id"]) == ids
    for col in [c for c in online.columns if c != "customer_id"]:
        _same(online[col], offline[col], col)
        _same(online[col], embedded[col], col)  # Redis holds what the SQLite store holds
    assert (pd.to_datetime(online["features_asof"], utc=True) == end).all()
    assert online.drop(columns=["features_asof"]).notna().any(axis=None)


def _same(a: pd.Series, b: pd.Series, col: str) -> None:
    if a.dtype.kind in "fc" or b.dtype.kind in "fc":
        np.testing.assert_allclose(a.astype(float), b.astype(float), rtol=1e-12, err_msg=col)
    elif col == "features_asof":
        assert pd.to_datetime(a, utc=True).tolist() == pd.to_datetime(b, utc=True).tolist()
    else:
        assert [None if pd.isna(x) else x for x in a] == [None if pd.isna(x) else x for x in b], col
