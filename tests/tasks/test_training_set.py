"""Labelled snapshots (terminal and recurring targets) and who they hold, the point-in-time join
through Feast, and the split by time and evidence."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypedDict

import pandas as pd
import pytest

from driftloop_config.settings import PROJECT_ROOT, Settings
from driftloop_config.usecase import load_usecase
from tasks.feature_store import apply_repo
from tasks.features import build_features, feature_key
from tasks.storage import Lake, read_parquet, write_parquet
from tasks.training_set import (
    EVENT_BEFORE,
    EvidenceRule,
    InsufficientEvidence,
    SnapshotColumns,
    TrainingSetError,
    entity_frame,
    evidence_split,
    labelled_snapshots,
    membership,
    population,
    population_summary,
    time_split,
    training_frame,
)
from tests.tasks.test_features import usage

USECASE = load_usecase(PROJECT_ROOT / "usecases" / "telco_churn.yaml")


def d(day: int, month: int = 1) -> date:
    return date(2026, month, day)


def ts(day: int, month: int = 1, hour: int = 0) -> pd.Timestamp:
    return pd.Timestamp(datetime(2026, month, day, hour, tzinfo=UTC))


# ---- entity_frame -------------------------------------------------------------------------------


def _active(spans: dict[str, tuple[int, int]]) -> pd.DataFrame:
    rows = [
        {"customer_id": c, "date": pd.Timestamp(d(day))}
        for c, (first, last) in spans.items()
        for day in range(first, last + 1)
    ]
    return pd.DataFrame(rows)


def _labels(rows: list[tuple[str, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"customer_id": c, "churn_date": d(cd), "reported_date": d(rd)} for c, cd, rd in rows]
    )


ACTIVE = _active({"A": (1, 20), "B": (1, 5), "C": (3, 20), "D": (1, 10)})
LABELS = _labels([("B", 5, 12), ("C", 12, 19), ("D", 10, 26)])  # D is reported after as_of


def _labels_of(frame: pd.DataFrame, customer: str) -> dict[int, int]:
    rows = frame[frame["customer_id"] == customer]
    return dict(zip(rows["event_timestamp"].dt.day, rows["churned"], strict=True))


def test_entity_frame_snapshots_and_labels() -> None:
    frame = entity_frame(
        ACTIVE, LABELS, as_of=d(25), horizon_days=7, label_delay_days=7, snapshot_every_days=1
    )
    assert list(frame.columns) == ["customer_id", "event_timestamp", "churned"]
    assert str(frame["event_timestamp"].dtype) == "datetime64[ns, UTC]"
    # s + 7 - 1 + 7 <= Jan 25  →  the last snapshot is Jan 12; the first is the day after Jan 1
    assert frame["event_timestamp"].min() == ts(2) and frame["event_timestamp"].max() == ts(12)
    assert (frame["event_timestamp"] == frame["event_timestamp"].dt.normalize()).all()
    assert _labels_of(frame, "A") == {s: 0 for s in range(2, 13)}
    # B churned on Jan 5: labelled 1 up to s = Jan 5, gone from s = Jan 6 on (churned before s)
    assert _labels_of(frame, "B") == {2: 1, 3: 1, 4: 1, 5: 1}
    # C churns on Jan 12: 1 iff Jan 12 in [s, s + 7); active from Jan 3 → first snapshot Jan 4
    assert _labels_of(frame, "C") == {s: int(s >= 6) for s in range(4, 13)}
    # D's churn is reported after as_of: unknown, so D stays an active non-churner
    assert _labels_of(frame, "D") == {s: 0 for s in range(2, 12)}
    assert frame.equals(frame.sort_values(["event_timestamp", "customer_id"], ignore_index=True))


def test_entity_frame_only_uses_labels_known_at_as_of() -> None:
    early = entity_frame(ACTIVE, LABELS, as_of=d(18), horizon_days=7, label_delay_days=7)
    assert early["event_timestamp"].max() == ts(5)
    # C's churn (reported Jan 19) is not known on Jan 18, and no snapshot needs it yet
    assert set(_labels_of(early, "C").values()) == {0}
    assert entity_frame(ACTIVE, LABELS, as_of=d(10), horizon_days=7, label_delay_days=7).empty


def test_entity_frame_every_n_days_from_first() -> None:
    frame = entity_frame(
        ACTIVE,
        LABELS,
        as_of=d(25),
        horizon_days=7,
        label_delay_days=7,
        snapshot_every_days=3,
        first=d(3),
    )
    assert sorted(frame["event_timestamp"].dt.day.unique()) == [3, 6, 9, 12]
    assert _labels_of(frame, "C") == {6: 1, 9: 1, 12: 1}  # C's first snapshot is Jan 4 → Jan 6


def test_entity_frame_empty_input() -> None:
    empty = entity_frame(ACTIVE.iloc[0:0], LABELS, as_of=d(25), horizon_days=7, label_delay_days=7)
    assert empty.empty and list(empty.columns) == ["customer_id", "event_timestamp", "churned"]


# ---- time_split ---------------------------------------------------------------------------------


def test_time_split_by_snapshot_day() -> None:
    frame = entity_frame(ACTIVE, LABELS, as_of=d(25), horizon_days=7, label_delay_days=7)
    parts = time_split(frame, holdout_days=2, validation_days=3)
    days = {k: sorted(v["event_timestamp"].dt.day.unique()) for k, v in parts.items()}
    assert days == {"train": [2, 3, 4, 5, 6, 7], "validation": [8, 9, 10], "holdout": [11, 12]}
    assert sum(len(p) for p in parts.values()) == len(frame)
    with pytest.raises(TrainingSetError, match="leave any for training"):
        time_split(frame, holdout_days=6, validation_days=5)


# ---- recurring and terminal targets, and who the snapshots hold -----------------------------------

# R: events on Jan 3 and Jan 9; Q: an event on Jan 10 (reported Jan 12); S: never
POP_ACTIVE = _active({"R": (1, 12), "S": (1, 6), "Q": (5, 12)})
POP_LABELS = _labels([("R", 3, 3), ("R", 9, 9), ("Q", 10, 12)])


class Window(TypedDict):
    """The snapshot window keyword arguments of :func:`entity_frame` and its siblings."""

    as_of: date
    horizon_days: int
    label_delay_days: int


POP: Window = {"as_of": d(14), "horizon_days": 2, "label_delay_days": 0}  # snapshots Jan 2..13


def test_a_recurring_entity_stays_in_later_snapshots_with_its_labels() -> None:
    recurring = entity_frame(POP_ACTIVE, POP_LABELS, recurring=True, **POP)
    # label 1 when an event falls in [s, s + 2): s = 2, 3 (Jan 3) and s = 8, 9 (Jan 9)
    assert _labels_of(recurring, "R") == {
        2: 1, 3: 1, 4: 0, 5: 0, 6: 0, 7: 0, 8: 1, 9: 1, 10: 0, 11: 0, 12: 0, 13: 0
    }  # fmt: skip
    assert _labels_of(recurring, "Q") == {s: int(s in (9, 10)) for s in range(6, 14)}
    assert _labels_of(recurring, "S") == {s: 0 for s in range(2, 8)}


def test_a_regression_label_sums_the_values_of_the_events_in_the_horizon() -> None:
    """R spends 10 on Jan 3 and 5 + 2.5 on Jan 9 (two purchases that day); Q 4 on Jan 10,
    reported Jan 12; one of R's events has no amount (counts 0). Horizon 2 days."""
    events = pd.DataFrame(
        [
            {"customer_id": c, "churn_date": d(e), "reported_date": d(r), "amount": a}
            for c, e, r, a in [
                ("R", 3, 3, 10.0),
                ("R", 9, 9, 5.0),
                ("R", 9, 9, 2.5),
                ("R", 12, 12, None),
                ("Q", 10, 12, 4.0),
            ]
        ]
    )
    columns = SnapshotColumns(label="spend", value="amount")
    frame, counts = labelled_snapshots(POP_ACTIVE, events, columns=columns, recurring=True, **POP)
    assert str(frame["spend"].dtype) == "float64"

    def spend(entity: str) -> dict[int, float]:
        rows = frame[frame["customer_id"] == entity]
        return dict(zip(rows["event_timestamp"].dt.day, rows["spend"], strict=True))

    assert spend("R") == {
        2: 10.0, 3: 10.0, 4: 0.0, 5: 0.0, 6: 0.0, 7: 0.0, 8: 7.5, 9: 7.5, 10: 0.0, 11: 0.0,
        12: 0.0, 13: 0.0,
    }  # fmt: skip
    assert spend("Q") == {s: 4.0 * (s in (9, 10)) for s in range(6, 14)}
    assert spend("S") == {s: 0.0 for s in range(2, 8)}
    # a positive is an outcome above 0: R's event without an amount is not one
    assert counts["positives"].tolist() == [1, 1, 0, 0, 0, 0, 1, 2, 1, 0, 0, 0]
    # known at as_of only: Q's amount is reported on Jan 12, not yet known on Jan 11
    before: Window = {**POP, "as_of": d(11)}
    early, _ = labelled_snapshots(POP_ACTIVE, events, columns=columns, recurring=True, **before)
    assert early.loc[early["customer_id"] == "Q", "spend"].sum() == 0.0


