"""Reconcile's comparison (a real lake from the simulator and the ingest stage) and which runs
count as on their way."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from driftloop.simulate import simulate
from driftloop_config.usecase import UseCase, load_usecase
from tasks import loop_state, policy
from tasks.drain import drain
from tasks.features import build_features
from tasks.ingest import Ledger
from tasks.reconcile import (
    Action,
    PendingWork,
    RunInfo,
    active_deployments,
    find_work,
    to_start,
)
from tasks.storage import Lake, LocalStorage, write_json
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
    drain(lake, Ledger(lake.ledger), usecase, max_bytes=MAX, keys=keys)


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
    loop_state.write_state(lake.ledger, loop_state.LoopState(last_trained_through=last))
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
    loop_state.write_state(lake.ledger, loop_state.LoopState())
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
    state = policy.record_drift(loop_state.read_state(lake.ledger), change)
    loop_state.write_state(lake.ledger, state)
    assert _work(lake, usecase).actions() == []


def test_a_detection_whose_signals_are_switched_off_starts_no_train_run(
    tmp_path: Path, usecase: UseCase
) -> None:
    lake, _ = _lake(tmp_path, usecase, days=3)
    _ingest(lake, usecase)
    build_features(lake, usecase)
    loop_state.write_state(lake.ledger, loop_state.LoopState())
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


def test_the_pipeline_day_is_the_newest_delivered_one(tmp_path: Path, usecase: UseCase) -> None:
    lake, _ = _lake(tmp_path, usecase, days=2)
    _ingest(lake, usecase)
    work = _work(lake, usecase)
    assert work.day == date(2026, 1, 2)
    assert work.state is not None
    assert replace(work.state, has_champion=False).first_snapshot == date(2026, 1, 2)
