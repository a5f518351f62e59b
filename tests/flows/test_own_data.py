"""A second use case, added by definitions only: a SaaS business with weekly account activity
and delayed cancellations (tests/support/saas.py) runs through the unchanged flows — ingest with
quarantine, features into the SQLite online store, train + gate, score, drift — and is served
online. docs/own-data.md walks through the same example."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from driftloop.settings import Settings, load_settings
from driftloop.usecase import load_usecase
from tasks.storage import Lake, read_parquet
from tests.support import saas

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


@dataclass(frozen=True)
class World:
    settings: Settings
    landed: saas.Landed
    ingest: dict[str, Any]
    features: dict[str, Any]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from flows.features import features_flow
    from flows.ingest import ingest_flow

    tmp = tmp_path_factory.mktemp("own-data")
    defs = saas.write_definitions(tmp / "project", floor=0.6)
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("DRIFTLOOP_DATA_ROOT", str(tmp / "lake"))
        mp.setenv("DRIFTLOOP_USECASE", str(defs.usecase))
        mp.setenv("DRIFTLOOP_FEATURE_REPO", str(defs.feature_repo))
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
    assert totals["rows_quarantined"] == world.landed.quarantined_rows == 7
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
    assert sorted(built["materialized"]) == ["account_profile", "engagement"]
    last = world.landed.week_ends[-1]
    assert built["latest_feature_timestamp"] == f"{last + timedelta(days=1)}T00:00:00+00:00"


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
    assert tables == {"account_weekly", "_manifests"}

    # drift: the newest week against the training reference, with performance once labelled
    checked = drift_flow(DriftParams())
    assert checked["window"] == [(weeks[-1] - timedelta(days=6)).isoformat(), str(weeks[-1])]
    assert {s["feature"] for s in checked["scores"]} >= {"seat_utilisation", "plan_tier"}
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
    assert usecase.features.builder == "tests.support.saas:saas_weekly_features"
