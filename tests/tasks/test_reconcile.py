"""Reconcile's comparison (a real lake from the simulator and the ingest stage), the ingest
flow's drain-loop decision and its run-level event, and which runs count as on their way."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from driftloop.simulate import simulate
from driftloop_config.usecase import UseCase, load_usecase
from tasks import policy
from tasks.features import build_features
from tasks.ingest import IngestOutcome, Ledger, find_pending, ingest_object
from tasks.reconcile import (
    BATCH_VALIDATED_EVENT,
    Action,
    PendingWork,
    RunInfo,
    active_deployments,
    batch_validated_event,
    find_work,
    next_round,
    shortlist,
    to_start,
)
from tasks.storage import Lake, LocalStorage, ObjectInfo, write_json
from tasks.training_set import last_snapshot_day
from tests.helpers import to_csv, usage_rows
from tests.support.stack import SMALL_LOOP, START, due_day
from tests.support.usecases import usecase_with

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MAX = 50_000_000


@pytest.fixture(scope="module")
def usecase(tmp_path_factory: pytest.TempPathFactory) -> UseCase:
    return load_usecase(usecase_with(tmp_path_factory.mktemp("usecase"), **SMALL_LOOP))


def _lake(tmp_path: Path, usecase: UseCase, days: int) -> tuple[Lake, list[str]]:
    lake = Lake(LocalStorage(tmp_path / "lake"))
    assert usecase.target is not None
    simulate(
        lake.landing,
        days=days,
        start=START,
        customers=40,
        seed=3,
        label_delay_days=usecase.target.label_delay_days,
    )
    return lake, sorted(i.key for i in lake.landing.list())


def _ingest(lake: Lake, usecase: UseCase, keys: list[str] | None = None) -> None:
    ledger = Ledger(lake.ledger)
    for obj in find_pending(lake.landing, ledger, keys=keys):
        ingest_object(lake, ledger, usecase, obj, max_bytes=MAX)


def _work(lake: Lake, usecase: UseCase) -> PendingWork:
    """What reconcile finds an hour from now (everything landed has settled)."""
    return find_work(
        lake, usecase, has_champion=False, now=datetime.now(tz=UTC) + timedelta(hours=1)
    )


# ---- the comparison -----------------------------------------------------------------------------


def test_an_unledgered_object_asks_for_an_ingest_run(tmp_path: Path, usecase: UseCase) -> None:
    lake, keys = _lake(tmp_path, usecase, days=3)
    _ingest(lake, usecase, keys[:-1])
    build_features(lake, usecase)
    work = _work(lake, usecase)
    assert work.objects == [keys[-1]]
    assert work.actions() == [
        Action("ingest", f"1 landed objects not ingested: {keys[-1]}", {"trigger": "reconcile"})
    ]


def test_objects_landed_a_moment_ago_are_left_to_their_event(
    tmp_path: Path, usecase: UseCase
) -> None:
    lake, keys = _lake(tmp_path, usecase, days=1)
    work = find_work(
        lake, usecase, has_champion=False, now=datetime.now(tz=UTC), settle_seconds=600
    )
    assert work.objects == []
    assert work.recent == keys
    assert work.actions() == []


def test_a_validated_day_without_features_asks_for_a_features_run(
    tmp_path: Path, usecase: UseCase
) -> None:
    lake, _ = _lake(tmp_path, usecase, days=3)
    _ingest(lake, usecase)
    work = _work(lake, usecase)
    assert work.objects == []
    days = [START + timedelta(days=d) for d in range(3)]
    assert work.feature_days == days
    assert work.actions() == [
        Action(
            "features",
            "3 validated days without current features: " + ", ".join(map(str, days)),
            {"trigger": "reconcile"},
        )
    ]
    build_features(lake, usecase)
    # a late delivery for the newest day changes that day's inputs (the others' windows end
    # before it): that day again
    lake.landing.write_bytes("usage/late-2026-01-03.csv", to_csv(usage_rows(3, "2026-01-03", 9000)))
    _ingest(lake, usecase)
    assert _work(lake, usecase).feature_days == [date(2026, 1, 3)]


def test_a_context_day_without_features_asks_for_a_features_run(tmp_path: Path) -> None:
    """A status file of a context source (plan tiers) for a new week changes only its own
    feature table: that day is pending though the accounts' table is current."""
    import pandas as pd

    from driftloop_config.settings import PROJECT_ROOT
    from examples import saas_retention as saas

    usecase = load_usecase(PROJECT_ROOT / "usecases" / "saas_retention.yaml")
    lake = Lake(LocalStorage(tmp_path / "lake"))
    landed = saas.simulate_saas(lake.landing, weeks=2, accounts=30, signups_per_week=2)
    _ingest(lake, usecase)
    build_features(lake, usecase)
    assert _work(lake, usecase).feature_days == []
    later = landed.week_ends[-1] + timedelta(days=7)
    status = pd.DataFrame(
        {"plan_tier": ["team"], "week_end": [later], "incidents": [9], "outage_minutes": [60.0]}
    )
    lake.landing.write_bytes(
        f"tier_status/{later.isoformat()}.csv", status.to_csv(index=False).encode()
    )
    _ingest(lake, usecase)
    work = _work(lake, usecase)
    assert work.feature_days == [later]
    build_features(lake, usecase)
    assert _work(lake, usecase).feature_days == []


