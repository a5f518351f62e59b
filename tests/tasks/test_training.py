"""The training stage's choice of drift reference: the newest feature days up to ``as_of``."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd

from driftloop_config.settings import Settings
from driftloop_config.usecase import load_usecase
from tasks.features import feature_key
from tasks.policy import Deferral, RunRequest
from tasks.storage import Lake, write_parquet
from tasks.training import prepare, reference_rows

AS_OF = date(2026, 3, 20)


def _lake(tmp_path: Path, days: list[date]) -> Lake:
    lake = Lake.from_settings(Settings(data_root=str(tmp_path / "lake")))
    zone = lake.zone("features")
    for i, day in enumerate(days):
        ts = datetime(day.year, day.month, day.day, tzinfo=UTC)
        rows = pd.DataFrame(
            {"customer_id": ["a", "b", "c"], "event_timestamp": [ts] * 3, "x": [i, i, i]}
        )
        write_parquet(zone, feature_key("customer_daily", day), rows)
    return lake


def _usecase(window_days: int, windows: int):
    base = load_usecase(Settings().usecase)
    drift = base.drift.model_copy(update={"window_days": window_days, "reference_windows": windows})
    return base.model_copy(update={"drift": drift})


def test_the_reference_is_the_newest_feature_days_up_to_as_of(tmp_path: Path) -> None:
    days = [AS_OF - timedelta(days=d) for d in range(-2, 12)]  # two days after as_of too
    lake = _lake(tmp_path, days)
    fallback = pd.DataFrame({"x": [-1]})
    got = reference_rows(lake, _usecase(1, 7), AS_OF, fallback=fallback)
    seen = sorted(pd.to_datetime(got["event_timestamp"]).dt.date.unique())
    assert seen == [AS_OF - timedelta(days=d) for d in range(6, -1, -1)]
    assert len(got) == 7 * 3
    # window_days × reference_windows days: 2 × 3 = 6
    got = reference_rows(lake, _usecase(2, 3), AS_OF, fallback=fallback)
    assert pd.to_datetime(got["event_timestamp"]).dt.date.nunique() == 6


def test_too_few_feature_days_fall_back(tmp_path: Path) -> None:
    fallback = pd.DataFrame({"x": [-1]})
    # one day only: not two windows
    lake = _lake(tmp_path, [AS_OF])
    assert reference_rows(lake, _usecase(1, 7), AS_OF, fallback=fallback) is fallback
    # two windows of 3 days need 6 days present; 5 are not enough
    lake = _lake(tmp_path / "b", [AS_OF - timedelta(days=d) for d in range(5)])
    assert reference_rows(lake, _usecase(3, 4), AS_OF, fallback=fallback) is fallback
    # nothing at all
    empty = Lake.from_settings(Settings(data_root=str(tmp_path / "none")))
    assert reference_rows(empty, _usecase(1, 7), AS_OF, fallback=fallback) is fallback


def test_a_train_run_before_anything_was_validated_defers_without_a_day(
    local_settings: Settings,
) -> None:
    usecase = load_usecase(local_settings.usecase)
    lake = Lake.from_settings(local_settings)
    deferral = prepare(lake, usecase, RunRequest(trigger="manual"), settings=local_settings)
    assert deferral == Deferral("nothing validated yet", None)
    assert deferral.to_dict() == {"trained": False, "reason": "nothing validated yet"}
    # no decision was recorded: the policy had no day to decide as of
    assert not lake.ledger.exists("loop-state.json")
