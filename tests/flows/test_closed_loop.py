"""A shortened closed loop (small telco, short horizons) through the real flows: the summary's
invariants hold, nothing defective is lost, and every report is linked."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from driftloop.demo import run
from driftloop.settings import load_settings
from tasks.storage import Lake
from tests.support.usecases import usecase_with

pytestmark = pytest.mark.usefixtures("prefect_harness")
DAYS, DRIFT_DAY, HISTORY = 22, 8, 10


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("loop")
    mp = pytest.MonkeyPatch()
    mp.setenv("DRIFTLOOP_DATA_ROOT", str(tmp / "lake"))
    mp.setenv(
        "DRIFTLOOP_USECASE",
        str(
            usecase_with(
                tmp,
                target={"horizon_days": 3, "label_delay_days": 2},
                model={
                    "holdout_days": 2,
                    "validation_days": 2,
                    "min_history_days": 7,
                    "floor": 0.5,
                    "bootstrap_samples": 100,
                },
                retrain={"min_post_change_days": 6, "new_labelled_days": 5},
            )
        ),
    )
    summary = run(DAYS, 400, DRIFT_DAY, 0.01, seed=3, history_days=HISTORY)
    yield summary, Lake.from_settings(load_settings())
    mp.undo()


def test_summary_shape_and_days(loop) -> None:  # type: ignore[no-untyped-def]
    summary, lake = loop
    assert summary["days"] == DAYS and summary["drift_day"] == DRIFT_DAY
    days = [d["day"] for d in summary["daily"]]
    assert days == list(range(DAYS))
    first = date(2026, 1, 1) + timedelta(days=HISTORY)
    assert [d["date"] for d in summary["daily"]] == [
        (first + timedelta(days=i)).isoformat() for i in days
    ]
    stored = json.loads(lake.reports.read_bytes("demo-summary.json"))
    for key in ("daily", "promotions", "trainings", "alarm_days", "auc_pre_drift"):
        assert stored[key] == summary[key], key
    # a first model was promoted by the loop itself, and every promotion is a training of its day
    assert summary["promotions"], summary["trainings"]
    promoted = [(t["day"], t["version"]) for t in summary["trainings"] if t["promoted"]]
    assert promoted == [(p["day"], p["version"]) for p in summary["promotions"]]
    # at most one training per day (one per as_of, however many events asked)
    days = [t["day"] for t in summary["trainings"]]
    assert len(days) == len(set(days)), summary["trainings"]
    assert summary["alarm_days"] == [d["day"] for d in summary["daily"] if d["drift_detected"]]


def test_nothing_defective_is_lost(loop) -> None:  # type: ignore[no-untyped-def]
    summary, lake = loop
    assert summary["defects"]["missed"] == 0 and summary["defects"]["injected"] > 0
    # each day's row counts are exactly what the ledger recorded for that day's landed files
    from tasks.ingest import open_ledger

    ledger = open_ledger(lake.ledger)
    for d in summary["daily"]:
        records = [ledger.latest(k) for k in ledger.landing_keys() if d["date"] in k]
        assert len(records) == 2, d  # the day's usage and labels
        assert d["rows_validated"] == sum(r["rows_valid"] for r in records), d
        assert d["rows_quarantined"] == sum(r["rows_quarantined"] for r in records), d
    assert sum(d["rows_validated"] for d in summary["daily"]) > 0


def test_champion_follows_the_promotions(loop) -> None:  # type: ignore[no-untyped-def]
    summary, _ = loop
    promotions = summary["promotions"]
    assert promotions, "the loop promoted no champion by itself"
    versions = [int(p["version"]) for p in promotions]
    assert versions == sorted(versions)
    by_day = {p["day"]: p["version"] for p in promotions}
    champion = None
    for d in summary["daily"]:
        champion = by_day.get(d["day"], champion)
        assert d["champion_version"] == champion, d
    for p in promotions[1:]:
        assert p["auc_delta_ci"] is not None and p["auc_delta_ci"][0] <= p["auc_delta_ci"][1]


def test_drift_is_reported_consistently(loop) -> None:  # type: ignore[no-untyped-def]
    summary, _ = loop
    first = summary["drift_detected_first_day"]
    flagged = [d["day"] for d in summary["daily"] if d["drift_detected"]]
    assert (first is None) == (not flagged)
    if first is not None:
        assert first == flagged[0]
        assert summary["daily"][first]["champion_version"] is not None


def test_index_links_every_report(loop) -> None:  # type: ignore[no-untyped-def]
    _, lake = loop
    index = lake.reports.read_bytes("index.html").decode()
    html = [o.key for o in lake.reports.list() if o.key.endswith(".html") and o.key != "index.html"]
    assert html and all(f'href="{k}"' in index for k in html)
    assert any(k.startswith("drift/") for k in html) and any(
        k.startswith("training/") for k in html
    )
