"""Feature math, the incremental build, and the built rows through Feast (SQLite, Redis, an S3
lake's mirror). The Feast repository and the store's configuration: test_feature_store.py; the
builder's code: test_feature_code.py."""

from __future__ import annotations

import math
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftloop.simulate import simulate
from driftloop_config.settings import PROJECT_ROOT, Settings, load_settings
from driftloop_config.usecase import load_usecase
from examples.telco_churn import AGGREGATE_COLUMNS, FEATURE_COLUMNS, telco_daily_features
from tasks.drain import drain
from tasks.feature_store import (
    apply_repo,
    feature_source_path,
    feature_store,
    materialize,
    offline_features_dir,
    online_features,
    read_online_columns,
    service_join,
    sync_offline_source,
)
from tasks.features import (
    build_features,
    feature_key,
    latest_feature_timestamp,
    manifest_key,
    read_manifest,
)
from tasks.ingest import Ledger
from tasks.storage import Lake, LocalStorage, read_parquet, write_parquet
from tests.support import services
from tests.support.builders import BUILDER, own_builder_module
from tests.support.servers import free_port
from tests.support.services import require_redis
from tests.support.usecases import usecase_with

USECASE = load_usecase(PROJECT_ROOT / "usecases" / "telco_churn.yaml")
SIM_START = date(2026, 1, 1)
SIM_DAYS = 36


def day(n: int, month: int = 1) -> date:
    return date(2026, month, n)


def usage(rows: Sequence[Mapping[str, object]]) -> pd.DataFrame:
    """Validated-typed usage rows; unspecified columns get plain defaults."""
    defaults: dict[str, object] = {
        "plan": "basic",
        "contract": "month_to_month",
        "tenure_months": 12,
        "region": "north",
        "payment_method": "card",
        "monthly_charge": 30.0,
        "minutes": 10.0,
        "data_gb": 1.0,
        "dropped_calls": 0,
        "support_tickets": 0,
        "bill_amount": 1.0,
    }
    df = pd.DataFrame([{**defaults, **r} for r in rows])
    df["date"] = pd.to_datetime(df["date"])
    for col in ("customer_id", "plan", "contract", "region", "payment_method"):
        df[col] = df[col].astype("string")
    for col in ("tenure_months", "dropped_calls", "support_tickets"):
        df[col] = df[col].astype("Int64")
    for col in ("monthly_charge", "minutes", "data_gb", "bill_amount"):
        df[col] = df[col].astype("float64")
    return df


# ---- the feature function -----------------------------------------------------------------------


def _hand_built() -> pd.DataFrame:
    a_days = [1, 2, 3, 5, 6, 7, 9, 10]  # no usage on Jan 4 and Jan 8
    rows: list[dict[str, object]] = [
        # Dec 11 is one day before the 30-day window of Jan 10: never counted
        {"customer_id": "A", "date": date(2025, 12, 11), "minutes": 9999.0, "bill_amount": 99.0},
        # after the feature day: must never be used
        {"customer_id": "A", "date": day(11), "minutes": 5000.0, "dropped_calls": 50},
        # only in the lookback window: no output row
        {"customer_id": "C", "date": day(3), "minutes": 7.0},
        # active on Jan 10 only, with zero minutes: ratios over a zero are NaN
        {"customer_id": "B", "date": day(10), "minutes": 0.0, "data_gb": 0.0, "plan": "premium"},
    ]
    for d in a_days:
        rows.append(
            {
                "customer_id": "A",
                "date": day(d),
                "minutes": 10.0 * d,
                "data_gb": 3.0 if d == 10 else 1.0,
                "dropped_calls": {9: 2, 10: 1}.get(d, 0),
                "support_tickets": 1 if d in (2, 10) else 0,
                "bill_amount": 5.0 if d == 10 else 2.0,
                "plan": "premium" if d >= 9 else "basic",
                "tenure_months": 12 if d < 9 else 13,
            }
        )
    return usage(rows)