def test_a_terminal_entity_leaves_after_its_first_event() -> None:
    terminal = entity_frame(POP_ACTIVE, POP_LABELS, recurring=False, **POP)
    assert _labels_of(terminal, "R") == {2: 1, 3: 1}  # gone from s = Jan 4 (event on Jan 3)
    assert _labels_of(terminal, "Q") == {6: 0, 7: 0, 8: 0, 9: 1, 10: 1}  # gone from Jan 11
    assert _labels_of(terminal, "S") == {s: 0 for s in range(2, 8)}
    assert terminal.equals(entity_frame(POP_ACTIVE, POP_LABELS, **POP))  # the default


def test_population_counts_per_snapshot_day() -> None:
    terminal = population(POP_ACTIVE, POP_LABELS, recurring=False, **POP)
    excluded = f"excluded: {EVENT_BEFORE}"
    assert list(terminal.columns) == [
        "snapshot", "active", "members", excluded, "positives", "positive_rate"
    ]  # fmt: skip
    assert terminal["snapshot"].tolist() == [d(s) for s in range(2, 14)]
    #                           s = 2  3  4  5  6  7  8  9 10 11 12 13
    assert terminal["active"].tolist() == [2, 2, 2, 2, 3, 3, 2, 2, 2, 2, 2, 2]
    assert terminal["members"].tolist() == [2, 2, 1, 1, 2, 2, 1, 1, 1, 0, 0, 0]
    assert terminal[excluded].tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2]
    assert terminal["positives"].tolist() == [1, 1, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0]
    rates = terminal["positive_rate"].tolist()
    assert rates[:9] == [0.5, 0.5, 0, 0, 0, 0, 0, 1, 1]
    assert all(pd.isna(r) for r in rates[9:])  # nobody left to be positive
    assert (terminal["members"] + terminal[excluded] == terminal["active"]).all()

    recurring = population(POP_ACTIVE, POP_LABELS, recurring=True, **POP)
    assert recurring["members"].tolist() == recurring["active"].tolist()
    assert recurring[excluded].sum() == 0
    assert recurring["positives"].tolist() == [1, 1, 0, 0, 0, 0, 1, 2, 1, 0, 0, 0]

    # the counts describe exactly the rows of the entity frame
    frame, counts = labelled_snapshots(POP_ACTIVE, POP_LABELS, **POP)
    assert counts.equals(terminal)
    assert len(frame) == terminal["members"].sum() == 13
    assert frame["churned"].sum() == terminal["positives"].sum() == 4

    summary = population_summary(terminal, recurring=False)
    assert summary["snapshot days"] == 12
    assert summary["active entity-days"] == "26"
    assert summary["in the population"] == "13 (50.0% of the active)"
    assert summary[f"left out: {EVENT_BEFORE}"] == "13"
    assert summary["positives"] == "4 (30.77% of the population)"
    assert summary["daily share in the population"] == "0.0% (2026-01-11) … 100.0% (2026-01-02)"
    assert summary["population rule"].startswith("terminal")
    assert population_summary(recurring, recurring=True)["in the population"] == (
        "26 (100.0% of the active)"
    )


