"""A second use case, added by definitions only: a SaaS business with weekly account activity
and delayed cancellations (usecases/saas_retention.yaml, its builders and the generator of its
landed files in examples/saas_retention.py) runs through the unchanged flows — ingest with
quarantine, features into the SQLite online store, train + gate, score, drift — and is served
online. docs/own-data.md walks through the same example."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from driftloop_config.settings import PROJECT_ROOT, Settings, load_settings
from driftloop_config.usecase import load_usecase
from examples import saas_retention as saas
from tasks.drain import IngestSummary
from tasks.features import FeaturesSummary
from tasks.storage import Lake, read_parquet

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


@dataclass(frozen=True)
class World:
    settings: Settings
    landed: saas.Landed
    ingest: IngestSummary
    features: FeaturesSummary


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from flows.features import features_flow
    from flows.ingest import ingest_flow

    tmp = tmp_path_factory.mktemp("own-data")
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("DRIFTLOOP_DATA_ROOT", str(tmp / "lake"))
        mp.setenv("DRIFTLOOP_USECASE", str(PROJECT_ROOT / "usecases" / f"{saas.NAME}.yaml"))
        mp.setenv(
            "DRIFTLOOP_FEATURE_REPO", str(PROJECT_ROOT / "examples" / "feature_repos" / saas.NAME)
        )
        settings = load_settings()
        landed = saas.simulate_saas(Lake.from_settings(settings).landing)
        ingested = ingest_flow()
        built = features_flow()
        yield World(settings, landed, ingested, built)
    finally:
        mp.undo()


def test_ingest_quarantines_exactly_the_defects(world: World) -> None:
    totals = world.ingest["totals"]
    assert totals["objects"] == len(world.landed.objects)
    assert totals["rejected"] == len(world.landed.rejected_files) == 1
    assert totals["rows_quarantined"] == world.landed.quarantined_rows == 8
    by_key = {o["object"]: o for o in world.ingest["objects"]}
    for key in world.landed.rejected_files:
        assert by_key[key]["status"] == "rejected"
        assert "expect_table_columns_to_match_set" in by_key[key]["reason"]
    for key, defects in world.landed.bad_rows.items():
        assert by_key[key]["status"] == "partial"
        assert by_key[key]["quarantined"] == len(defects)
    week = next(k for k, d in world.landed.bad_rows.items() if "duplicate_row" in d)
    reasons = read_parquet(
        Lake.from_settings(world.settings).quarantine,
        f"rows/activity/{week.removeprefix('activity/')}.parquet",
    )["_reason"].tolist()
    assert "duplicate_row" in reasons
    assert any("match_regex(account_id)" in r for r in reasons)
    assert any("a_to_be_greater_than_b(seats,seats_used)" in r for r in reasons)


def test_features_reach_the_offline_table_and_the_online_store(world: World) -> None:
    built = world.features
    assert built["dates_built"] == [d.isoformat() for d in world.landed.week_ends]
    assert sorted(built["materialized"]) == ["account_profile", "engagement", "tier_reliability"]
    last = world.landed.week_ends[-1]
    assert built["latest_feature_timestamp"] == f"{last + timedelta(days=1)}T00:00:00+00:00"
    # two feature tables, each with its own manifest
    features = Lake.from_settings(world.settings).zone("features")
    tables = {i.key.split("/")[0] for i in features.list("")}
    assert tables == {"account_weekly", "tier_weekly", "_manifests"}
    tier_days = {i.key.split("/")[1] for i in features.list("tier_weekly")}
    assert tier_days == {f"date={d.isoformat()}" for d in world.landed.week_ends}


def test_a_bad_context_row_is_quarantined_alone(world: World) -> None:
    """The tier file with a bad row loses that row only; no account row is lost for it."""
    from tasks.ingest import read_validated

    settings = world.settings
    usecase = load_usecase(settings.usecase)
    lake = Lake.from_settings(settings)
    tiers = read_validated(lake, usecase.datasets["tier_status"])
    assert len(tiers) == 4 * len(world.landed.week_ends)  # every good tier row, the bad one not
    assert set(tiers["plan_tier"]) == set(saas.PLANS)
    activity = read_validated(lake, usecase.datasets["activity"])
    activity_defects = sum(
        len(d) for k, d in world.landed.bad_rows.items() if k.startswith("activity/")
    )
    assert len(activity) == world.landed.activity_rows - activity_defects
    [bad] = [k for k in world.landed.bad_rows if k.startswith("tier_status/")]
    reasons = read_parquet(lake.quarantine, f"rows/{bad}.parquet")["_reason"].tolist()
    assert len(reasons) == 1 and "outage_minutes" in reasons[0] and "plan_tier" in reasons[0]


def _expected_tier_features(
    landed: saas.Landed, accounts: pd.DataFrame, at: pd.Timestamp
) -> pd.DataFrame:
    """By hand: the account's tier is the one of its newest activity report known at ``at``
    (a report of Sunday d is known from d + 1, 00:00 UTC, for 21 days); the tier's features
    are the sums over its status reports of the 28 days ending on its newest report known at
    ``at`` (also for 21 days)."""
    assert landed.tier_status is not None
    status = landed.tier_status.loc[landed.tier_status["plan_tier"].isin(saas.PLANS)].copy()
    status["known"] = pd.to_datetime(status["week_end"]).dt.tz_localize(UTC) + timedelta(days=1)
    rows: list[tuple[Any, int | None, float | None]] = []
    for account, tier_of in accounts.itertuples(index=False):
        mine = status.loc[
            (status["plan_tier"] == tier_of)
            & (status["known"] <= at)
            & (status["known"] > at - timedelta(days=21))
        ]
        if mine.empty:
            rows.append((account, None, None))
            continue
        newest = mine["known"].max()
        window = status.loc[
            (status["plan_tier"] == tier_of)
            & (status["known"] <= newest)
            & (status["known"] > newest - timedelta(days=28))
        ]
        rows.append(
            (account, int(window["incidents"].sum()), float(window["outage_minutes"].sum()))
        )
    return pd.DataFrame(rows, columns=[saas.ENTITY, *saas.TIER_FEATURES])


def test_context_features_are_joined_point_in_time_through_the_feature_service(
    world: World,
) -> None:
    """Each account row gets its tier's features as known at the row's time, offline (training
    and scoring) and online (serving); a row between two status reports gets the older one."""
    from tasks.feature_store import (
        feature_store,
        online_features,
        read_online_columns,
        service_join,
    )
    from tasks.training_set import training_frame

    landed = world.landed
    store = feature_store(world.settings)
    report = landed.week_ends[5]
    # Wednesday after the report (it is known), and the Sunday it is dated (it is not yet)
    for at in (
        pd.Timestamp(report, tz=UTC) + timedelta(days=3),
        pd.Timestamp(report, tz=UTC),
    ):
        week = pd.Timestamp(report if at > pd.Timestamp(report, tz=UTC) else landed.week_ends[4])
        accounts = sorted(
            read_parquet(
                Lake.from_settings(world.settings).zone("features"),
                f"account_weekly/date={week.date().isoformat()}/part-00000.parquet",
            )[saas.ENTITY]
        )[:40]
        entity_df = pd.DataFrame({saas.ENTITY: accounts, "event_timestamp": at})
        got = training_frame(store, entity_df, saas.FEATURE_SERVICE, entity=saas.ENTITY)
        assert list(got[saas.ENTITY]) == accounts  # rows and order kept
        assert got["plan_tier"].notna().all()
        expected = _expected_tier_features(landed, got[[saas.ENTITY, "plan_tier"]], at)
        assert got["incidents_4w"].astype("int64").tolist() == expected["incidents_4w"].tolist()
        assert got["outage_minutes_4w"].tolist() == pytest.approx(
            expected["outage_minutes_4w"].tolist()
        )
    # the two instants see different reports: the check above tells them apart
    every_tier = pd.DataFrame({saas.ENTITY: list(saas.PLANS), "plan_tier": list(saas.PLANS)})
    sunday, wednesday = (
        _expected_tier_features(landed, every_tier, at)["outage_minutes_4w"].tolist()
        for at in (pd.Timestamp(report, tz=UTC), pd.Timestamp(report, tz=UTC) + timedelta(days=3))
    )
    assert all(a != b for a, b in zip(sunday, wednesday, strict=True))

    # online: the newest report of each account's tier
    newest = pd.Timestamp(landed.week_ends[-1], tz=UTC) + timedelta(days=1)
    ids = accounts[:10]
    online = online_features(store, ids, saas.FEATURE_SERVICE, entity=saas.ENTITY)
    assert list(online[saas.ENTITY]) == ids
    expected = _expected_tier_features(landed, online[[saas.ENTITY, "plan_tier"]], newest)
    assert online["incidents_4w"].astype("int64").tolist() == expected["incidents_4w"].tolist()
    # the online service's read (context looked up through the tier), as columns: the same
    service = store.get_feature_service(saas.FEATURE_SERVICE)
    as_columns = read_online_columns(store, service, service_join(store, service, saas.ENTITY), ids)
    assert list(as_columns) == list(online.columns)
    pd.testing.assert_frame_equal(pd.DataFrame(as_columns), online)


def test_train_score_drift_and_serve(world: World) -> None:
    from fastapi.testclient import TestClient

    from driftloop.serve import create_app
    from flows.drift import DriftParams, drift_flow
    from flows.score import ScoreParams, score_flow
    from flows.train import TrainParams, train_flow
    from tasks import registry
    from tasks.serve import InvalidIds, build_predictor

    settings = world.settings
    name = saas.NAME

    # train + gate: the first model is judged by the floor (0.6) and becomes champion
    trained = train_flow(TrainParams(seed=1))
    holdout = trained["metrics"]["holdout"]
    print(f"saas holdout: auc={holdout['roc_auc']:.3f} n={holdout['n']} pos={holdout['positives']}")
    assert trained["promoted"], trained["decision"]["reason"]
    assert holdout["roc_auc"] > 0.75
    assert registry.champion_version(settings.tracking_uri, name) == trained["version"]
    tags = registry.client_for(settings.tracking_uri).get_model_version(name, "1").tags
    assert tags["driftloop.feature_service"] == saas.FEATURE_SERVICE
    reference = registry.load_reference(settings.tracking_uri, name, "1")
    assert "seat_utilisation" in reference["numeric"]
    assert "plan_tier" in reference["categorical"]
    # the context's inputs were trained on and are in the reference the drift checks use
    assert {"incidents_4w", "outage_minutes_4w"} <= set(reference["numeric"])

    # score: an earlier week (its labels are known by now) and the newest one (the default)
    weeks = world.landed.week_ends
    earlier = score_flow(ScoreParams(day=weeks[-3]))
    newest = score_flow()
    assert newest["day"] == weeks[-1].isoformat()
    assert earlier["scored"] > 0 and newest["scored"] > 0
    lake = Lake.from_settings(settings)
    predictions = read_parquet(lake.zone("predictions"), newest["key"].removeprefix("predictions/"))
    # named after the use case: its entity, its target, its feature table
    assert list(predictions.columns) == [
        saas.ENTITY,
        "event_timestamp",
        "cancelled_probability",
        "model_version",
        "features_asof",
    ]
    assert predictions["cancelled_probability"].between(0, 1).all()
    tables = {i.key.split("/")[0] for i in lake.zone("features").list("")}
    assert tables == {"account_weekly", "tier_weekly", "_manifests"}

    # drift: the newest week against the training reference, with performance once labelled
    checked = drift_flow(DriftParams())
    assert checked["window"] == [(weeks[-1] - timedelta(days=6)).isoformat(), str(weeks[-1])]
    assert {s["feature"] for s in checked["scores"]} >= {"seat_utilisation", "plan_tier"}
    roles = {s["feature"]: s["role"] for s in checked["scores"]}
    assert roles["incidents_4w"] == roles["outage_minutes_4w"] == "context"
    assert roles["seat_utilisation"] != "context"
    assert lake.reports.exists(checked["report"])
    labelled = [p for p in checked["realised"] if p["auc"] is not None]
    snapshot = str(weeks[-3] + timedelta(days=1))
    assert [(p["first"], p["last"]) for p in labelled] == [(snapshot, snapshot)]
    assert labelled[0]["auc"] > 0.6

    # online: the champion scores one account on its online features
    predictor = build_predictor(settings, refresh_seconds=0)
    account = str(predictions[saas.ENTITY].iloc[0])
    [row] = predictor.predict([account])
    assert row[saas.ENTITY] == account and row["model_version"] == trained["version"]
    assert set(row) == {saas.ENTITY, "cancelled_probability", "model_version", "features_asof"}
    assert row["features_asof"] == datetime.combine(
        weeks[-1] + timedelta(days=1), datetime.min.time(), tzinfo=UTC
    )
    assert (
        abs(row["cancelled_probability"] - float(predictions["cancelled_probability"].iloc[0]))
        < 1e-9
    )
    with pytest.raises(InvalidIds, match="account_id"):
        predictor.predict(["C0000001"])
    # the serving API asks and answers in the use case's names
    client = TestClient(create_app(settings, predictor=predictor))
    answer = client.post("/predict", json={saas.ENTITY: account})
    assert answer.status_code == 200, answer.text
    assert answer.json()["cancelled_probability"] == pytest.approx(row["cancelled_probability"])
    batch = client.post("/predict/batch", json={f"{saas.ENTITY}s": [account, account]})
    assert [p[saas.ENTITY] for p in batch.json()["predictions"]] == [account, account]
    assert client.post("/predict", json={"customer_id": account}).status_code == 422


def test_the_definitions_are_a_valid_use_case(world: World) -> None:
    usecase = load_usecase(world.settings.usecase)
    assert usecase.entity == saas.ENTITY
    assert usecase.reported_column == "logged_on"
    assert usecase.features is not None
    assert usecase.features.builder == "examples.saas_retention:saas_weekly_features"