def test_feature_math_on_hand_built_rows() -> None:
    out = telco_daily_features(_hand_built(), day(10), day(10))
    assert list(out.columns) == list(FEATURE_COLUMNS)
    assert out["customer_id"].tolist() == ["A", "B"]
    a = out.iloc[0]
    # 7-day window Jan 4..10: usage on 5, 6, 7, 9, 10; 30-day window Dec 12..Jan 10: all 8 days
    assert a["minutes_mean_7d"] == pytest.approx((50 + 60 + 70 + 90 + 100) / 5)
    assert a["minutes_mean_30d"] == pytest.approx(430 / 8)
    assert a["minutes_trend"] == pytest.approx(74 / 53.75)
    assert a["data_gb_mean_7d"] == pytest.approx(7 / 5)
    assert a["data_gb_mean_30d"] == pytest.approx(10 / 8)
    assert a["data_gb_trend"] == pytest.approx(1.4 / 1.25)
    assert a["dropped_calls_sum_7d"] == 3
    assert a["dropped_call_rate_7d"] == pytest.approx(100 * 3 / 370)
    assert a["support_tickets_sum_30d"] == 2
    assert a["bill_mean_7d"] == pytest.approx(13 / 5)
    assert a["bill_change_7d_30d"] == pytest.approx(2.6 / (19 / 8))
    assert a["active_days_30d"] == 8
    assert (a["plan"], a["tenure_months"]) == ("premium", 13)  # the profile as of that day
    b = out.iloc[1]
    assert b["minutes_mean_7d"] == 0 and b["active_days_30d"] == 1 and b["plan"] == "premium"
    assert math.isnan(b["minutes_trend"]) and math.isnan(b["dropped_call_rate_7d"])
    assert math.isnan(b["data_gb_trend"])


def test_feature_rows_are_known_at_the_end_of_their_day() -> None:
    out = telco_daily_features(_hand_built(), day(1), day(10))
    assert sorted(set(out["date"].dt.day)) == [1, 2, 3, 5, 6, 7, 9, 10]  # no row without usage
    assert str(out["event_timestamp"].dtype) == "datetime64[ns, UTC]"
    expected = (out["date"] + pd.Timedelta(days=1)).dt.tz_localize("UTC")
    assert (out["event_timestamp"] == expected).all()
    assert (out["features_asof"] == out["event_timestamp"]).all()
    a7 = out[(out["customer_id"] == "A") & (out["date"] == pd.Timestamp(day(7)))].iloc[0]
    assert a7["plan"] == "basic" and a7["minutes_mean_7d"] == pytest.approx(40.0)


def test_a_feature_day_never_sees_later_rows_and_ignores_the_range() -> None:
    """Each day's row equals the one computed from the rows up to that day only."""
    rng = np.random.default_rng(5)
    rows = [
        {
            "customer_id": f"C{c}",
            "date": day(1) + timedelta(days=int(d)),
            "minutes": float(rng.gamma(2, 10)),
            "data_gb": float(rng.gamma(2, 0.5)),
            "dropped_calls": int(rng.poisson(1)),
            "support_tickets": int(rng.poisson(0.2)),
            "bill_amount": float(rng.gamma(2, 1)),
            "plan": ["basic", "premium"][int(rng.integers(2))],
        }
        for c in range(6)
        for d in range(50)
        if rng.random() < 0.7
    ]
    full = usage(rows)
    start, end = day(1) + timedelta(days=29), day(1) + timedelta(days=49)
    everything = telco_daily_features(full, start, end)
    for offset in (0, 7, 20):
        d = start + timedelta(days=offset)
        alone = telco_daily_features(full[full["date"] <= pd.Timestamp(d)], d, d)
        part = everything[everything["date"] == pd.Timestamp(d)].reset_index(drop=True)
        pd.testing.assert_frame_equal(alone, part)


def test_feature_function_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(11)
    rows = [
        {
            "customer_id": f"K{c}",
            "date": day(1) + timedelta(days=int(d)),
            "minutes": float(rng.gamma(2, 10)),
            "data_gb": float(rng.gamma(2, 0.5)),
            "dropped_calls": int(rng.poisson(1)),
            "support_tickets": int(rng.poisson(0.3)),
            "bill_amount": float(rng.gamma(2, 1)),
        }
        for c in range(4)
        for d in range(45)
        if rng.random() < 0.6
    ]
    df = usage(rows)
    start = day(1) + timedelta(days=30)
    out = telco_daily_features(df, start, start + timedelta(days=14))
    for _, row in out.sample(15, random_state=1).iterrows():
        mine = df[df["customer_id"] == row["customer_id"]]
        w7 = mine[
            (mine["date"] > row["date"] - pd.Timedelta(days=7)) & (mine["date"] <= row["date"])
        ]
        w30 = mine[
            (mine["date"] > row["date"] - pd.Timedelta(days=30)) & (mine["date"] <= row["date"])
        ]
        assert row["minutes_mean_7d"] == pytest.approx(w7["minutes"].mean())
        assert row["data_gb_mean_30d"] == pytest.approx(w30["data_gb"].mean())
        assert row["bill_change_7d_30d"] == pytest.approx(
            w7["bill_amount"].mean() / w30["bill_amount"].mean()
        )
        assert row["dropped_call_rate_7d"] == pytest.approx(
            100 * w7["dropped_calls"].sum() / w7["minutes"].sum()
        )
        assert row["support_tickets_sum_30d"] == w30["support_tickets"].sum()
        assert row["active_days_30d"] == len(w30)


