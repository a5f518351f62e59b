from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from driftloop.usecase import ModelSpec, RetrainSpec, TargetSpec
from tasks.policy import (
    LoopState,
    read_state,
    record_drift,
    record_training,
    should_train,
    training_due_event,
    write_state,
)

TARGET = TargetSpec(
    name="churned",
    labels_dataset="labels",
    event_column="churn_date",
    horizon_days=7,
    label_delay_days=7,
)
MODEL = ModelSpec(registered_name="m", holdout_days=4, validation_days=3)
RETRAIN = RetrainSpec(new_labelled_days=7, min_post_change_days=10)
D0 = date(2026, 1, 1)


def decide(day: int, state: LoopState):  # type: ignore[no-untyped-def]
    return should_train(
        D0 + timedelta(days=day), state, target=TARGET, model=MODEL, retrain=RETRAIN
    )


def test_nothing_without_data() -> None:
    assert not decide(5, LoopState()).train


def test_first_training_waits_for_enough_labelled_snapshots() -> None:
    state = LoopState(first_snapshot=D0 + timedelta(days=1))
    # snapshot s is labelled on s + 13; 4 + 3 + 3 = 10 snapshot days are needed: s = 1..10 → day 23
    assert not decide(22, state).train
    first = decide(23, state)
    assert first.train and first.reason == "new-labels" and first.since is None


def test_periodic_retraining_after_enough_new_labels() -> None:
    state = LoopState(
        has_champion=True, first_snapshot=D0, last_trained_through=D0 + timedelta(days=10)
    )
    assert not decide(29, state).train  # labelled through day 16: 6 new days
    assert decide(30, state).train  # 7 new labelled snapshot days


def test_drift_waits_for_post_change_labels_then_trains_since_the_change() -> None:
    change = D0 + timedelta(days=30)
    state = LoopState(
        has_champion=True,
        first_snapshot=D0,
        last_trained_through=D0 + timedelta(days=20),
        drift_since=change,
    )
    waiting = decide(40, state)
    assert not waiting.train and "waiting" in waiting.reason
    # post-change snapshots 30..39 are labelled on day 52
    assert not decide(51, state).train
    go = decide(52, state)
    assert go.train and go.reason == "drift" and go.since == change and go.trigger == "drift"


def test_after_recovery_trainings_stay_after_the_change() -> None:
    change = D0 + timedelta(days=30)
    state = LoopState(
        has_champion=True,
        first_snapshot=D0,
        last_trained_through=D0 + timedelta(days=39),
        train_since=change,
    )
    later = decide(59, state)
    assert later.train and later.since == change


# ---- the stored state and its transitions ----------------------------------------------------


def test_the_state_round_trips_through_the_ledger_zone(tmp_path: Path) -> None:
    from tasks.storage import open_storage

    ledger = open_storage(f"file://{tmp_path}/ledger")
    assert read_state(ledger) == LoopState()
    state = LoopState(
        has_champion=True,
        first_snapshot=D0,
        last_trained_through=D0 + timedelta(days=9),
        drift_since=D0 + timedelta(days=30),
        train_since=None,
    )
    write_state(ledger, state)
    # has_champion and first_snapshot are derived, not stored
    assert read_state(ledger) == LoopState(
        last_trained_through=D0 + timedelta(days=9), drift_since=D0 + timedelta(days=30)
    )


def test_a_drift_is_recorded_once_and_not_before_the_current_training_data() -> None:
    change = D0 + timedelta(days=30)
    state = record_drift(LoopState(has_champion=True), change)
    assert state.drift_since == change
    assert record_drift(state, change + timedelta(days=3)).drift_since == change  # pending
    trained_after = LoopState(has_champion=True, train_since=change)
    assert record_drift(trained_after, change) == trained_after
    assert record_drift(
        trained_after, change + timedelta(days=20)
    ).drift_since == change + timedelta(days=20)


def test_a_promoted_model_trained_since_the_change_resolves_it() -> None:
    change = D0 + timedelta(days=30)
    pending = LoopState(has_champion=True, first_snapshot=D0, drift_since=change)
    through = D0 + timedelta(days=45)
    rejected = record_training(pending, trained_through=through, promoted=False, since=change)
    assert rejected.drift_since == change and rejected.last_trained_through == through
    # a model trained on everything (since=None) does not resolve the change
    assert record_training(pending, trained_through=through, promoted=True, since=None).drift_since
    resolved = record_training(pending, trained_through=through, promoted=True, since=change)
    assert resolved.drift_since is None and resolved.train_since == change
    # and the next decision is ordinary periodic retraining on data since the change
    assert decide(59, resolved).reason == "champion is current"
    later = decide(66, resolved)
    assert later.train and later.reason == "new-labels" and later.since == change


def test_the_training_due_event_carries_what_the_trigger_renders() -> None:
    decision = decide(23, LoopState(first_snapshot=D0 + timedelta(days=1)))
    event = training_due_event("telco_churn", D0 + timedelta(days=23), decision)
    assert event["event"] == "driftloop.training.due"
    assert event["resource"]["prefect.resource.id"] == "driftloop.model.telco_churn"
    assert event["payload"] == {
        "reason": "new-labels",
        "why": "new-labels",
        "as_of": "2026-01-24",
        "since": None,
    }


def test_a_training_finished_late_does_not_move_the_record_back() -> None:
    """A run stopped before recording its training is recorded by the next run; when a newer
    training was recorded meanwhile, that one stays."""
    newer = LoopState(last_trained_through=date(2026, 3, 10))
    late = record_training(newer, trained_through=date(2026, 3, 1), promoted=False, since=None)
    assert late.last_trained_through == date(2026, 3, 10)
    later = record_training(newer, trained_through=date(2026, 3, 12), promoted=False, since=None)
    assert later.last_trained_through == date(2026, 3, 12)