def test_scoring_membership_is_the_training_rule() -> None:
    """At the end of Jan 12 (scored at Jan 13 00:00) with what is known on Jan 12."""
    entities = pd.Series(["R", "S", "Q", "X"])
    terminal = membership(
        POP_ACTIVE.iloc[0:0]["customer_id"], POP_LABELS, at=d(13), known_by=d(12), recurring=False
    )
    assert terminal.tolist() == []
    kept = membership(entities, POP_LABELS, at=d(13), known_by=d(12), recurring=False)
    assert kept.tolist() == [False, True, False, True]  # R (Jan 3, 9) and Q (Jan 10) left
    # Q's event is reported on Jan 12: on Jan 11 it is not known yet
    assert membership(entities, POP_LABELS, at=d(12), known_by=d(11), recurring=False).tolist() == [
        False, True, True, True
    ]  # fmt: skip
    assert membership(entities, POP_LABELS, at=d(13), known_by=d(12), recurring=True).all()


# ---- the split by evidence ----------------------------------------------------------------------

# ten snapshot days of 100 rows; positives per day, oldest first
POSITIVES = [5, 5, 5, 5, 5, 5, 5, 4, 3, 2]


def _evidence_frame() -> pd.DataFrame:
    rows = []
    for i, positives in enumerate(POSITIVES):
        rows += [
            {"customer_id": f"c{j}", "event_timestamp": ts(i + 1), "churned": int(j < positives)}
            for j in range(100)
        ]
    return pd.DataFrame(rows)