def test_nothing_pending_means_no_action(tmp_path: Path, usecase: UseCase) -> None:
    lake, _ = _lake(tmp_path, usecase, days=3)
    _ingest(lake, usecase)
    build_features(lake, usecase)
    work = _work(lake, usecase)
    assert (work.objects, work.recent, work.feature_days) == ([], [], [])
    assert work.decision is not None and not work.decision.train
    assert work.decision.reason == "no champion: waiting for labelled snapshots (0/7 days)"
    assert work.actions() == []


def test_a_due_training_is_asked_once_per_set_of_labels(tmp_path: Path, usecase: UseCase) -> None:
    assert usecase.target is not None
    due = due_day(usecase)
    lake, _ = _lake(tmp_path, usecase, days=(due - START).days + 1)
    _ingest(lake, usecase)
    build_features(lake, usecase)
    work = _work(lake, usecase)
    assert work.day == due
    assert work.training_due
    assert work.actions() == [
        Action(
            "train",
            f"the retraining policy wants a model as of {due} (new-labels)",
            {"reason": "new-labels", "as_of": due.isoformat()},
        )
    ]
    # a training used these labels (its challenger was rejected: still no champion)
    last = last_snapshot_day(
        due,
        horizon_days=usecase.target.horizon_days,
        label_delay_days=usecase.target.label_delay_days,
    )
    policy.write_state(lake.ledger, policy.LoopState(last_trained_through=last))
    again = _work(lake, usecase)
    assert again.decision is not None and again.decision.train  # the policy alone would repeat
    assert not again.training_due
    assert again.actions() == []


def test_a_lost_drift_event_asks_for_a_train_run_that_records_it(
    tmp_path: Path, usecase: UseCase
) -> None:
    lake, _ = _lake(tmp_path, usecase, days=3)
    _ingest(lake, usecase)
    build_features(lake, usecase)
    policy.write_state(lake.ledger, policy.LoopState())
    change = START + timedelta(days=1)
    write_json(
        lake.reports,
        "drift/telco_churn-2026-01-03.json",
        {
            "detected": True,
            "window": [change.isoformat(), "2026-01-03"],
            "model_version": "1",
            "signals": ["input-drift", "estimated-drop"],
            "severity": "severe",
        },
    )
    work = _work(lake, usecase)
    assert work.unrecorded_drift == change
    # the train run gets what the lost event would have carried
    assert work.actions() == [
        Action(
            "train",
            f"drift detected from {change} is not recorded in the loop state",
            {
                "reason": "drift",
                "as_of": "2026-01-03",  # the window's last day, as the drift trigger renders
                "drift_start": change.isoformat(),
                "signals": ["input-drift", "estimated-drop"],
                "severity": "severe",
            },
        )
    ]
    # the train run recorded it (the state is written after the report)
    state = policy.record_drift(policy.read_state(lake.ledger), change)
    policy.write_state(lake.ledger, state)
    assert _work(lake, usecase).actions() == []


def test_a_detection_whose_signals_are_switched_off_starts_no_train_run(
    tmp_path: Path, usecase: UseCase
) -> None:
    lake, _ = _lake(tmp_path, usecase, days=3)
    _ingest(lake, usecase)
    build_features(lake, usecase)
    policy.write_state(lake.ledger, policy.LoopState())
    write_json(
        lake.reports,
        "drift/telco_churn-2026-01-03.json",
        {
            "detected": True,
            "window": ["2026-01-02", "2026-01-03"],
            "model_version": "1",
            "signals": ["estimated-drop"],
            "severity": "drift",
        },
    )
    off = usecase.model_copy(
        update={"retrain": usecase.retrain.model_copy(update={"on_estimated_drop": False})}
    )
    assert _work(lake, off).unrecorded_drift is None
    assert _work(lake, off).actions() == []
    assert _work(lake, usecase).unrecorded_drift == date(2026, 1, 2)


# ---- the ingest flow's drain loop ---------------------------------------------------------------


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


# ---- what is on its way -------------------------------------------------------------------------


def _run(dep: str, state: str, *, start_in: float = 0.0, name: str = "r") -> RunInfo:
    return RunInfo(dep, state, state.title(), NOW + timedelta(seconds=start_in), name)


def test_which_runs_are_on_their_way() -> None:
    runs = [
        _run("ingest", "SCHEDULED", start_in=-300, name="late"),  # Late / awaiting a slot
        _run("features", "SCHEDULED", start_in=86400, name="tomorrow"),  # the daily cron's
        _run("train", "COMPLETED", name="done"),
        _run("train", "CRASHED", name="crashed"),
        _run("score", "RUNNING", name="running"),
    ]
    active = active_deployments(runs, NOW)
    assert {dep: [r.name for r in rs] for dep, rs in active.items()} == {
        "ingest": ["late"],
        "score": ["running"],
    }
    wanted = [Action("ingest", "x"), Action("features", "y"), Action("train", "z")]
    assert to_start(wanted, active) == wanted[1:]


def test_shortlists_count_what_they_do_not_name() -> None:
    assert shortlist(["a", "b"]) == "a, b"
    assert shortlist([f"k{i}" for i in range(12)], limit=3) == "k0, k1, k2, +9 more"
    assert shortlist([]) == ""


def test_the_pipeline_day_is_the_newest_delivered_one(tmp_path: Path, usecase: UseCase) -> None:
    lake, _ = _lake(tmp_path, usecase, days=2)
    _ingest(lake, usecase)
    work = _work(lake, usecase)
    assert work.day == date(2026, 1, 2)
    assert work.state is not None
    assert replace(work.state, has_champion=False).first_snapshot == date(2026, 1, 2)
