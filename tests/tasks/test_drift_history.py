"""Where drift checks are stored and read back: the stored results of the days before, a check
stored as its report and its result, and the report's link where a browser opens it."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

from tasks.drift import DriftResult
from tasks.drift_history import (
    latest_check,
    previous_results,
    report_link,
    result_key,
    write_check,
)
from tasks.storage import LocalStorage, read_json, write_json


def test_previous_results_are_the_stored_checks_of_the_days_before(tmp_path: Path) -> None:
    reports = LocalStorage(tmp_path)
    day = date(2026, 3, 10)
    for back, version in ((1, "2"), (3, "2"), (4, "1")):
        write_json(reports, result_key("m", day - timedelta(days=back)), {"model_version": version})
    write_json(reports, result_key("m", day), {"model_version": "today"})
    write_json(reports, result_key("other", day - timedelta(days=1)), {"model_version": "x"})
    assert previous_results(reports, "m", day, n=3) == [{"model_version": "2"}]
    assert previous_results(reports, "m", day, n=5) == [
        {"model_version": "2"},
        {"model_version": "2"},
        {"model_version": "1"},
    ]
    assert previous_results(reports, "m", day, n=1) == []


def test_a_check_is_stored_as_its_report_and_the_result_the_next_checks_read(
    tmp_path: Path,
) -> None:
    reports = LocalStorage(tmp_path)
    day = date(2026, 3, 10)
    result = DriftResult(
        model="m",
        model_version="3",
        window=("2026-03-10", "2026-03-10"),
        scores=[],
        prediction=None,
        detected=False,
        signals=["input-drift"],
        severity="watch",
    )
    key = write_check(reports, day, result, "<p>drift — m</p>")
    assert key == "drift/m-2026-03-10.html"
    assert reports.read_bytes(key) == "<p>drift — m</p>".encode()
    stored = json.loads(json.dumps(result.to_dict()))
    assert read_json(reports, result_key("m", day)) == stored
    assert sorted(o.key for o in reports.list()) == [
        "drift/m-2026-03-10.html",
        "drift/m-2026-03-10.json",
    ]
    # what the next day's persistence and the train run's re-baseline read back
    assert previous_results(reports, "m", day + timedelta(days=1), n=2) == [stored]
    assert latest_check(reports, "m", day) == stored
    # another model's or an earlier day's check is not this one
    assert latest_check(reports, "other", day) is None
    assert previous_results(reports, "m", day, n=3) == []


def test_a_report_is_linked_only_where_a_browser_opens_it() -> None:
    key = "drift/m-2026-03-10.html"
    assert report_link("https://lake.example/reports", key) == (
        "https://lake.example/reports/drift/m-2026-03-10.html"
    )
    assert report_link("http://lake:9000/reports", key) == (
        "http://lake:9000/reports/drift/m-2026-03-10.html"
    )
    assert report_link("s3://bucket/lake/reports", key) is None
    assert report_link("file:///srv/lake/reports", key) is None