def test_duplicate_rows_keep_the_last_and_empty_input_gives_typed_empty_frame() -> None:
    df = usage(
        [
            {"customer_id": "A", "date": day(5), "minutes": 1.0},
            {"customer_id": "A", "date": day(5), "minutes": 3.0},
        ]
    )
    out = telco_daily_features(df, day(5), day(5))
    assert len(out) == 1 and out.loc[0, "minutes_mean_7d"] == 3.0
    empty = telco_daily_features(df.iloc[0:0], day(5), day(6))
    assert list(empty.columns) == list(FEATURE_COLUMNS) and empty.empty
    assert str(empty["event_timestamp"].dtype) == "datetime64[ns, UTC]"
    assert all(c in empty for c in AGGREGATE_COLUMNS)
    with pytest.raises(ValueError, match="before start"):
        telco_daily_features(df, day(6), day(5))


def test_feature_function_is_vectorised() -> None:
    """160,000 rows in one call (with gaps: a day without usage is absent) give, for every
    sampled customer, exactly the rows of a call on that customer alone, and the window
    aggregates equal pandas' own time-based rolling windows."""
    rng = np.random.default_rng(0)
    n_c, n_d = 2_000, 80
    cid = np.repeat(np.arange(n_c), n_d)
    d = np.tile(np.arange(n_d), n_c)
    present = rng.random(len(cid)) > 0.2
    cid, d = cid[present], d[present]
    n = len(cid)
    df = pd.DataFrame(
        {
            "customer_id": [f"C{c:07d}" for c in cid],
            "date": pd.Timestamp(day(1)) + pd.to_timedelta(d, unit="D"),
            "plan": "basic",
            "contract": "one_year",
            "tenure_months": pd.array(np.full(n, 3), dtype="Int64"),
            "region": "north",
            "payment_method": "card",
            "monthly_charge": 30.0,
            "minutes": rng.gamma(2, 10, n),
            "data_gb": rng.gamma(2, 0.5, n),
            "dropped_calls": pd.array(rng.poisson(0.3, n), dtype="Int64"),
            "support_tickets": pd.array(rng.poisson(0.05, n), dtype="Int64"),
            "bill_amount": rng.gamma(2, 1, n),
        }
    )
    start, end = day(30), day(1) + timedelta(days=n_d - 1)
    out = telco_daily_features(df, start, end)
    in_range = df["date"].between(pd.Timestamp(start), pd.Timestamp(end))
    assert len(out) == int(in_range.sum())
    for customer in rng.choice(df["customer_id"].unique(), size=25, replace=False):
        own = df[df["customer_id"] == customer]
        alone = telco_daily_features(own, start, end).reset_index(drop=True)
        together = out[out["customer_id"] == customer].reset_index(drop=True)
        pd.testing.assert_frame_equal(together, alone)
        # the windows are calendar windows over the days with usage
        series = own.set_index("date").sort_index()
        roll7 = series["minutes"].rolling("7D")
        expected = pd.DataFrame(
            {
                "minutes_mean_7d": roll7.mean(),
                "dropped_calls_sum_7d": series["dropped_calls"]
                .astype("float64")
                .rolling("7D")
                .sum(),
                "active_days_30d": series["minutes"].rolling("30D").count(),
            }
        )
        expected = expected.loc[pd.Timestamp(start) : pd.Timestamp(end)].reset_index(drop=True)
        for column in expected.columns:
            np.testing.assert_allclose(
                together[column].to_numpy(dtype="float64"),
                expected[column].to_numpy(dtype="float64"),
                rtol=1e-9,
                err_msg=f"{customer} {column}",
            )


