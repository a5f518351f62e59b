"""The closed loop on the simulator through the real flows, with the shipped telco use case: a
stable world stays quiet; a reality change is detected within 3 days, a champion retrained on
the changed world is promoted by the loop itself, and the monitor is quiet again after that
promotion. The changed world's summary, lake and reports are checked too."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from driftloop.demo import START, run
from driftloop_config.settings import load_settings
from tasks.ingest import Ledger, open_ledger
from tasks.storage import Lake
from tests.support import replaying

# two 60-day loops, their first 30 days played once (~6 min on a quiet machine); a loaded one
# needs more
pytestmark = [
    pytest.mark.usefixtures("prefect_harness"),
    pytest.mark.slow,
    pytest.mark.timeout(1500),
]

DAYS, CUSTOMERS, CHANGE, HISTORY, SEED = 60, 1000, 30, 30, 7


def _loop(
    root: Path, drift_day: int | None, play_days: int | None = None
) -> tuple[dict[str, Any], Lake]:
    mp = pytest.MonkeyPatch()
    mp.setenv("DRIFTLOOP_DATA_ROOT", str(root))
    mp.delenv("DRIFTLOOP_USECASE", raising=False)  # the shipped telco use case
    try:
        summary = run(
            DAYS, CUSTOMERS, drift_day, 0.01, seed=SEED, history_days=HISTORY, play_days=play_days
        )
        return summary, Lake.from_settings(load_settings())
    finally:
        mp.undo()


def _latest(ledger: Ledger, key: str) -> dict[str, Any]:
    """The newest ledger record of ``key``, which has one."""
    rec = ledger.latest(key)
    assert rec is not None, key
    return rec


@pytest.fixture(scope="module")
def before_change(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The two worlds are one world until the change (the simulator draws each day from the
    seed and the day alone): its history and live days before the change are played once, in
    one lake, which is then copied (the stable world, ``play_days`` later going on without the
    change) and kept (the changed world)."""
    changed = tmp_path_factory.mktemp("changed") / "lake"
    played, _ = _loop(changed, CHANGE, play_days=CHANGE)
    # the part's summary covers the days played, and the defects of the files they landed
    assert [d["day"] for d in played["daily"]] == list(range(CHANGE)), played["daily"]
    assert played["defects"]["missed"] == 0 and played["defects"]["injected"] > 0
    stable = tmp_path_factory.mktemp("stable") / "lake"
    replaying.copy_lake(changed, stable)
    return stable, changed


@pytest.fixture(scope="module")
def stable(before_change: tuple[Path, Path]) -> Iterator[dict[str, Any]]:
    yield _loop(before_change[0], None)[0]


@pytest.fixture(scope="module")
def world(before_change: tuple[Path, Path]) -> Iterator[tuple[dict[str, Any], Lake]]:
    yield _loop(before_change[1], CHANGE)


@pytest.fixture(scope="module")
def changed(world: tuple[dict[str, Any], Lake]) -> dict[str, Any]:
    return world[0]


def test_a_stable_world_is_quiet(stable: dict[str, Any]) -> None:
    assert len(stable["alarm_days"]) <= 2, stable["alarm_days"]
    assert [t for t in stable["trainings"] if t["reason"] == "drift"] == []
    # the loop did run: a first champion was promoted and checked every day after it
    assert stable["promotions"], stable["trainings"]
    first = stable["promotions"][0]["day"]
    checked = [d for d in stable["daily"] if d["day"] >= first]
    assert all(d["champion_version"] is not None for d in checked)


def test_a_change_is_detected_within_three_days(changed: dict[str, Any]) -> None:
    first = changed["drift_detected_first_day"]
    assert first is not None, changed["alarm_days"]
    assert CHANGE <= first <= CHANGE + 3, changed["alarm_days"]
    # no alarm before the change
    assert [d for d in changed["alarm_days"] if d < CHANGE] == []


def test_the_loop_recovers_by_itself_and_is_quiet_after(changed: dict[str, Any]) -> None:
    recovered = [t for t in changed["trainings"] if t["reason"] == "drift" and t["promoted"]]
    assert recovered, changed["trainings"]
    day = recovered[0]["day"]
    assert changed["daily"][day]["champion_version"] == recovered[0]["version"]
    assert [d for d in changed["alarm_days"] if d > day] == [], (day, changed["alarm_days"])
    # the retrained champion beats the one it replaced on the changed world
    assert changed["auc_post_recovery"] > changed["auc_stale_champion_post_drift"]
    # at most one training per day, however many events asked
    days = [t["day"] for t in changed["trainings"]]
    assert len(days) == len(set(days)), changed["trainings"]


def test_summary_shape_and_days(world: tuple[dict[str, Any], Lake]) -> None:
    summary, lake = world
    assert summary["days"] == DAYS and summary["drift_day"] == CHANGE
    assert [d["day"] for d in summary["daily"]] == list(range(DAYS))
    first = START + timedelta(days=HISTORY)
    assert [d["date"] for d in summary["daily"]] == [
        (first + timedelta(days=i)).isoformat() for i in range(DAYS)
    ]
    stored = json.loads(lake.reports.read_bytes("demo-summary.json"))
    for key in ("daily", "promotions", "trainings", "alarm_days", "auc_pre_drift"):
        assert stored[key] == summary[key], key
    promoted = [(t["day"], t["version"]) for t in summary["trainings"] if t["promoted"]]
    assert promoted == [(p["day"], p["version"]) for p in summary["promotions"]]
    assert summary["alarm_days"] == [d["day"] for d in summary["daily"] if d["drift_detected"]]
    assert summary["alarm_days"][0] == summary["drift_detected_first_day"]


def test_nothing_defective_is_lost(world: tuple[dict[str, Any], Lake]) -> None:
    summary, lake = world
    assert summary["defects"]["missed"] == 0 and summary["defects"]["injected"] > 0
    # each day's row counts are exactly what the ledger recorded for that day's landed files
    ledger = open_ledger(lake.ledger)
    for d in summary["daily"]:
        records = [_latest(ledger, k) for k in ledger.landing_keys() if d["date"] in k]
        assert len(records) == 2, d  # the day's usage and labels
        assert d["rows_validated"] == sum(r["rows_valid"] for r in records), d
        assert d["rows_quarantined"] == sum(r["rows_quarantined"] for r in records), d
    assert sum(d["rows_validated"] for d in summary["daily"]) > CUSTOMERS * DAYS // 2


def test_champion_follows_the_promotions(world: tuple[dict[str, Any], Lake]) -> None:
    summary, _ = world
    promotions = summary["promotions"]
    versions = [int(p["version"]) for p in promotions]
    assert len(versions) >= 2 and versions == sorted(versions)
    by_day = {p["day"]: p["version"] for p in promotions}
    champion = None
    for d in summary["daily"]:
        champion = by_day.get(d["day"], champion)
        assert d["champion_version"] == champion, d
    for p in promotions[1:]:
        assert p["auc_delta_ci"] is not None and p["auc_delta_ci"][0] <= p["auc_delta_ci"][1]


def test_index_links_every_report(world: tuple[dict[str, Any], Lake]) -> None:
    _, lake = world
    index = lake.reports.read_bytes("index.html").decode()
    html = [o.key for o in lake.reports.list() if o.key.endswith(".html") and o.key != "index.html"]
    assert html and all(f'href="{k}"' in index for k in html)
    assert any(k.startswith("drift/") for k in html) and any(
        k.startswith("training/") for k in html
    )
