"""The ingest run's drain loop: each round's decision, the loop over a real lake (real GX
validation, the ledger), and its run-level event."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from driftloop_config.settings import PROJECT_ROOT, load_settings
from driftloop_config.usecase import load_usecase
from tasks.drain import BATCH_VALIDATED_EVENT, batch_validated_event, drain, next_round, shortlist
from tasks.ingest import IngestOutcome, Ledger, check_object
from tasks.storage import Lake, ObjectInfo
from tests.helpers import to_csv, usage_rows

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
USECASE = load_usecase(PROJECT_ROOT / "usecases" / "telco_churn.yaml")
MAX = 10_000_000


# ---- each round ---------------------------------------------------------------------------------


def _obj(key: str, *, age: float = 600.0, etag: str = "e1") -> ObjectInfo:
    return ObjectInfo(key=key, size=1, etag=etag, modified=NOW - timedelta(seconds=age))


def test_a_round_takes_every_settled_pending_object_oldest_first() -> None:
    pending = [_obj("b", age=100), _obj("a", age=200), _obj("c", age=1)]
    step = next_round(pending, set(), now=NOW, settle_seconds=5)
    assert [o.key for o in step.take] == ["a", "b"]
    assert (step.wait_seconds, step.unsettled, step.stop) == (None, 1, False)


def test_the_loop_waits_for_an_object_still_changing_then_stops() -> None:
    attempted = {("a", "e1"), ("b", "e1")}
    pending = [_obj("a"), _obj("b"), _obj("c", age=1)]
    step = next_round(pending, attempted, now=NOW, settle_seconds=5)
    assert step.take == [] and step.wait_seconds == 4.0 and not step.stop
    # waited long enough in all: leave it (the watcher announces it once it settles)
    late = next_round(pending, attempted, now=NOW, settle_seconds=5, waited_seconds=120)
    assert late.stop and late.unsettled == 1


def test_the_loop_stops_when_nothing_new_is_pending() -> None:
    # an object this run already tried (e.g. it could not be read) is not tried again
    assert next_round([_obj("a")], {("a", "e1")}, now=NOW).stop
    assert next_round([], set(), now=NOW).stop
    # a new version of it is new work
    step = next_round([_obj("a", etag="e2")], {("a", "e1")}, now=NOW)
    assert [(o.key, o.etag) for o in step.take] == [("a", "e2")]


def test_a_round_is_bounded() -> None:
    pending = [_obj(f"k{i:03d}", age=1000 - i) for i in range(250)]
    step = next_round(pending, set(), now=NOW, max_objects=200)
    assert [o.key for o in step.take] == [f"k{i:03d}" for i in range(200)]


def _outcome(key: str, status: str, rows: int, partitions: list[str]) -> IngestOutcome:
    return IngestOutcome(
        key=key,
        sha256="s",
        etag="e",
        size=1,
        dataset=key.split("/")[0],
        status=status,  # type: ignore[arg-type]
        rows_valid=rows,
        rows_quarantined=1,
        partitions=partitions,
    )


def test_the_run_level_event_only_when_rows_were_validated() -> None:
    outcomes = [
        _outcome("usage/2026-01-02.csv", "partial", 10, ["2026-01-02"]),
        _outcome("usage/2026-01-01.csv", "validated", 5, ["2026-01-01"]),
        _outcome("labels/2026-01-01.csv", "validated", 2, ["2026-01-01"]),
        _outcome("usage/bad.csv", "rejected", 0, []),
    ]
    event = batch_validated_event(outcomes, "file:///lake/landing", rounds=2, run="brave-otter")
    assert event == {
        "event": BATCH_VALIDATED_EVENT,
        "resource": {
            "prefect.resource.id": "driftloop.landing.file:///lake/landing",
            "prefect.resource.name": "ingest brave-otter: 3 objects, 17 rows validated "
            "(2026-01-01..2026-01-02)",
        },
        "payload": {
            "objects": 4,
            "accepted": 3,
            "rejected": 1,
            "ignored": 0,
            "rows_validated": 17,
            "rows_quarantined": 4,
            "partitions": {"labels": ["2026-01-01"], "usage": ["2026-01-01", "2026-01-02"]},
            "rounds": 2,
            "keys": "usage/2026-01-02.csv, usage/2026-01-01.csv, labels/2026-01-01.csv",
        },
    }
    assert batch_validated_event(outcomes[3:], "file:///lake/landing", rounds=1) is None
    assert batch_validated_event([], "file:///lake/landing", rounds=0) is None


def test_shortlists_count_what_they_do_not_name() -> None:
    assert shortlist(["a", "b"]) == "a, b"
    assert shortlist([f"k{i}" for i in range(12)], limit=3) == "k0, k1, k2, +9 more"
    assert shortlist([]) == ""


# ---- the loop over a real lake ------------------------------------------------------------------


def test_a_burst_is_one_run_and_what_lands_meanwhile_is_taken_in_a_next_round(lake: Lake) -> None:
    lake.landing.write_bytes("usage/2026-01-01.csv", to_csv(usage_rows(6)))
    lake.landing.write_bytes("usage/2026-01-02.csv", to_csv(usage_rows(4, day="2026-01-02")))
    announced: list[list[str]] = []
    checks: list[list[str]] = []

    def check_then_land(calls):  # the second delivery lands while the first round works
        checks.append([c["obj"].key for c in calls])
        if len(checks) == 1:
            lake.landing.write_bytes(
                "usage/2026-01-03.csv", to_csv(usage_rows(3, day="2026-01-03"))
            )
        return [check_object(**c) for c in calls]

    drained = drain(
        lake,
        Ledger(lake.ledger),
        USECASE,
        max_bytes=MAX,
        check=check_then_land,
        announce=lambda events: announced.append(
            [e["resource"]["prefect.resource.name"] for e in events]
        ),
    )
    assert drained.rounds == 2
    assert checks == [["usage/2026-01-01.csv", "usage/2026-01-02.csv"], ["usage/2026-01-03.csv"]]
    assert [(o.key, o.status, o.rows_valid) for o in drained.outcomes] == [
        ("usage/2026-01-01.csv", "validated", 6),
        ("usage/2026-01-02.csv", "validated", 4),
        ("usage/2026-01-03.csv", "validated", 3),
    ]
    # each round's events are announced before the next round looks again
    assert announced == [["usage/2026-01-01.csv", "usage/2026-01-02.csv"], ["usage/2026-01-03.csv"]]
    # the ledger holds all three: a second drain finds nothing
    again = drain(lake, Ledger(lake.ledger), USECASE, max_bytes=MAX)
    assert (again.rounds, again.outcomes) == (0, [])


def test_an_object_still_changing_is_waited_for_then_taken(lake: Lake) -> None:
    lake.landing.write_bytes("usage/2026-01-01.csv", to_csv(usage_rows(5)))
    landed = lake.landing.list()[0].modified
    clock = [landed + timedelta(seconds=1)]  # one second after the write: not settled yet
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += timedelta(seconds=seconds)

    drained = drain(
        lake,
        Ledger(lake.ledger),
        USECASE,
        max_bytes=MAX,
        settle_seconds=10,
        clock=lambda: clock[0],
        sleep=sleep,
    )
    assert slept == [9.0]
    assert [(o.key, o.rows_valid) for o in drained.outcomes] == [("usage/2026-01-01.csv", 5)]
    assert drained.rounds == 1


def test_the_same_bytes_under_a_new_etag_are_recorded_not_returned(tmp_path: Path) -> None:
    # a local landing zone: a file's etag follows its times (S3's follows its bytes)
    lake = Lake.from_settings(load_settings(data_root=str(tmp_path / "lake")))
    data = to_csv(usage_rows(5))
    lake.landing.write_bytes("usage/2026-01-01.csv", data)
    first = drain(lake, Ledger(lake.ledger), USECASE, max_bytes=MAX)
    assert [o.status for o in first.outcomes] == ["validated"]
    path = Path(lake.landing.uri.removeprefix("file://")) / "usage/2026-01-01.csv"
    # touched (a new etag), with a time in the past: settled, so taken at once
    os.utime(path, (path.stat().st_atime - 60, path.stat().st_mtime - 60))
    announced: list[int] = []
    again = drain(
        lake,
        Ledger(lake.ledger),
        USECASE,
        max_bytes=MAX,
        announce=lambda e: announced.append(len(e)),
    )
    assert (again.rounds, again.outcomes, announced) == (1, [], [0])
    # recorded: a third drain has nothing left to take
    assert drain(lake, Ledger(lake.ledger), USECASE, max_bytes=MAX).rounds == 0
