"""The loop's persisted state: it round-trips through the ledger zone (only what is not derived
is stored), and the decision log is bounded, ordered, and counts a repeated decision once."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

from tasks.loop_state import DECISION_LOG, Entry, LoopState, log, read_state, write_state

D0 = date(2026, 1, 1)


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


def test_the_decision_log_is_bounded_and_ordered() -> None:
    state = LoopState()
    for i in range(DECISION_LOG + 50):
        state = log(state, Entry(D0 + timedelta(days=i), "defer", f"reason {i}"))
    assert len(state.decisions) == DECISION_LOG == 100
    assert [e.reason for e in state.decisions] == [f"reason {i}" for i in range(50, 150)]
    assert [e.day for e in state.decisions] == sorted(e.day for e in state.decisions)
    # the same decision again is counted on the newest entry, not appended
    last = state.decisions[-1]
    again = log(state, replace(last, day=last.day + timedelta(days=1)))
    assert len(again.decisions) == 100 and again.decisions[-2] == state.decisions[-2]
    assert again.decisions[-1] == replace(last, day=last.day + timedelta(days=1), times=2)
    # what is written keeps the bound too
    too_long = replace(state, decisions=state.decisions * 2)
    from tasks.loop_state import _stored

    assert len(_stored(too_long)["decisions"]) == DECISION_LOG