def _days_of(parts: dict[str, pd.DataFrame]) -> dict[str, list[int]]:
    return {k: sorted(v["event_timestamp"].dt.day.unique()) for k, v in parts.items()}


RULE = EvidenceRule(
    holdout_days=2,
    validation_days=2,
    min_holdout_rows=100,
    min_holdout_positives=10,
    min_validation_positives=12,
    min_train_rows=200,
    min_train_positives=10,
)


def test_the_holdout_reaches_back_until_its_positives_are_met() -> None:
    frame = _evidence_frame()
    parts = evidence_split(frame, RULE, label="churned")
    # holdout: 2 + 3 = 5, + 4 = 9, + 5 = 14 >= 10 positives → Jan 7..10; validation: 5 + 5 = 10,
    # + 5 = 15 >= 12 → Jan 4..6; the rest trains
    assert _days_of(parts) == {
        "train": [1, 2, 3],
        "validation": [4, 5, 6],
        "holdout": [7, 8, 9, 10],
    }
    assert [int(p["churned"].sum()) for p in parts.values()] == [15, 15, 14]
    assert sum(len(p) for p in parts.values()) == len(frame)
    # with no minimum beyond the days it is the plain split by days
    plain = evidence_split(frame, EvidenceRule(holdout_days=2, validation_days=2), label="churned")
    assert _days_of(plain) == _days_of(time_split(frame, holdout_days=2, validation_days=2))
    # rows count too: 450 rows take five days
    rows = evidence_split(
        frame,
        EvidenceRule(holdout_days=1, validation_days=1, min_holdout_rows=450),
        label="churned",
    )
    assert _days_of(rows)["holdout"] == [6, 7, 8, 9, 10]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"min_holdout_positives": 100},
            "insufficient evidence: the holdout holds 700 rows / 29 positives over the newest 7 "
            "of 10 snapshot days, needs >= 100 rows and >= 100 positives",
        ),
        (
            {"min_holdout_rows": 900},
            "insufficient evidence: the holdout holds 700 rows / 29 positives over the newest 7 "
            "of 10 snapshot days, needs >= 900 rows and >= 10 positives",
        ),
        (
            {"min_validation_positives": 26},
            "insufficient evidence: the validation split holds 500 rows / 25 positives over 5 "
            "snapshot days before the 4-day holdout, needs >= 26 positives",
        ),
        (
            {"min_train_positives": 16},
            "insufficient evidence: the training split holds 300 rows / 15 positives over 3 "
            "snapshot days (after a 4-day holdout and 3 validation days), needs >= 200 rows and "
            ">= 16 positives",
        ),
        (
            {"min_train_rows": 301},
            "insufficient evidence: the training split holds 300 rows / 15 positives",
        ),
        (
            {"holdout_days": 6, "validation_days": 4},
            "insufficient evidence: 10 snapshot days cannot fill 6 holdout + 4 validation days "
            "and leave any for training (need 11)",
        ),
    ],
)
def test_too_little_evidence_raises_and_says_what_is_missing(
    change: dict[str, int], message: str
) -> None:
    with pytest.raises(InsufficientEvidence) as raised:
        evidence_split(_evidence_frame(), replace(RULE, **change), label="churned")
    assert str(raised.value).startswith(message)
    assert isinstance(raised.value, TrainingSetError)


