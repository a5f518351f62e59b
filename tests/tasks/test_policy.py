"""The retraining policy: when to train, and the rules that keep it from storming (one training
per as_of, back-off in rows and positives, widening after a failed drift attempt, switches per
drift signal, every decision logged) on the state it keeps between runs (its storage and the
log's bound: tests/tasks/test_loop_state.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from driftloop_config.settings import Settings
from driftloop_config.usecase import ModelSpec, RetrainSpec, TargetSpec, load_usecase
from tasks.loop_state import (
    DECISION_LOG,
    STATE_KEY,
    Attempt,
    Backoff,
    Entry,
    Labelled,
    LoopState,
    log,
    read_state,
    write_state,
)
from tasks.policy import (
    MAX_WIDENING,
    Deferral,
    RunRequest,
    TrainDecision,
    TrainingCheck,
    TrainPlan,
    current_state,
    enabled_signals,
    labelled_after,
    newly_labelled,
    note_drift,
    plan_run,
    plan_training,
    post_change_days_wanted,
    quiet_change,
    record_drift,
    record_insufficient,
    record_insufficient_run,
    record_judged_run,
    record_training,
    should_train,
    training_check,
    training_due_event,
)
from tests.support.usecases import usecase_with

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


def decide(day: int, state: LoopState):
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


# ---- the state's transitions ------------------------------------------------------------------


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
        "why": "new-labels: no champion; 10 labelled snapshot days",
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


# ---- one training per as_of ---------------------------------------------------------------------

CHANGE = D0 + timedelta(days=30)


def _plan(state: LoopState, day: int, trigger: str, **request: Any) -> tuple[LoopState, Any]:
    return plan_run(
        state,
        day=D0 + timedelta(days=day),
        request=RunRequest(trigger=trigger, **request),  # type: ignore[arg-type]
        target=TARGET,
        model=MODEL,
        retrain=RETRAIN,
    )


def test_a_second_request_for_the_same_as_of_is_a_recorded_no_op() -> None:
    day = D0 + timedelta(days=40)
    trained = record_training(
        LoopState(has_champion=True, first_snapshot=D0, last_trained_through=D0),
        trained_through=day - timedelta(days=13),
        promoted=False,
        since=None,
        as_of=day,
        version="7",
        trigger="new-labels",
        day=day,
    )
    assert trained.last_attempt == Attempt(
        day, day - timedelta(days=13), "rejected", "7", "new-labels", None
    )
    # whatever asks, for that day or an earlier one: not again
    for trigger, extra in (
        ("new-labels", {}),
        ("drift", {"drift_start": CHANGE}),
        ("schedule", {}),
    ):
        state, decision = _plan(trained, 40, trigger, **extra)
        assert not decision.train and decision.action == "duplicate"
        assert decision.reason == "already trained as of 2026-02-10: v7 rejected"
        assert state.decisions[-1] == Entry(
            day, "duplicate", decision.reason, as_of=day, version="7", trigger=trigger
        )
    assert should_train(
        day - timedelta(days=1), trained, target=TARGET, model=MODEL, retrain=RETRAIN
    ).action == ("duplicate")
    # an operator's manual run still trains
    _, manual = _plan(trained, 40, "manual", since=CHANGE)
    assert manual.train and manual.since == CHANGE
    # the next day is a new request (here: still backing off after the rejection)
    assert should_train(
        day + timedelta(days=1), trained, target=TARGET, model=MODEL, retrain=RETRAIN
    ).action == ("back-off")


def test_the_duplicate_of_an_insufficient_attempt_says_so() -> None:
    day = D0 + timedelta(days=30)
    state = record_insufficient(
        LoopState(first_snapshot=D0),
        day=day,
        as_of=day,
        trained_through=day - timedelta(days=13),
        why="insufficient evidence: the holdout holds 169 rows / 6 positives",
        trigger="new-labels",
        since=None,
    )
    decision = decide(30, state)
    assert (decision.train, decision.action) == (False, "duplicate")
    assert decision.reason == "already tried as of 2026-01-31: insufficient evidence"


# ---- back-off -----------------------------------------------------------------------------------


def _backing_off(evidence: Labelled | None) -> LoopState:
    rejected = record_training(
        LoopState(has_champion=True, first_snapshot=D0, last_trained_through=D0),
        trained_through=D0 + timedelta(days=20),
        promoted=False,
        since=None,
        as_of=D0 + timedelta(days=33),
        version="3",
        trigger="new-labels",
        retrain=RETRAIN,
    )
    return replace(rejected, evidence=evidence)


def test_after_a_rejection_the_loop_backs_off_until_rows_and_positives() -> None:
    retrain = RetrainSpec(new_labelled_days=7, backoff_rows=500, backoff_positives=20)
    day = D0 + timedelta(days=45)  # 12 new labelled days: periodic retraining would be due

    def at(evidence: Labelled | None):
        return should_train(
            day, _backing_off(evidence), target=TARGET, model=MODEL, retrain=retrain
        )

    state = _backing_off(None)
    assert state.backoff == Backoff(
        day=D0 + timedelta(days=33),
        as_of=D0 + timedelta(days=33),
        after=D0 + timedelta(days=20),
        why="v3 rejected",
    )
    assert state.decisions[-1].action == "rejected"
    assert "backing off until 500 newly labelled rows and 20 positives after 2026-01-21" in (
        state.decisions[-1].reason
    )
    for evidence in (None, Labelled(0, 0), Labelled(499, 20), Labelled(5000, 19)):
        decision = at(evidence)
        assert (decision.train, decision.action) == (False, "back-off"), evidence
    waiting = at(Labelled(499, 20))
    assert waiting.reason == (
        "backing off after v3 rejected as of 2026-02-03: 499/500 newly labelled rows and "
        "20/20 positives after 2026-01-21"
    )
    over = at(Labelled(500, 20))
    assert over.train and over.reason == "new-labels"
    # over, but the usual rules still apply: nothing new since the last training → no training
    early = should_train(
        D0 + timedelta(days=34),
        _backing_off(Labelled(500, 20)),
        target=TARGET,
        model=MODEL,
        retrain=retrain,
    )
    assert (early.train, early.reason) == (False, "champion is current")


def test_a_promotion_ends_the_back_off() -> None:
    state = _backing_off(Labelled(0, 0))
    promoted = record_training(
        state,
        trained_through=D0 + timedelta(days=30),
        promoted=True,
        since=None,
        as_of=D0 + timedelta(days=43),
        version="4",
    )
    assert promoted.backoff is None and promoted.last_attempt is not None
    assert promoted.last_attempt.outcome == "promoted"


def test_new_evidence_is_counted_on_the_labelled_snapshots_after_the_attempt() -> None:
    frame = pd.DataFrame(
        {
            "customer_id": ["a", "b", "a", "b", "c", "a"],
            "event_timestamp": pd.to_datetime(
                [
                    "2026-01-20",
                    "2026-01-20",
                    "2026-01-21",
                    "2026-01-21",
                    "2026-01-21",
                    "2026-01-22",
                ],
                utc=True,
            ),
            "churned": [1, 1, 0, 1, 1, 1],
        }
    )
    assert labelled_after(frame, after=D0 + timedelta(days=18), label="churned") == Labelled(6, 5)
    assert labelled_after(frame, after=D0 + timedelta(days=19), label="churned") == Labelled(4, 3)
    assert labelled_after(frame, after=D0 + timedelta(days=20), label="churned") == Labelled(1, 1)
    assert labelled_after(frame, after=D0 + timedelta(days=21), label="churned") == Labelled(0, 0)
    assert labelled_after(frame.iloc[0:0], after=D0, label="churned") == Labelled(0, 0)


def test_the_lake_wrapper_counts_the_newly_labelled_snapshots(
    local_settings: Settings, tmp_path: Path
) -> None:
    """current_state counts, during a back-off, the snapshots labelled after the attempt."""
    from tasks.storage import Lake, write_parquet
    from tests.tasks.test_features import usage

    usecase = load_usecase(
        usecase_with(
            tmp_path,
            target={"horizon_days": 2, "label_delay_days": 1},
            model={"min_history_days": 0},
        )
    )
    lake = Lake.from_settings(local_settings)
    for day in range(1, 11):  # A, B, C active Jan 1..10
        when = D0 + timedelta(days=day - 1)
        rows = [{"customer_id": c, "date": when} for c in ("A", "B", "C")]
        key = f"usage/date={when.isoformat()}/usage__{when.isoformat()}.csv.parquet"
        write_parquet(lake.validated, key, usage(rows))
    # B churns Jan 6 (reported Jan 7), C churns Jan 9 (reported Jan 10)
    for cid, churn in (("B", 6), ("C", 9)):
        reported = D0 + timedelta(days=churn)
        labels = pd.DataFrame(
            {
                "customer_id": pd.Series([cid], dtype="string"),
                "churn_date": pd.to_datetime([D0 + timedelta(days=churn - 1)]),
                "reported_date": pd.to_datetime([reported]),
            }
        )
        key = f"labels/reported_date={reported.isoformat()}/labels__{reported.isoformat()}.csv.parquet"
        write_parquet(lake.validated, key, labels)
    after = D0 + timedelta(days=3)  # the attempt saw snapshots up to Jan 4
    as_of = D0 + timedelta(days=9)  # Jan 10: snapshots up to Jan 8 are labelled (2 - 1 + 1)
    # snapshots Jan 5..8: A every day (4), B on Jan 5 and 6 (churns Jan 6), C on Jan 5..8;
    # positives: B on Jan 5 and 6 ([s, s + 2) holds Jan 6), C on Jan 8 (holds Jan 9)
    assert newly_labelled(lake, usecase, as_of=as_of, after=after) == Labelled(10, 3)
    assert usecase.target is not None
    recurring = usecase.model_copy(
        update={"target": usecase.target.model_copy(update={"recurring": True})}
    )
    # recurring: B stays in Jan 7 and 8 (2 more rows), no more positives
    assert newly_labelled(lake, recurring, as_of=as_of, after=after) == Labelled(12, 3)

    write_state(lake.ledger, LoopState(backoff=Backoff(as_of, as_of, after, "v3 rejected")))
    state = current_state(lake, usecase, has_champion=True, day=as_of)
    assert state.evidence == Labelled(10, 3) and state.has_champion
    assert state.first_snapshot == D0 + timedelta(days=1)
    # the pipeline's newest day is the default: nothing delivered (no ledger) → not counted
    assert current_state(lake, usecase, has_champion=True).evidence is None
    write_state(lake.ledger, replace(state, backoff=None))
    assert current_state(lake, usecase, has_champion=True, day=as_of).evidence is None


# ---- widening after a rejected drift-started attempt ---------------------------------------------


def _drifted(attempts: int = 0) -> LoopState:
    return LoopState(
        has_champion=True,
        first_snapshot=D0,
        last_trained_through=D0 + timedelta(days=20),
        drift_since=CHANGE,
        drift_signals=("input-drift",),
        drift_attempts=attempts,
    )


def test_a_rejected_drift_attempt_widens_the_next_wait() -> None:
    # the first wait: 10 post-change labelled days (snapshot s is labelled on s + 13)
    assert decide(52, _drifted()).train and not decide(51, _drifted()).train
    rejected = record_training(
        _drifted(),
        trained_through=CHANGE + timedelta(days=9),
        promoted=False,
        since=CHANGE,
        as_of=D0 + timedelta(days=52),
        version="5",
        trigger="drift",
    )
    assert rejected.drift_attempts == 1 and rejected.drift_since == CHANGE
    rejected = replace(rejected, evidence=Labelled(10_000, 1_000))  # the back-off is over
    waiting = decide(61, rejected)
    assert not waiting.train
    assert waiting.reason == (
        "drift: waiting for labels after the change (19/20 days, widened after 1 unsuccessful "
        "attempts)"
    )
    go = decide(62, rejected)
    assert go.train and go.since == CHANGE and go.reason == "drift"
    assert go.detail == (
        "20/20 labelled days since the change from 2026-01-31, widened after 1 unsuccessful "
        "attempts"
    )
    # doubled per unsuccessful attempt, capped at MAX_WIDENING times the first wait
    wanted = [post_change_days_wanted(_drifted(n), model=MODEL, retrain=RETRAIN) for n in range(6)]
    assert wanted == [10, 20, 40, 80, 80, 80]
    assert MAX_WIDENING * 10 == 80
    # a training on all history (not since the change) is no attempt at it
    other = record_training(
        _drifted(),
        trained_through=CHANGE,
        promoted=False,
        since=None,
        as_of=D0 + timedelta(days=52),
        version="6",
    )
    assert other.drift_attempts == 0


def test_insufficient_evidence_of_a_drift_attempt_widens_and_backs_off() -> None:
    day = D0 + timedelta(days=52)
    state = record_insufficient(
        _drifted(),
        day=day,
        as_of=day,
        trained_through=day - timedelta(days=13),
        why="insufficient evidence: the holdout holds 169 rows / 6 positives",
        trigger="drift",
        since=CHANGE,
        retrain=RETRAIN,
    )
    assert state.drift_attempts == 1 and state.drift_since == CHANGE
    assert state.last_trained_through == D0 + timedelta(days=20)  # nothing was trained
    assert state.last_attempt == Attempt(
        day, day - timedelta(days=13), "insufficient-evidence", None, "drift", CHANGE
    )
    assert state.backoff == Backoff(day, day, day - timedelta(days=13), "insufficient evidence")
    assert state.decisions[-1] == Entry(
        day,
        "insufficient-evidence",
        "insufficient evidence: the holdout holds 169 rows / 6 positives; backing off until "
        "500 newly labelled rows and 20 positives after 2026-02-09",
        as_of=day,
        trigger="drift",
    )
    nxt = decide(53, state)
    assert (nxt.train, nxt.action) == (False, "back-off")
    assert "0/500 newly labelled rows and 0/20 positives" in nxt.reason


# ---- switches per signal ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("switches", "signals", "recorded"),
    [
        ({}, None, True),  # an event without signals: input drift, on by default
        ({"on_drift": False}, None, False),
        ({"on_drift": False}, ["input-drift", "prediction-drift"], False),
        ({"on_drift": False}, ["prediction-drift", "estimated-drop"], True),
        ({"on_estimated_drop": False}, ["estimated-drop"], False),
        ({"on_estimated_drop": False}, ["estimated-drop", "input-drift"], True),
        ({"on_realised_drop": False}, ["realised-drop"], False),
        ({"on_drift": False, "on_estimated_drop": False}, ["realised-drop"], True),
        ({}, ["prediction-drift"], True),
        ({}, [], False),
    ],
)
def test_drift_events_follow_the_switch_of_each_signal(
    switches: dict[str, bool], signals: list[str] | None, recorded: bool
) -> None:
    retrain = RetrainSpec(**switches)
    state = LoopState(has_champion=True, first_snapshot=D0)
    day = CHANGE + timedelta(days=2)
    after = note_drift(
        state, day=day, window_start=CHANGE, signals=signals, severity="drift", retrain=retrain
    )
    [entry] = after.decisions
    if recorded:
        assert after.drift_since == CHANGE and entry.action == "drift"
        assert after.drift_signals == tuple(enabled_signals(signals, retrain))
        assert entry.reason.startswith("recorded a change from 2026-01-31 (signals ")
    else:
        assert after.drift_since is None and after.drift_signals == ()
        assert entry.action == "drift-noted"
        assert entry.reason.startswith("noted, not retraining: a change from 2026-01-31")
        assert "switched off" in entry.reason
    assert record_drift(state, CHANGE, signals=signals, retrain=retrain).drift_since == (
        CHANGE if recorded else None
    )


def test_a_drift_run_whose_signals_are_off_does_not_train_or_wait() -> None:
    retrain = RetrainSpec(on_drift=False)
    state = LoopState(has_champion=True, first_snapshot=D0, last_trained_through=D0)
    after, decision = plan_run(
        state,
        day=CHANGE + timedelta(days=40),  # new labels would make a training due
        request=RunRequest(trigger="drift", drift_start=CHANGE, signals=["input-drift"]),
        target=TARGET,
        model=MODEL,
        retrain=retrain,
    )
    assert not decision.train and decision.reason.startswith("noted, not retraining")
    assert after.drift_since is None
    assert [e.action for e in after.decisions] == ["drift-noted"]


def test_a_change_to_watch_is_noted_not_retrained_on() -> None:
    state = LoopState(has_champion=True, first_snapshot=D0)
    after = note_drift(
        state,
        day=CHANGE,
        window_start=CHANGE,
        signals=["input-drift"],
        severity="watch",
        retrain=RETRAIN,
    )
    assert after.drift_since is None
    assert after.decisions[-1].action == "drift-noted"
    assert "to watch" in after.decisions[-1].reason


def test_a_drift_run_records_the_change_then_waits() -> None:
    state = LoopState(has_champion=True, first_snapshot=D0, last_trained_through=D0)
    after, decision = _plan(
        state, 33, "drift", drift_start=CHANGE, signals=["realised-drop"], severity="severe"
    )
    assert after.drift_since == CHANGE and after.drift_signals == ("realised-drop",)
    assert not decision.train and decision.action == "defer"
    assert [(e.action, e.reason) for e in after.decisions] == [
        ("drift", "recorded a change from 2026-01-31 (signals realised-drop; severity severe)"),
        ("defer", "drift: waiting for labels after the change (0/10 days)"),
    ]
    # a second event for the same change leaves it as it was; the run's decision is all the
    # log needs to say (a daily drift event does not flood it)
    again, _ = _plan(after, 34, "drift", drift_start=CHANGE + timedelta(days=1))
    assert again.drift_since == CHANGE and again.drift_signals == ("realised-drop",)
    assert [e.action for e in again.decisions] == ["drift", "defer", "defer"]
    assert (
        note_drift(
            after,
            day=D0 + timedelta(days=34),
            window_start=CHANGE + timedelta(days=1),
            signals=None,
            severity=None,
            retrain=RETRAIN,
        )
        .decisions[-1]
        .reason.startswith("noted: a change from 2026-01-31 is pending already")
    )


# ---- the decision log ---------------------------------------------------------------------------


def test_every_run_decision_is_logged_with_day_action_reason_as_of_version() -> None:
    state = LoopState(first_snapshot=D0 + timedelta(days=1))
    state, waiting = _plan(state, 10, "new-labels")
    state, go = _plan(state, 23, "new-labels")
    assert go.train and not waiting.train
    state = record_training(
        state,
        trained_through=D0 + timedelta(days=10),
        promoted=True,
        since=None,
        as_of=D0 + timedelta(days=23),
        version="1",
        trigger="new-labels",
        day=D0 + timedelta(days=23),
        reason="promoted: holdout roc_auc 0.81 ≥ floor 0.65",
    )
    state, again = _plan(state, 23, "drift", drift_start=D0 + timedelta(days=20))
    assert not again.train and again.action == "duplicate"
    rows = [(e.day.day, e.action, e.as_of and e.as_of.day, e.version) for e in state.decisions]
    assert rows == [
        (11, "defer", 11, None),
        (24, "train", 24, None),
        (24, "promoted", 24, "1"),
        (24, "drift", None, None),
        (24, "duplicate", 24, "1"),
    ]
    assert state.decisions[0].reason == "no champion: waiting for labelled snapshots (0/10 days)"
    assert state.decisions[1].reason == "new-labels: no champion; 10 labelled snapshot days"
    assert state.decisions[4].reason == "already trained as of 2026-01-24: v1 promoted"
    assert state.decisions[1].line() == (
        "2026-01-24 train (new-labels) as of 2026-01-24: new-labels: no champion; 10 labelled "
        "snapshot days"
    )


# ---- old and new state files --------------------------------------------------------------------


def test_old_state_files_are_read(tmp_path: Path) -> None:
    from tasks.storage import open_storage

    ledger = open_storage(f"file://{tmp_path}/ledger")
    ledger.write_bytes(
        STATE_KEY,
        json.dumps(
            {"last_trained_through": "2026-01-10", "drift_since": "2026-01-31", "train_since": None}
        ).encode(),
    )
    old = read_state(ledger)
    assert old == LoopState(last_trained_through=D0 + timedelta(days=9), drift_since=CHANGE)
    # a change recorded before signals existed is input drift: retrained on when on_drift is on
    drifting = replace(old, has_champion=True, first_snapshot=D0)
    on = decide(52, drifting)
    assert on.train and (on.reason, on.since) == ("drift", CHANGE)
    off = should_train(
        D0 + timedelta(days=52),
        drifting,
        target=TARGET,
        model=MODEL,
        retrain=RetrainSpec(on_drift=False),
    )
    # switched off: the pending change is not acted on; ordinary periodic retraining on all
    # history is (30 new labelled days since the 10th)
    assert off.train and (off.reason, off.since) == ("new-labels", None)


def test_the_new_state_round_trips_and_skips_a_malformed_entry(tmp_path: Path) -> None:
    from tasks.storage import open_storage

    ledger = open_storage(f"file://{tmp_path}/ledger")
    state = record_insufficient(
        _drifted(1),
        day=D0 + timedelta(days=60),
        as_of=D0 + timedelta(days=60),
        trained_through=D0 + timedelta(days=47),
        why="too little",
        trigger="drift",
        since=CHANGE,
    )
    state = log(state, Entry(D0 + timedelta(days=61), "back-off", "waiting", version="3"))
    write_state(ledger, state)
    stored = json.loads(ledger.read_bytes(STATE_KEY))
    assert stored["version"] == 2 and stored["last_trained_through"] == "2026-01-21"
    back = read_state(ledger)
    assert back == replace(state, has_champion=False, first_snapshot=None)
    assert back.drift_attempts == 2 and back.drift_signals == ("input-drift",)
    stored["decisions"].insert(0, {"action": "train"})  # no day: skipped, the rest is read
    ledger.write_bytes(STATE_KEY, json.dumps(stored).encode())
    assert read_state(ledger).decisions == state.decisions


def test_a_loop_whose_challengers_are_all_rejected_does_not_storm() -> None:
    """The measured storm: drift pending, every challenger rejected, and both the features
    flow's training.due and the daily drift event asking each day. Labels: 260 rows and 8
    positives per snapshot day (the real dataset's 778 rows / 24 positives over 3 days)."""
    rows_per_day, positives_per_day = 260, 8
    state = LoopState(
        has_champion=True, first_snapshot=D0, last_trained_through=D0 + timedelta(days=16)
    )
    requests = (
        RunRequest("new-labels"),
        RunRequest("drift", drift_start=CHANGE, signals=["input-drift"], severity="drift"),
    )
    trainings: list[int] = []
    for offset in range(30, 121):
        day = D0 + timedelta(days=offset)
        last = day - timedelta(days=13)
        for request in requests:
            if state.backoff is not None:  # what current_state counts in the lake
                new = max((last - state.backoff.after).days, 0)
                state = replace(
                    state, evidence=Labelled(new * rows_per_day, new * positives_per_day)
                )
            state, decision = plan_run(
                state, day=day, request=request, target=TARGET, model=MODEL, retrain=RETRAIN
            )
            if decision.train:
                trainings.append(offset)
                state = record_training(
                    state,
                    trained_through=last,
                    promoted=False,
                    since=decision.since,
                    as_of=day,
                    version=str(len(trainings)),
                    trigger=request.trigger,
                    day=day,
                    retrain=RETRAIN,
                )
    # 10 post-change labelled days, then 20, then 40 (80 would need day 122): three tries in
    # 91 days instead of one or two a day
    assert trainings == [52, 62, 82]
    assert state.drift_attempts == 3 and state.drift_since == CHANGE
    # the whole story fits the log: one entry a day while waiting (both requests on one entry)
    log_days = [e.day for e in state.decisions]
    assert len(state.decisions) < DECISION_LOG and log_days == sorted(log_days)
    assert log_days[0] == D0 + timedelta(days=30) and log_days[-1] == D0 + timedelta(days=120)
    rejected = [(e.day - D0).days for e in state.decisions if e.action == "rejected"]
    assert rejected == trainings
    waiting = state.decisions[-1]
    assert (waiting.action, waiting.trigger, waiting.times) == ("defer", "new-labels, drift", 2)
    assert waiting.reason == (
        "drift: waiting for labels after the change (78/80 days, widened after 3 unsuccessful "
        "attempts)"
    )
    by_day = [(e.action, e.trigger) for e in state.decisions if e.day == D0 + timedelta(days=62)]
    assert by_day == [
        ("train", "new-labels"),
        ("rejected", "new-labels"),
        ("duplicate", "drift"),
    ]


# ---- a pending change that has gone quiet ------------------------------------------------------


def test_a_rejected_change_that_went_quiet_is_over_and_the_next_detection_is_new() -> None:
    """The year-long replay's trap: a change is declared, its drift-started challenger is
    rejected, the checks go quiet; weeks later reality really changes. That new change must
    get the first wait, not the widened wait of a change that is gone."""
    change = D0 + timedelta(days=30)
    state, _ = _plan(
        LoopState(
            has_champion=True, first_snapshot=D0, last_trained_through=D0 + timedelta(days=20)
        ),
        33,
        "drift",
        drift_start=change,
        signals=["input-drift"],
        severity="drift",
    )
    assert (state.drift_since, state.drift_seen) == (change, D0 + timedelta(days=33))
    # seen again each day: the change stays pending, and it is still the same change
    for day in range(34, 40):
        state, _ = _plan(state, day, "drift", drift_start=change + timedelta(days=day - 33))
    assert (state.drift_since, state.drift_seen) == (change, D0 + timedelta(days=39))
    rejected = record_training(
        state,
        trained_through=D0 + timedelta(days=39),
        promoted=False,
        since=change,
        as_of=D0 + timedelta(days=52),
        version="3",
        trigger="drift",
        day=D0 + timedelta(days=52),
        retrain=RETRAIN,
    )
    assert rejected.drift_attempts == 1
    # 14 days after the last signal the change is still waited for (20 post-change days now) ...
    still = should_train(
        D0 + timedelta(days=53),
        replace(rejected, backoff=None),
        target=TARGET,
        model=MODEL,
        retrain=RETRAIN,
    )
    assert not still.train and still.reason.startswith("drift: waiting for labels")
    assert not quiet_change(rejected, D0 + timedelta(days=53), RETRAIN)
    # ... and after more than 14 quiet days it is over: no more waiting for it
    assert quiet_change(rejected, D0 + timedelta(days=54), RETRAIN)
    over = should_train(
        D0 + timedelta(days=70),
        replace(rejected, backoff=None),
        target=TARGET,
        model=MODEL,
        retrain=RETRAIN,
    )
    assert over.train and over.reason == "new-labels" and over.since is None
    # the next detection is a new change, with the first wait (not the widened one)
    new_change = D0 + timedelta(days=80)
    after, _ = _plan(
        replace(rejected, backoff=None),
        82,
        "drift",
        drift_start=new_change,
        signals=["input-drift"],
        severity="drift",
    )
    assert (after.drift_since, after.drift_attempts) == (new_change, 0)
    recorded = [e for e in after.decisions if e.action == "drift"][-1]
    assert recorded.reason.endswith(
        f"; the change from {change} was over (no drift signal since {D0 + timedelta(days=39)})"
    )
    assert post_change_days_wanted(after, model=MODEL, retrain=RETRAIN) == 10


def test_a_change_without_a_rejected_attempt_is_never_over_by_quiet() -> None:
    """While no attempt at it was judged, a change stays pending however long the checks are
    quiet: the labels it waits for take their time."""
    change = D0 + timedelta(days=30)
    state = LoopState(
        has_champion=True,
        first_snapshot=D0,
        last_trained_through=D0 + timedelta(days=20),
        drift_since=change,
        drift_seen=change,
    )
    assert not quiet_change(state, D0 + timedelta(days=90), RETRAIN)
    assert decide(52, state).reason == "drift"


# ---- the new normal: re-basing the champion's drift reference ---------------------------------


def _decision(**changes: Any) -> Any:
    from tasks.gate import Decision

    base = Decision(
        promote=False,
        reason="rejected: not better beyond noise: ...",
        metric="roc_auc",
        challenger_value=0.71,
        champion_value=0.72,
        delta_ci=(-0.03, 0.01),
        challenger_ece=0.02,
        champion_ece=0.02,
        sanity={"signature_compatible": True, "same_feature_service": True},
        samples=400,
        compared_with="4",
    )
    return replace(base, **changes)


def test_a_rejected_drift_challenger_against_a_champion_that_holds_rebases_it() -> None:
    from tasks.policy import rebaseline_reason

    after = {"version": "4", "complete": True, "first": "2026-10-12", "last": "2026-10-20"}
    check = {
        "model_version": "4",
        "window": ["2026-11-01", "2026-11-07"],
        "signals": ["input-drift", "prediction-drift"],
        "realised": [{**after, "first": "2026-09-20", "last": "2026-10-11"}, after],
    }
    day, change = date(2026, 11, 7), date(2026, 10, 10)
    why = rebaseline_reason("drift", _decision(), check, as_of=day, since=change)
    assert why is not None
    assert "no better than champion v4" in why and "[-0.0300, +0.0100]" in why
    assert "check of 2026-11-07 shows no performance drop" in why
    assert "realised on labels of 2026-10-12 → 2026-10-20 after the change of 2026-10-10" in why
    assert why.endswith("describes the inputs up to 2026-11-07")
    # and not in any other case
    cases = {
        "a run not started by drift": ("new-labels", _decision(), check),
        "a promoted challenger": ("drift", _decision(promote=True), check),
        "no champion to compare with": (
            "drift",
            _decision(compared_with=None, delta_ci=None),
            check,
        ),
        "a failed sanity check": (
            "drift",
            _decision(sanity={"signature_compatible": False}),
            check,
        ),
        "no stored check": ("drift", _decision(), None),
        "a check of another version": ("drift", _decision(), {**check, "model_version": "3"}),
        "a realised drop": ("drift", _decision(), {**check, "signals": ["realised-drop"]}),
        "an estimated drop": (
            "drift",
            _decision(),
            {**check, "signals": ["input-drift", "estimated-drop"]},
        ),
        # not yet measured on labels after the change: an early real change looks like this
        "no realised window after the change": (
            "drift",
            _decision(),
            {**check, "realised": check["realised"][:1]},
        ),
        "an incomplete one": (
            "drift",
            _decision(),
            {**check, "realised": [{**after, "complete": False}]},
        ),
        "another version's": (
            "drift",
            _decision(),
            {**check, "realised": [{**after, "version": "3"}]},
        ),
    }
    for what, (trigger, decision, last) in cases.items():
        assert rebaseline_reason(trigger, decision, last, as_of=day, since=change) is None, what
    assert rebaseline_reason("drift", _decision(), check, as_of=day, since=None) is None


# ---- what the train and features flows call: on a lake and a registry -----------------------


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow registry for these tests: model ``champ`` has a champion, no other has."""
    from tasks import registry

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    client = registry.client_for(uri)
    client.create_registered_model("champ")
    version = client.create_model_version("champ", source=str(tmp_path_factory.mktemp("model")))
    client.set_registered_model_alias("champ", registry.CHAMPION, version.version)
    return uri


def _loop(tmp_path: Path, **model: Any) -> tuple[Any, Any]:
    """A lake with usage validated on Jan 1..3 (the first snapshot day is Jan 2) and a use case
    whose snapshots are labelled 2 days later; (lake, use case)."""
    from tasks.storage import Lake, open_storage, write_parquet
    from tests.tasks.test_features import usage

    usecase = load_usecase(
        usecase_with(
            tmp_path,
            target={"horizon_days": 2, "label_delay_days": 1},
            model={"min_history_days": 0, **model},
        )
    )
    lake = Lake(open_storage(f"file://{tmp_path}/lake"))
    for n in range(3):
        when = D0 + timedelta(days=n)
        key = f"usage/date={when.isoformat()}/usage__{when.isoformat()}.csv.parquet"
        write_parquet(lake.validated, key, usage([{"customer_id": "A", "date": when}]))
    return lake, usecase


# 4 + 3 + 3 = 10 labelled snapshot days from Jan 2 are needed: Jan 2..11, labelled on Jan 13
DUE, EARLY = D0 + timedelta(days=12), D0 + timedelta(days=11)
FIRST_SNAPSHOT = D0 + timedelta(days=1)
DUE_WHY = "no champion; 10 labelled snapshot days"
WAITING = "no champion: waiting for labelled snapshots (9/10 days)"


def test_a_train_run_records_its_plan_before_it_trains(tmp_path: Path, tracking: str) -> None:
    lake, usecase = _loop(tmp_path)
    request = RunRequest(trigger="new-labels")
    asked: list[tuple[bool, date | None]] = []

    def state_of(*args: Any, has_champion: bool, day: date | None = None) -> LoopState:
        asked.append((has_champion, day))
        return current_state(*args, has_champion=has_champion, day=day)

    plan = plan_training(lake, usecase, request, day=DUE, tracking_uri=tracking, state_of=state_of)
    entry = Entry(DUE, "train", f"new-labels: {DUE_WHY}", as_of=DUE, trigger="new-labels")
    assert plan == TrainPlan(
        day=DUE,
        request=request,
        decision=TrainDecision(True, "new-labels", detail=DUE_WHY),
        state=LoopState(first_snapshot=FIRST_SNAPSHOT, decisions=(entry,)),
        trained_through=DUE - timedelta(days=2),
        retrain=usecase.retrain,
        deferral=None,
    )
    assert plan.since is None
    assert asked == [(False, DUE)]  # the registry has no champion of telco_churn
    assert read_state(lake.ledger) == LoopState(decisions=(entry,))  # written

    # a run by hand trains now, on what it was asked for
    since = D0 + timedelta(days=5)
    manual = plan_training(lake, usecase, RunRequest(since=since), day=EARLY, tracking_uri=tracking)
    assert manual.decision == TrainDecision(True, "manual", since=since, detail="asked by hand")
    assert manual.since == since and manual.deferral is None


def test_a_train_run_that_is_not_due_is_deferred_and_says_why(
    tmp_path: Path, tracking: str
) -> None:
    lake, usecase = _loop(tmp_path)
    plan = plan_training(
        lake, usecase, RunRequest(trigger="new-labels"), day=EARLY, tracking_uri=tracking
    )
    assert plan.decision == TrainDecision(False, WAITING)
    deferral = plan.deferral
    assert deferral == Deferral(WAITING, EARLY) and not deferral.fails
    assert deferral.to_dict() == {"trained": False, "reason": WAITING, "as_of": "2026-01-12"}
    assert deferral.markdown("telco_churn") == f"**telco_churn: not training now** ({WAITING})"
    entry = Entry(EARLY, "defer", WAITING, as_of=EARLY, trigger="new-labels")
    assert read_state(lake.ledger) == LoopState(decisions=(entry,))

    # with a champion in the registry, the same data is not due: the champion is current
    (tmp_path / "champ").mkdir()
    lake, usecase = _loop(tmp_path / "champ", registered_name="champ")
    plan = plan_training(
        lake, usecase, RunRequest(trigger="schedule"), day=DUE, tracking_uri=tracking
    )
    assert plan.state.has_champion
    assert plan.deferral == Deferral("champion is current", DUE)


def test_too_little_evidence_is_the_attempt_of_its_as_of_and_defers_unless_asked_by_hand(
    tmp_path: Path, tracking: str
) -> None:
    lake, usecase = _loop(tmp_path)
    plan = plan_training(
        lake, usecase, RunRequest(trigger="new-labels"), day=DUE, tracking_uri=tracking
    )
    why = "insufficient evidence: no snapshot has known labels at 2026-01-13"
    deferral = record_insufficient_run(
        lake.ledger, plan, "no snapshot has known labels at 2026-01-13"
    )
    assert deferral == Deferral(why, DUE, fails=False)
    assert deferral.to_dict() == {"trained": False, "reason": why, "as_of": "2026-01-13"}
    through = DUE - timedelta(days=2)
    stored = read_state(lake.ledger)
    assert stored.last_attempt == Attempt(DUE, through, "insufficient-evidence", None, "new-labels")
    assert stored.backoff == Backoff(DUE, DUE, through, "insufficient evidence")
    assert stored.last_trained_through is None  # nothing was trained
    assert [e.action for e in stored.decisions] == ["train", "insufficient-evidence"]

    # a message that says so already is kept as it is; asked by hand, the run fails with it
    manual = plan_training(lake, usecase, RunRequest(), day=DUE, tracking_uri=tracking)
    said = "insufficient evidence: the holdout split holds 3 rows (needs >= 50)"
    assert record_insufficient_run(lake.ledger, manual, said) == Deferral(said, DUE, fails=True)


def test_a_judged_challenger_is_recorded_on_its_plan(tmp_path: Path, tracking: str) -> None:
    lake, usecase = _loop(tmp_path)
    plan = plan_training(
        lake, usecase, RunRequest(trigger="new-labels"), day=DUE, tracking_uri=tracking
    )
    through = DUE - timedelta(days=2)
    promoted = _decision(promote=True, reason="promoted: the first model", compared_with=None)
    state = record_judged_run(lake.ledger, plan, "1", promoted)
    assert state.has_champion and state.backoff is None
    assert state.last_trained_through == through
    assert state.last_attempt == Attempt(DUE, through, "promoted", "1", "new-labels")
    assert state.decisions[-1] == Entry(
        DUE, "promoted", "promoted: the first model", DUE, "1", "new-labels"
    )
    assert read_state(lake.ledger) == replace(state, has_champion=False, first_snapshot=None)

    # a rejected one starts a back-off
    rejected = record_judged_run(lake.ledger, plan, "1", _decision(reason="rejected: no better"))
    assert rejected.backoff == Backoff(DUE, DUE, through, "v1 rejected")
    r = usecase.retrain
    assert rejected.decisions[-1].reason == (
        f"rejected: no better; backing off until {r.backoff_rows} newly labelled rows and "
        f"{r.backoff_positives} positives after {through}"
    )
    assert read_state(lake.ledger).backoff == rejected.backoff


def test_new_data_makes_a_training_due_and_says_so_in_an_event(
    tmp_path: Path, tracking: str
) -> None:
    lake, usecase = _loop(tmp_path)
    check = training_check(lake, usecase, DUE, tracking_uri=tracking)
    decision = TrainDecision(True, "new-labels", detail=DUE_WHY)
    event = {
        "event": "driftloop.training.due",
        "resource": {
            "prefect.resource.id": "driftloop.model.telco_churn",
            "prefect.resource.name": "telco_churn",
        },
        "payload": {
            "reason": "new-labels",
            "why": f"new-labels: {DUE_WHY}",
            "as_of": "2026-01-13",
            "since": None,
        },
    }
    assert check == TrainingCheck(DUE, decision, event)
    assert check.to_dict() == {"due": True, "reason": f"new-labels: {DUE_WHY}", "decision": "train"}
    assert not lake.ledger.exists(STATE_KEY)  # it only reads


def test_new_data_that_makes_no_training_due_emits_nothing(tmp_path: Path, tracking: str) -> None:
    lake, usecase = _loop(tmp_path)
    check = training_check(lake, usecase, EARLY, tracking_uri=tracking)
    assert check == TrainingCheck(EARLY, TrainDecision(False, WAITING), None)
    assert check.to_dict() == {"due": False, "reason": WAITING, "decision": "defer"}
    # the day a training as of it was already tried: a duplicate, no event
    write_state(
        lake.ledger,
        LoopState(last_attempt=Attempt(DUE, EARLY, "rejected", "2", "new-labels")),
    )
    check = training_check(lake, usecase, DUE, tracking_uri=tracking)
    assert check is not None and check.event is None
    assert check.to_dict() == {
        "due": False,
        "reason": "already trained as of 2026-01-13: v2 rejected",
        "decision": "duplicate",
    }
    # nothing to ask about: nothing validated yet, or a use case that trains no model
    assert training_check(lake, usecase, None, tracking_uri=tracking) is None
    no_model = usecase.model_copy(update={"model": None})
    assert training_check(lake, no_model, DUE, tracking_uri=tracking) is None
