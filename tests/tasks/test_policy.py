from __future__ import annotations

from datetime import date, timedelta

from driftloop.usecase import ModelSpec, RetrainSpec, TargetSpec
from tasks.policy import LoopState, should_train

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