# ---- incremental build on simulated, validated data ---------------------------------------------


@pytest.fixture(scope="module")
def validated_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake with SIM_DAYS days of simulated usage for 300 customers, ingested (once)."""
    root = tmp_path_factory.mktemp("simulated") / "lake"
    lake = Lake.from_settings(load_settings(data_root=str(root)))
    simulate(lake.landing, days=SIM_DAYS, customers=300, label_delay_days=7, seed=3)
    usage = [o.key for o in lake.landing.list() if o.key.startswith("usage/")]
    drain(lake, Ledger(lake.ledger), USECASE, max_bytes=50_000_000, keys=usage)
    return root


@pytest.fixture
def sim_settings(validated_lake: Path, local_settings: Settings) -> Iterator[Settings]:
    """Fresh settings (temp data root) whose validated/ zone is a copy of the simulated one."""
    src = Lake.from_settings(load_settings(data_root=str(validated_lake))).validated
    dst = Lake.from_settings(local_settings).validated
    for info in src.list():
        dst.write_bytes(info.key, src.read_bytes(info.key))
    yield local_settings


def _features_state(lake: Lake) -> dict[str, str]:
    return {o.key: o.etag for o in lake.zone("features").list()}


def test_build_is_incremental(sim_settings: Settings) -> None:
    lake = Lake.from_settings(sim_settings)
    all_days = [SIM_START + timedelta(days=i) for i in range(SIM_DAYS)]

    assert build_features(lake, USECASE) == all_days
    manifest = read_manifest(lake, "customer_daily")
    assert sorted(manifest["dates"]) == [d.isoformat() for d in all_days]
    first = read_parquet(lake.zone("features"), feature_key("customer_daily", all_days[0]))
    assert len(first) == manifest["dates"][all_days[0].isoformat()]["rows"] > 250

    # the same input again: nothing is rebuilt and nothing at all is written
    before = _features_state(lake)
    time.sleep(0.01)
    assert build_features(lake, USECASE) == []
    assert _features_state(lake) == before

    # one validated partition changes: exactly the days whose 30-day window holds it rebuild
    changed = SIM_START + timedelta(days=3)
    [part] = [o for o in lake.validated.list(f"usage/date={changed.isoformat()}/")]
    rows = read_parquet(lake.validated, part.key)
    rows["minutes"] = rows["minutes"] * 2
    write_parquet(lake.validated, part.key, rows)
    rebuilt = build_features(lake, USECASE)
    assert rebuilt == [changed + timedelta(days=i) for i in range(30)]
    after = _features_state(lake)
    for d in all_days:
        same = before[feature_key("customer_daily", d)] == after[feature_key("customer_daily", d)]
        assert same == (d not in rebuilt), d
    assert after[manifest_key("customer_daily")] != before[manifest_key("customer_daily")]

    # a partition disappears: its day's file goes, its window's days rebuild
    gone = all_days[-1]
    for info in lake.validated.list(f"usage/date={gone.isoformat()}/"):
        lake.validated.delete(info.key)
    assert build_features(lake, USECASE) == []
    assert not lake.zone("features").exists(feature_key("customer_daily", gone))
    assert gone.isoformat() not in read_manifest(lake, "customer_daily")["dates"]

    # explicit days with force: rebuilt even though unchanged, and written identically
    again = build_features(lake, USECASE, dates=[all_days[0]], force=True)
    assert again == [all_days[0]]
    assert read_parquet(lake.zone("features"), feature_key("customer_daily", all_days[0])).equals(
        first
    )


CHANGED_BUILDER = BUILDER.replace(
    "    return telco_daily_features(usage, start, end)",
    "    out = telco_daily_features(usage, start, end)\n"
    "    out['minutes_mean_7d'] = out['minutes_mean_7d'] + 1000.0  # the feature's code changed\n"
    "    return out",
)


@pytest.fixture
def builder_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A builder module of its own (name, file): see
    :func:`tests.support.builders.own_builder_module`."""
    with own_builder_module(tmp_path, monkeypatch) as found:
        yield found


