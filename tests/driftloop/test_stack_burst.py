"""The deployed loop under a burst of landings, and across a restart in the middle of the chain.

An empty lake, `driftloop up` with its defaults (Prefect on SQLite, one worker per pool, the
landing watcher), then 35 days (70 files) dropped into landing/ at once, later 25 days more
with `driftloop down` / `up` while their ingest runs. What a correct stack does: every landed
object is ingested exactly once, every validated day is built into features, a training is
started and the gate decides, no automation action fails, no run crashes or stays stuck, and
the Prefect database stays small. The timings are written to test-artifacts/ for BENCHMARKS.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from driftloop import api
from driftloop.stack import down, free_port, prefect_db_bytes, up
from driftloop_config.settings import PROJECT_ROOT
from driftloop_config.usecase import load_usecase
from tasks import registry
from tasks.features import read_manifest
from tasks.ingest import open_ledger, validated_partitions
from tests.support.stack import START, LocalStack, running_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

FIRST_DAYS, MORE_DAYS = 35, 25
ACTIVE = {"SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING"}
DB_LIMIT = 64 * 2**20  # bytes of Prefect database after the whole test (SQLite + WAL)
ARTIFACTS = PROJECT_ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def burst(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> Iterator[LocalStack]:
    with running_stack(
        tmp_path_factory.mktemp("burst"), preload=False, feed_days=FIRST_DAYS + MORE_DAYS
    ) as stack:
        yield stack


def _keys(loop: LocalStack, first: int, days: int) -> list[str]:
    wanted = {(START + timedelta(days=d)).isoformat() for d in range(first, first + days)}
    return sorted(i.key for i in loop.feed.list() if i.key.rsplit("/", 1)[-1][:10] in wanted)


def _land_all(loop: LocalStack, keys: list[str]) -> None:
    for key in keys:
        loop.lake.landing.write_bytes(key, loop.feed.read_bytes(key))


def _all_runs(http: httpx.Client) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = http.post("/flow_runs/filter", json={"offset": len(out), "limit": 200}).json()
        out += page
        if len(page) < 200:
            return out


def _failed_actions(http: httpx.Client, since: datetime) -> list[dict[str, Any]]:
    body = {
        "filter": {
            "occurred": {"since": since.isoformat(), "until": datetime.now(UTC).isoformat()},
            "event": {"name": ["prefect.automation.action.failed"]},
        },
        "limit": 50,
    }
    r = http.post("/events/filter", json=body)
    r.raise_for_status()
    events: list[dict[str, Any]] = r.json()["events"]
    return events


def _ingested_once(loop: LocalStack, keys: list[str]) -> bool:
    ledger = open_ledger(loop.lake.ledger)
    return all(len(ledger.records(k)) == 1 for k in keys)


def _features_built(loop: LocalStack) -> bool:
    usecase = load_usecase(loop.settings.usecase)
    days = {d.isoformat() for d in validated_partitions(loop.lake, usecase.datasets["usage"])}
    built = set(read_manifest(loop.lake, "customer_daily").get("dates", {}))
    return bool(days) and days <= built


def _decided(loop: LocalStack) -> bool:
    client = registry.client_for(loop.settings.tracking_uri)
    versions = client.search_model_versions("name='telco_churn'")
    return bool(versions) and all(registry.DECISION_TAG in v.tags for v in versions)


def _busy(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs on their way: active, or scheduled to start within a minute (the daily crons and the
    reconcile interval keep future runs scheduled; those are not work in flight)."""
    soon = datetime.now(UTC) + timedelta(minutes=1)
    return [
        r
        for r in runs
        if r["deployment_id"]
        and r["state_type"] in ACTIVE
        and (
            r["state_type"] != "SCHEDULED"
            or datetime.fromisoformat(r["expected_start_time"]) <= soon
        )
    ]


def _quiet(http: httpx.Client) -> bool:
    return not _busy(_all_runs(http))


def _wait(loop: LocalStack, what: str, check: Any, timeout: float = 900) -> float:
    t0 = time.monotonic()
    loop.wait_for(what, lambda: bool(check()) or None, timeout=timeout)
    return time.monotonic() - t0


def _quick_run_train_in_the_ui(loop: LocalStack) -> str:
    """Run → Quick run on the train deployment in headless Chromium; the new run's id."""
    from playwright.sync_api import sync_playwright

    from tests.browser.test_prefect_ui import chromium, quick_run

    before = {r["id"] for r in loop.runs("train")}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            page.on(
                "response",
                lambda r: (
                    errors.append(f"{r.request.method} {r.url} -> {r.status}")
                    if r.status >= 400
                    else None
                ),
            )
            page.goto(
                f"{loop.stack.prefect_url}/deployments/deployment/{loop.deployment_id('train')}"
            )
            page.get_by_text("training-pool").first.wait_for(timeout=60_000)
            quick_run(page, errors)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "prefect-ui-train-quick-run.png"), full_page=True)
        finally:
            browser.close()
    created = loop.wait_for(
        "the Quick run of train created",
        lambda: (
            [
                r
                for r in loop.runs("train")
                if r["id"] not in before and not r["auto_scheduled"] and r["parameters"] == {}
            ]
            or None
        ),
        timeout=120,
    )
    return str(created[0]["id"])


