"""The landing watcher: a scan's settled objects become one ``driftloop.data.landed`` event,
announced once per (key, etag), remembered across restarts."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from driftloop_config.settings import PROJECT_ROOT, Settings
from driftloop_config.usecase import load_usecase
from tasks.drain import drain
from tasks.ingest import Ledger
from tasks.storage import Lake, LocalStorage
from tasks.watch import LANDED_EVENT, MAX_EVENT_OBJECTS, landed_event, read_announced, scan_once
from tests.helpers import to_csv, usage_rows

USECASE = load_usecase(PROJECT_ROOT / "usecases" / "telco_churn.yaml")


def _lake(tmp_path: Path) -> Lake:
    return Lake(LocalStorage(tmp_path / "lake"))


def _scan(lake: Lake, *, settle: float = 0.0, now: datetime | None = None) -> list[dict[str, Any]]:
    emitted: list[dict[str, Any]] = []
    scan_once(
        lake.landing,
        lake.ledger,
        Ledger(lake.ledger),
        USECASE,
        emitted.append,
        settle_seconds=settle,
        now=now,
    )
    return emitted


def _land(lake: Lake, days: int, start: int = 1) -> list[str]:
    keys = []
    for d in range(start, start + days):
        for kind in ("usage", "labels"):
            key = f"{kind}/2026-01-{d:02d}.csv"
            lake.landing.write_bytes(key, to_csv(usage_rows(3, f"2026-01-{d:02d}")))
            keys.append(key)
    return sorted(keys)


def test_a_burst_is_announced_by_one_event(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    keys = _land(lake, 35)  # 70 files at once
    [event] = _scan(lake)
    assert event["event"] == LANDED_EVENT
    assert event["resource"]["prefect.resource.id"] == f"driftloop.landing.{lake.landing.uri}"
    assert event["resource"]["prefect.resource.name"] == f"{keys[0]} (+69 more)"
    assert event["payload"]["count"] == 70
    assert [o["key"] for o in event["payload"]["objects"]] == keys
    # each object keeps its identity, described as a single-object event describes it
    by_key = {i.key: i for i in lake.landing.list()}
    first = event["payload"]["objects"][0]
    assert first == landed_event(by_key[keys[0]], lake.landing.uri, "labels")["payload"]
    assert {o["dataset"] for o in event["payload"]["objects"]} == {"usage", "labels"}
    assert read_announced(lake.ledger) == {k: by_key[k].etag for k in keys}


def test_nothing_is_announced_twice_even_after_a_restart(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    _land(lake, 2)
    [first] = _scan(lake)
    assert first["payload"]["count"] == 4
    assert _scan(lake) == []  # the memory is in the ledger zone: a new scan is a restart
    new = _land(lake, 1, start=3)
    [second] = _scan(lake)
    assert [o["key"] for o in second["payload"]["objects"]] == new
    assert second["resource"]["prefect.resource.name"] == f"{new[0]} (+1 more)"


def test_changed_content_is_announced_again(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    lake.landing.write_bytes("usage/2026-01-01.csv", to_csv(usage_rows(3)))
    [_] = _scan(lake)
    lake.landing.write_bytes("usage/2026-01-01.csv", to_csv(usage_rows(4)))
    [again] = _scan(lake)
    assert [o["key"] for o in again["payload"]["objects"]] == ["usage/2026-01-01.csv"]
    assert again["resource"]["prefect.resource.name"] == "usage/2026-01-01.csv"
    assert again["payload"]["count"] == 1


def test_ingested_objects_are_not_announced(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    keys = _land(lake, 1)
    ledger = Ledger(lake.ledger)
    done = next(i for i in lake.landing.list() if i.key == keys[1])
    [ingested] = drain(lake, ledger, USECASE, max_bytes=10_000_000, keys=[done.key]).outcomes
    assert ingested.key == keys[1]
    [event] = _scan(lake)
    assert [o["key"] for o in event["payload"]["objects"]] == [keys[0]]


def test_objects_still_changing_wait_for_a_later_scan(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    keys = _land(lake, 1)
    old = (datetime.now(tz=UTC) - timedelta(minutes=5)).timestamp()
    os.utime(tmp_path / "lake" / "landing" / keys[0], (old, old))
    emitted: list[dict[str, Any]] = []
    found = scan_once(
        lake.landing, lake.ledger, Ledger(lake.ledger), USECASE, emitted.append, settle_seconds=60
    )
    assert found.waiting == 1
    assert found.keys == [keys[0]]
    assert [o["key"] for o in emitted[0]["payload"]["objects"]] == [keys[0]]
    later = datetime.now(tz=UTC) + timedelta(minutes=2)
    [event] = _scan(lake, settle=60, now=later)
    assert [o["key"] for o in event["payload"]["objects"]] == [keys[1]]


def test_a_very_large_scan_is_split_into_events_of_bounded_size(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    n = MAX_EVENT_OBJECTS + 3
    for i in range(n):
        lake.landing.write_bytes(f"usage/part-{i:04d}.csv", b"x")
    events = _scan(lake)
    assert [e["payload"]["count"] for e in events] == [MAX_EVENT_OBJECTS, 3]
    keys = [o["key"] for e in events for o in e["payload"]["objects"]]
    assert keys == [f"usage/part-{i:04d}.csv" for i in range(n)]


@pytest.mark.usefixtures("prefect_harness")
def test_the_watch_command_announces_a_scan_in_one_line(
    local_settings: Settings, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    from prefect.settings import PREFECT_API_URL
    from typer.testing import CliRunner

    from driftloop.cli import app

    monkeypatch.setenv("PREFECT_API_URL", str(PREFECT_API_URL.value()))
    # the command installs its own SIGINT/SIGTERM handlers: the session's come back after
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)

    request.addfinalizer(restore)
    lake = Lake.from_settings(local_settings)
    keys = _land(lake, 1)
    result = CliRunner().invoke(app, ["watch", "--once", "--settle", "0"])
    assert result.exit_code == 0, result.output
    assert f"landed: 2 objects: {keys[0]}, {keys[1]}\n" in result.output
    assert sorted(read_announced(lake.ledger)) == keys
    again = CliRunner().invoke(app, ["watch", "--once", "--settle", "0"])
    assert "landed:" not in again.output