def test_the_minima_met_exactly_are_enough() -> None:
    rule = replace(
        RULE, min_holdout_positives=14, min_validation_positives=15, min_train_positives=15
    )
    parts = evidence_split(_evidence_frame(), rule, label="churned")
    assert _days_of(parts)["train"] == [1, 2, 3]


# ---- the point-in-time join through Feast --------------------------------------------------------


@pytest.fixture
def hand_built_store(local_settings: Settings) -> Any:
    """Features built from hand-written validated partitions, registered in a fresh store.

    A: usage Jan 1..10 with minutes = 10 x day, plan basic until Jan 5 and premium from Jan 6.
    OLD: usage on Jan 1 only. GHOST never has usage.
    """
    lake = Lake.from_settings(local_settings)
    for day in range(1, 11):
        rows = [
            {
                "customer_id": "A",
                "date": d(day),
                "minutes": 10.0 * day,
                "plan": "premium" if day >= 6 else "basic",
            }
        ]
        if day == 1:
            rows.append({"customer_id": "OLD", "date": d(day), "minutes": 1.0})
        key = f"usage/date={d(day).isoformat()}/usage__{d(day).isoformat()}.csv.parquet"
        write_parquet(lake.validated, key, usage(rows))
    assert len(build_features(lake, USECASE)) == 10
    return apply_repo(local_settings)