def test_a_burst_then_a_restart_mid_chain_loses_nothing(burst: LocalStack) -> None:
    loop = burst
    since = datetime.now(UTC)
    first = _keys(loop, 0, FIRST_DAYS)
    assert len(first) == 2 * FIRST_DAYS
    timings: dict[str, float] = {}

    t0 = time.monotonic()
    _land_all(loop, first)
    _wait(loop, "every landed object ingested once", lambda: _ingested_once(loop, first))
    timings["burst1_all_ingested_s"] = time.monotonic() - t0
    _wait(loop, "every validated day featurised", lambda: _features_built(loop))
    timings["burst1_features_built_s"] = time.monotonic() - t0
    manual = _quick_run_train_in_the_ui(loop)  # while the chain still scores, trains, checks
    _wait(loop, "a challenger decided", lambda: _decided(loop))
    timings["burst1_challenger_decided_s"] = time.monotonic() - t0
    _wait(loop, "the chain at rest", lambda: _quiet(loop.http))
    timings["burst1_quiet_s"] = time.monotonic() - t0
    runs = _all_runs(loop.http)
    db_after_first = prefect_db_bytes(loop.settings)
    [done] = [r for r in runs if r["id"] == manual]
    assert (done["state_type"], done["parameters"]) == ("COMPLETED", {}), done["state"]

    assert _failed_actions(loop.http, since) == []
    assert [r["name"] for r in runs if r["state_type"] in ("CRASHED", "FAILED")] == []
    assert registry.champion_version(loop.settings.tracking_uri, "telco_churn") is not None
    by_flow: dict[str, int] = {}
    for r in runs:
        if r["deployment_id"]:
            by_flow[r["deployment_id"]] = by_flow.get(r["deployment_id"], 0) + 1
    ingest_runs = by_flow.get(loop.deployment_id("ingest"), 0)
    features_runs = by_flow.get(loop.deployment_id("features"), 0)
    assert 1 <= ingest_runs <= 6, f"{ingest_runs} ingest runs for one burst"
    assert 1 <= features_runs <= ingest_runs + 1, f"{features_runs} features runs"

    # the second burst: down / up while its ingest runs
    more = _keys(loop, FIRST_DAYS, MORE_DAYS)
    assert len(more) == 2 * MORE_DAYS
    _land_all(loop, more)
    loop.wait_for(
        "an ingest run of the second burst running",
        lambda: [r for r in loop.runs("ingest") if r["state_type"] == "RUNNING"] or None,
        timeout=600,
    )
    down(loop.settings)
    loop.stack = up(
        loop.settings, prefect_port=free_port(), mlflow_port=free_port(), watch_interval=0.5
    )
    loop.http.close()
    loop.http = api.client(loop.stack.api_url)
    t1 = time.monotonic()
    _wait(loop, "the second burst ingested once", lambda: _ingested_once(loop, first + more))
    timings["burst2_all_ingested_after_restart_s"] = time.monotonic() - t1
    _wait(loop, "every validated day featurised", lambda: _features_built(loop))
    _wait(loop, "the chain at rest after the restart", lambda: _quiet(loop.http))
    timings["burst2_quiet_after_restart_s"] = time.monotonic() - t1

    runs = _all_runs(loop.http)
    assert [r["name"] for r in _busy(runs)] == []
    crashed = [r for r in runs if r["state_type"] == "CRASHED"]
    # only the runs `down` stopped on purpose are Crashed, with the message saying so
    assert all("stack" in (r["state"].get("message") or "").lower() for r in crashed), [
        (r["name"], r["state"].get("message")) for r in crashed
    ]
    assert [r["name"] for r in runs if r["state_type"] == "FAILED"] == []
    assert _failed_actions(loop.http, since) == []
    db_bytes = prefect_db_bytes(loop.settings)
    assert db_bytes < DB_LIMIT, f"Prefect database {db_bytes / 2**20:.1f} MiB"

    ARTIFACTS.mkdir(exist_ok=True)
    record = {
        **{k: round(v, 1) for k, v in timings.items()},
        "landed_days": FIRST_DAYS + MORE_DAYS,
        "db_mib_after_first_burst": round(db_after_first / 2**20, 2),
        "db_mib_at_end": round(db_bytes / 2**20, 2),
        "db_kib_per_landed_day": round(db_bytes / 1024 / (FIRST_DAYS + MORE_DAYS), 1),
        "ingest_runs_first_burst": ingest_runs,
        "features_runs_first_burst": features_runs,
    }
    (ARTIFACTS / "stack-burst.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    print(json.dumps(record))
    assert isinstance(loop.stack.api_url, str) and Path(loop.settings.state_path).is_dir()