def test_a_change_of_the_builders_code_rebuilds_every_day(
    sim_settings: Settings, tmp_path: Path, builder_module: tuple[str, Path]
) -> None:
    name, path = builder_module
    usecase = load_usecase(usecase_with(tmp_path, features={"builder": f"{name}:build"}))
    lake = Lake.from_settings(sim_settings)
    all_days = [SIM_START + timedelta(days=i) for i in range(SIM_DAYS)]
    last = feature_key("customer_daily", all_days[-1])

    assert build_features(lake, usecase) == all_days
    header = read_manifest(lake, "customer_daily")["builder_code"]
    assert sorted(header) == sorted([name, "examples.telco_churn"])  # what it runs: not pandas
    before = _features_state(lake)
    old = read_parquet(lake.zone("features"), last)

    # unchanged code and input: nothing is rebuilt and nothing at all is written
    assert build_features(lake, usecase) == []
    assert _features_state(lake) == before

    # the code changes (read by a fresh import, as in the next flow run): every day rebuilds,
    # with the new values
    path.write_text(CHANGED_BUILDER)
    sys.modules.pop(name)
    assert build_features(lake, usecase) == all_days
    new = read_parquet(lake.zone("features"), last)
    pd.testing.assert_series_equal(new["minutes_mean_7d"], old["minutes_mean_7d"] + 1000.0)
    pd.testing.assert_frame_equal(
        new.drop(columns="minutes_mean_7d"), old.drop(columns="minutes_mean_7d")
    )
    after = _features_state(lake)
    assert all(
        after[feature_key("customer_daily", d)] != before[feature_key("customer_daily", d)]
        for d in all_days
    )
    code = read_manifest(lake, "customer_daily")["builder_code"]
    assert (
        code[name] != header[name]
        and code["examples.telco_churn"] == header["examples.telco_churn"]
    )

    # and unchanged again: nothing
    assert build_features(lake, usecase) == []
    assert _features_state(lake) == after


def test_feature_store_offline_equals_online_sqlite(sim_settings: Settings) -> None:
    lake = Lake.from_settings(sim_settings)
    build_features(lake, USECASE)
    store = apply_repo(sim_settings)
    end = latest_feature_timestamp(lake, "customer_daily")
    assert end == datetime(2026, 2, 6, tzinfo=UTC)  # day 36 = Feb 5, known at Feb 6

    loaded = materialize(store, end)
    assert set(loaded) == {"customer_profile", "usage_aggregates"}
    assert materialize(store, end) == {}  # already up to date
    _assert_online_matches_offline(store, lake, end)

    # the online database is lost (a wiped state directory): the next run loads it again
    files = list(sim_settings.state_path.glob("online.db*"))
    assert sim_settings.state_path / "online.db" in files
    for path in files:
        path.unlink()
    store = feature_store(sim_settings)
    assert all(v.most_recent_end_time is not None for v in store.list_feature_views())
    assert materialize(store, end) == loaded
    _assert_online_matches_offline(store, lake, end)


def _assert_online_matches_offline(store: object, lake: Lake, end: datetime) -> None:
    from tasks.training_set import training_frame

    last_day = read_parquet(
        lake.zone("features"), feature_key("customer_daily", end.date() - timedelta(days=1))
    )
    ids = [*sorted(last_day["customer_id"])[:25], "nobody"]
    online = online_features(store, ids, "churn_v1", entity="customer_id")  # type: ignore[arg-type]
    entities = pd.DataFrame({"customer_id": ids, "event_timestamp": [end] * len(ids)})
    offline = training_frame(store, entities, "churn_v1", entity="customer_id")  # type: ignore[arg-type]
    assert list(online["customer_id"]) == ids
    columns = [c for c in offline.columns if c not in ("customer_id", "event_timestamp")]
    assert list(online.columns) == ["customer_id", *columns]
    for col in columns:
        a, b = online[col], offline[col]
        if col == "features_asof":
            assert (pd.to_datetime(a[:-1], utc=True) == end).all()
            assert (pd.to_datetime(b[:-1], utc=True) == end).all()
        elif a.dtype.kind == "f" or b.dtype.kind == "f":
            np.testing.assert_allclose(a.astype(float), b.astype(float), rtol=1e-12, err_msg=col)
        else:
            assert a.tolist()[:-1] == b.tolist()[:-1], col
    assert online.iloc[-1].drop("customer_id").isna().all()  # unknown customer: all null
    # the online service's read, as columns, holds the same values
    service = store.get_feature_service("churn_v1")  # type: ignore[attr-defined]
    join = service_join(store, service, "customer_id")  # type: ignore[arg-type]
    as_columns = read_online_columns(store, service, join, ids)  # type: ignore[arg-type]
    assert list(as_columns) == list(online.columns)
    pd.testing.assert_frame_equal(pd.DataFrame(as_columns), online)