def test_point_in_time_join_uses_only_features_known_then(hand_built_store: Any) -> None:
    entities = pd.DataFrame(
        [
            ("A", ts(6)),  # Jan 5's features (known Jan 6 00:00), not Jan 6's premium plan
            ("GHOST", ts(6)),  # never had features: kept, with nulls
            ("A", ts(6, hour=12)),  # Jan 6's features only arrive at Jan 7 00:00
            ("A", ts(7)),  # now Jan 6's
            ("A", ts(30)),  # the newest, Jan 10's
            ("OLD", ts(10, month=2)),  # Jan 1's features expired (ttl 35 days)
            ("A", ts(6)),  # a duplicate entity row is kept too
            ("A", ts(1)),  # before any feature exists
        ],
        columns=["customer_id", "event_timestamp"],
    )
    entities["churned"] = [0, 0, 0, 1, 0, 1, 0, 0]
    out = training_frame(hand_built_store, entities, "churn_v1", entity="customer_id")

    assert len(out) == len(entities)
    assert out["customer_id"].tolist() == entities["customer_id"].tolist()
    assert out["churned"].tolist() == entities["churned"].tolist()
    assert out["plan"].tolist()[:5] == ["basic", None, "basic", "premium", "premium"]
    assert out["minutes_mean_7d"][0] == pytest.approx((10 + 20 + 30 + 40 + 50) / 5)
    assert out["minutes_mean_7d"][3] == pytest.approx((10 + 20 + 30 + 40 + 50 + 60) / 6)
    assert out["minutes_mean_7d"][4] == pytest.approx((40 + 50 + 60 + 70 + 80 + 90 + 100) / 7)
    asof = out["features_asof"]
    assert asof.tolist()[:5] == [ts(6), pd.NaT, ts(6), ts(7), ts(11)]
    assert (asof.dropna() <= out.loc[asof.notna(), "event_timestamp"]).all()
    for row in (1, 5, 7):  # GHOST, expired OLD, before any feature: present, every feature null
        features = out.iloc[row].drop(["customer_id", "event_timestamp", "churned"])
        assert features.isna().all(), out.iloc[row]


def test_training_frame_rejects_features_from_the_future(
    hand_built_store: Any, local_settings: Settings
) -> None:
    lake = Lake.from_settings(local_settings)
    key = feature_key("customer_daily", d(5))
    bad = read_parquet(lake.zone("features"), key)
    bad["features_asof"] = bad["features_asof"] + pd.Timedelta(days=2)  # claims to be later
    write_parquet(lake.zone("features"), key, bad)
    entities = pd.DataFrame({"customer_id": ["A"], "event_timestamp": [ts(6)]})
    with pytest.raises(TrainingSetError, match="after their event_timestamp"):
        training_frame(hand_built_store, entities, "churn_v1", entity="customer_id")


class _DroppingStore:
    """A store whose offline retrieval loses a row (as Feast's `file` store does)."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def get_feature_service(self, name: str) -> Any:
        return self.real.get_feature_service(name)

    def get_feature_view(self, name: str) -> Any:
        return self.real.get_feature_view(name)

    def get_historical_features(self, *, entity_df: pd.DataFrame, features: Any) -> Any:
        job = self.real.get_historical_features(entity_df=entity_df, features=features)

        class _Job:
            def to_df(self) -> pd.DataFrame:
                return job.to_df().iloc[1:]

        return _Job()


def test_training_frame_rejects_dropped_entity_rows(hand_built_store: Any) -> None:
    entities = pd.DataFrame({"customer_id": ["A", "GHOST"], "event_timestamp": [ts(6), ts(6)]})
    with pytest.raises(TrainingSetError, match="dropped"):
        training_frame(_DroppingStore(hand_built_store), entities, "churn_v1", entity="customer_id")  # type: ignore[arg-type]


def test_training_frame_on_a_labelled_entity_frame(hand_built_store: Any) -> None:
    active = pd.DataFrame(
        {"customer_id": ["A"] * 10 + ["OLD"], "date": [d(i) for i in range(1, 11)] + [d(1)]}
    )
    labels = _labels([("A", 11, 11)])
    frame = entity_frame(
        active, labels, as_of=d(11) + timedelta(days=3), horizon_days=2, label_delay_days=0
    )
    out = training_frame(hand_built_store, frame, "churn_v1", entity="customer_id")
    assert len(out) == len(frame) and out["churned"].sum() == 2  # s = Jan 10 and Jan 11
    assert out["features_asof"].notna().all()
    assert (out["features_asof"] == out["event_timestamp"]).all()  # the previous day's features
