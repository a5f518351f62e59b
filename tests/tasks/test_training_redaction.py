"""The tracking store's password stays out of what the train flow shows: its decision events,
its promotion reports and the tags and params it writes to MLflow."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftloop_config.settings import load_settings
from driftloop_config.usecase import load_usecase
from tasks import recovery, registry, training
from tasks.gate import Decision
from tasks.model import evaluate, fit, flat_metrics, model_input, predict_scores
from tasks.reference import data_fingerprint, reference_profile
from tasks.storage import Lake
from tests.support.services import POSTGRES_HOST, POSTGRES_PORT, require_postgres
from tests.support.usecases import usecase_with
from tests.tasks.test_model import SCHEMA, make_frame

PASSWORD = "s3cr3t-Pa55"


def a_decision(promote: bool) -> Decision:
    return Decision(
        promote=promote,
        reason="promoted: no champion; roc_auc 0.8000 vs floor 0.6500",
        metric="roc_auc",
        challenger_value=0.8,
        champion_value=None,
        delta_ci=None,
        challenger_ece=0.01,
        champion_ece=None,
        sanity={"signature_compatible": True},
        samples=0,
    )


@pytest.mark.parametrize("promote", [True, False])
def test_the_decision_event_masks_the_tracking_password(promote: bool) -> None:
    uri = f"postgresql+psycopg2://mlflow:{PASSWORD}@db.internal:5432/mlflow"
    event = training.decision_event("telco_churn", "3", a_decision(promote), "2", uri)
    assert PASSWORD not in json.dumps(event)
    assert (
        event["payload"]["tracking_uri"]
        == "postgresql+psycopg2://mlflow:***@db.internal:5432/mlflow"
    )
    assert event["event"] == (training.PROMOTED_EVENT if promote else training.REJECTED_EVENT)


def test_a_decision_round_trips_through_its_tags() -> None:
    decision = a_decision(True)
    tags = registry.decision_tags(decision, "2026-02-01T00:00:00+00:00")
    assert registry.decision_from_tags(tags) == decision
    # a version decided before the full record was kept: read back from the single tags
    legacy = {k: v for k, v in tags.items() if k != registry.DECISION_JSON_TAG}
    back = registry.decision_from_tags(legacy)
    assert back is not None
    assert (back.promote, back.reason, back.challenger_value, back.compared_with) == (
        True,
        decision.reason,
        0.8,
        None,
    )
    blank = registry.decision_from_tags({**legacy, "driftloop.challenger_value": ""})
    assert blank is not None
    assert math.isnan(blank.challenger_value)
    assert registry.decision_from_tags({"driftloop.feature_service": "churn_v1"}) is None


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database (trust auth: any password is accepted), dropped after."""
    require_postgres()
    import psycopg2

    name = f"driftloop_redact_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(host=POSTGRES_HOST, port=POSTGRES_PORT, user="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.mark.services
def test_a_completed_promotion_on_a_password_store_shows_no_password(
    pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"postgresql+psycopg2://postgres:{PASSWORD}@{POSTGRES_HOST}:{POSTGRES_PORT}/{pg_database}"
    name = f"churn_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("DRIFTLOOP_MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv(
        "DRIFTLOOP_USECASE", str(usecase_with(tmp_path, model={"registered_name": name}))
    )
    settings = load_settings()
    usecase = load_usecase(settings.usecase)
    assert usecase.model is not None
    lake = Lake.from_settings(settings)
    train, validation, holdout = make_frame(3000, 31), make_frame(1000, 32), make_frame(1500, 33)
    model = fit(train, validation, SCHEMA, seed=0)
    version = registry.log_challenger(
        model,
        tracking_uri=settings.tracking_uri,
        artifact_root=settings.artifact_root,
        experiment=name,
        registered_name=name,
        metrics=flat_metrics({"train": evaluate(model, train, SCHEMA)}),
        params={"seed": 0, "as_of": "2026-01-29"},
        tags={"driftloop.usecase": usecase.name},
        reference=reference_profile(train, SCHEMA, predict_scores(model, train, SCHEMA)),
        report_html="<!doctype html><p>training</p>",
        input_example=model_input(train.head(5), SCHEMA),
        feature_service="churn_v1",
        data_window=("2026-01-01", "2026-01-28"),
        row_counts={"train": 3000, "validation": 1000, "holdout": 1500},
        data_hash=data_fingerprint(train),
        git_sha="0123abc",
    )
    gated = registry.gate(
        settings.tracking_uri,
        name,
        version,
        holdout,
        SCHEMA,
        usecase.model,
        lock_path=registry.promotion_lock_path(settings.state_path, name),
        expected_feature_service="churn_v1",
    )
    assert gated.decision.promote and gated.previous is None
    # stopped here: champion switched, no report, no event

    out = recovery.recover_interrupted(settings, usecase, lake)

    assert out.completed == [version]
    [(_, event)] = out.announcements
    assert event["event"] == training.PROMOTED_EVENT
    assert event["payload"]["tracking_uri"] == uri.replace(PASSWORD, "***")
    assert PASSWORD not in json.dumps(event)
    page = lake.reports.read_bytes(out.reports[version]).decode()
    assert f"Promotion decision — {name} v{version}" in page
    assert PASSWORD not in page
    client = registry.client_for(settings.tracking_uri)
    mv = client.get_model_version(name, version)
    assert mv.run_id is not None
    run = client.get_run(mv.run_id)
    shown = json.dumps([mv.tags, run.data.tags, run.data.params, mv.source, run.info.artifact_uri])
    assert mv.tags[registry.DECISION_TAG] == "promoted"
    assert PASSWORD not in shown