@pytest.mark.services
def test_feature_store_offline_equals_online_redis(
    sim_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = require_redis()
    project = f"dltest_{uuid.uuid4().hex[:10]}"  # Feast prefixes every Redis key with it
    monkeypatch.setenv("DRIFTLOOP_ONLINE_STORE", "redis")
    monkeypatch.setenv("DRIFTLOOP_REDIS_URL", f"{address},db=0")
    monkeypatch.setenv("DRIFTLOOP_FEAST_PROJECT", project)
    settings = load_settings()
    lake = Lake.from_settings(settings)
    build_features(lake, USECASE)
    store = apply_repo(settings)
    assert store.config.online_store.type == "redis"
    try:
        end = latest_feature_timestamp(lake, "customer_daily")
        assert end is not None
        materialize(store, end)
        _assert_online_matches_offline(store, lake, end)
    finally:
        store.teardown()
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=0)
    assert not [k for k in client.scan_iter(count=1000) if project.encode() in k]


def test_s3_lake_offline_store_reads_a_synced_local_mirror(
    validated_lake: Path,
    s3_endpoint: str,
    s3_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DuckDB cannot read s3:// here (no httpfs download): the offline store reads a mirror of
    the lake's features/ zone under the state dir, which every new store brings up to date."""
    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", f"s3://{s3_bucket}/lake")
    monkeypatch.setenv("DRIFTLOOP_AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("DRIFTLOOP_STATE_DIR", str(tmp_path / "state"))
    settings = load_settings()
    lake = Lake.from_settings(settings)
    src = Lake.from_settings(load_settings(data_root=str(validated_lake))).validated
    for info in src.list():
        lake.validated.write_bytes(info.key, src.read_bytes(info.key))
    build_features(lake, USECASE)

    mirror_dir = tmp_path / "state" / "offline-mirror" / "features"
    assert offline_features_dir(settings) == mirror_dir
    assert feature_source_path(settings, "customer_daily") == str(
        mirror_dir / "customer_daily/date=*/*.parquet"
    )
    store = apply_repo(settings)  # builds the store, which syncs the mirror
    mirror = LocalStorage(mirror_dir)
    zone = lake.zone("features")
    assert {o.key: zone.read_bytes(o.key) for o in zone.list()} == {
        o.key: mirror.read_bytes(o.key) for o in mirror.list()
    }
    again = sync_offline_source(settings)  # nothing changed: nothing copied
    assert again is not None and not again.changed and again.unchanged == len(mirror.list())

    end = latest_feature_timestamp(lake, "customer_daily")
    assert end is not None
    assert set(materialize(store, end)) == {"customer_profile", "usage_aggregates"}
    _assert_online_matches_offline(store, lake, end)

    # the last day is rebuilt in the lake and the day before deleted: a new store reads that
    last, gone = end.date() - timedelta(days=1), end.date() - timedelta(days=2)
    rows = read_parquet(zone, feature_key("customer_daily", last))
    rows["minutes_mean_7d"] = 1234.5
    write_parquet(zone, feature_key("customer_daily", last), rows)
    zone.delete(feature_key("customer_daily", gone))
    from tasks.training_set import training_frame

    ids = sorted(rows["customer_id"])[:5]
    entities = pd.DataFrame({"customer_id": ids, "event_timestamp": [end] * len(ids)})
    offline = training_frame(feature_store(settings), entities, "churn_v1", entity="customer_id")
    assert (offline["minutes_mean_7d"] == 1234.5).all()
    assert not mirror.exists(feature_key("customer_daily", gone)) and mirror.exists(
        feature_key("customer_daily", last)
    )
    assert sync_offline_source(load_settings(data_root=str(validated_lake))) is None  # local lake


def test_services_helper_skips_unless_services_are_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.delenv("DRIFTLOOP_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not answering"):
        services.require_redis(port=port)
    monkeypatch.setenv("DRIFTLOOP_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="DRIFTLOOP_REQUIRE_SERVICES=1"):
        services.require_redis(port=port)
