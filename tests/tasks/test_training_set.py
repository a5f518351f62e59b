"""Labelled snapshots, the point-in-time join through Feast, and the time split."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from driftloop.settings import PROJECT_ROOT, Settings
from driftloop.usecase import load_usecase
from tasks.features import apply_repo, build_features, feature_key
from tasks.storage import Lake, read_parquet, write_parquet
from tasks.training_set import TrainingSetError, entity_frame, time_split, training_frame
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
    out = training_frame(hand_built_store, entities, "churn_v1")

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
    key = feature_key(d(5))
    bad = read_parquet(lake.zone("features"), key)
    bad["features_asof"] = bad["features_asof"] + pd.Timedelta(days=2)  # claims to be later
    write_parquet(lake.zone("features"), key, bad)
    entities = pd.DataFrame({"customer_id": ["A"], "event_timestamp": [ts(6)]})
    with pytest.raises(TrainingSetError, match="after their event_timestamp"):
        training_frame(hand_built_store, entities, "churn_v1")


class _DroppingStore:
    """A store whose offline retrieval loses a row (as Feast's `file` store does)."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def get_feature_service(self, name: str) -> Any:
        return self.real.get_feature_service(name)

    def get_historical_features(self, *, entity_df: pd.DataFrame, features: Any) -> Any:
        job = self.real.get_historical_features(entity_df=entity_df, features=features)

        class _Job:
            def to_df(self) -> pd.DataFrame:
                return job.to_df().iloc[1:]

        return _Job()


def test_training_frame_rejects_dropped_entity_rows(hand_built_store: Any) -> None:
    entities = pd.DataFrame({"customer_id": ["A", "GHOST"], "event_timestamp": [ts(6), ts(6)]})
    with pytest.raises(TrainingSetError, match="dropped"):
        training_frame(_DroppingStore(hand_built_store), entities, "churn_v1")  # type: ignore[arg-type]


def test_training_frame_on_a_labelled_entity_frame(hand_built_store: Any) -> None:
    active = pd.DataFrame(
        {"customer_id": ["A"] * 10 + ["OLD"], "date": [d(i) for i in range(1, 11)] + [d(1)]}
    )
    labels = _labels([("A", 11, 11)])
    frame = entity_frame(
        active, labels, as_of=d(11) + timedelta(days=3), horizon_days=2, label_delay_days=0
    )
    out = training_frame(hand_built_store, frame, "churn_v1")
    assert len(out) == len(frame) and out["churned"].sum() == 2  # s = Jan 10 and Jan 11
    assert out["features_asof"].notna().all()
    assert (out["features_asof"] == out["event_timestamp"]).all()  # the previous day's features
