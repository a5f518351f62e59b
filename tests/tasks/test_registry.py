from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline

from driftloop_config.settings import PROJECT_ROOT, export_artifact_endpoint, load_settings
from driftloop_config.usecase import load_usecase
from tasks.gate import decide
from tasks.model import evaluate, fit, flat_metrics, model_input, predict_scores
from tasks.reference import data_fingerprint, reference_profile
from tasks.registry import (
    CHALLENGER,
    CHAMPION,
    SKOPS_TRUSTED_TYPES,
    STALE,
    RegistryError,
    _download,
    champion_history,
    champion_version,
    client_for,
    gate,
    load_reference,
    load_version,
    log_challenger,
    promote,
    registered_scores,
    rollback,
    trusted_types,
    version_for_alias,
    version_inputs,
)
from tests.support.estimators import telco_usecase_file
from tests.tasks.test_gate import ALL_OK, gate_kwargs, scored
from tests.tasks.test_model import SCHEMA, make_frame

TELCO = load_usecase(PROJECT_ROOT / "usecases" / "telco_churn.yaml")
assert TELCO.model is not None
POLICY = TELCO.model


# ---- fixtures -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Store:
    uri: str
    artifact_root: str
    lock_path: Path

    def name(self) -> str:
        """A registered-model name of its own for each test."""
        return f"churn_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("mlflow")
    return Store(f"sqlite:///{root / 'mlflow.db'}", str(root / "artifacts"), root / "promote.lock")


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {
        "old_train": make_frame(4000, 11),
        "old_validation": make_frame(1200, 12),
        "new_train": make_frame(4000, 21, changed=True, start="2026-03-01"),
        "new_validation": make_frame(1200, 22, changed=True, start="2026-03-29"),
        "new_holdout": make_frame(3000, 23, changed=True, start="2026-04-26"),
    }


@pytest.fixture(scope="module")
def models(frames: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """A model of the old reality and one retrained after reality changed."""
    return {
        "old": fit(frames["old_train"], frames["old_validation"], SCHEMA, seed=0),
        "new": fit(frames["new_train"], frames["new_validation"], SCHEMA, seed=0),
    }


def register(store: Store, name: str, model: Any, train: pd.DataFrame, **overrides: Any) -> str:
    scores = predict_scores(model, train, SCHEMA)
    kwargs: dict[str, Any] = {
        "tracking_uri": store.uri,
        "artifact_root": store.artifact_root,
        "experiment": "churn-tests",
        "registered_name": name,
        "metrics": flat_metrics({"train": evaluate(model, train, SCHEMA)}),
        "params": {"seed": 0, "learning_rate": 0.1},
        "tags": {"driftloop.trigger": "test"},
        "reference": reference_profile(train, SCHEMA, scores),
        "report_html": "<!doctype html><p>report</p>",
        "input_example": model_input(train.head(5), SCHEMA),
        "feature_service": "churn_v1",
        "data_window": (train["event_timestamp"].min(), train["event_timestamp"].max()),
        "row_counts": {"train": len(train), "validation": 1200, "holdout": 3000},
        "data_hash": data_fingerprint(train),
        "git_sha": "0123abc",
    }
    kwargs.update(overrides)
    return log_challenger(model, **kwargs)


# ---- logging and loading ------------------------------------------------------------------------


def test_log_challenger_round_trips(
    store: Store, models: dict[str, Any], frames: dict[str, pd.DataFrame]
) -> None:
    name = store.name()
    train = frames["new_train"]
    version = register(store, name, models["new"], train)
    assert version == "1"
    assert version_for_alias(store.uri, name, CHALLENGER) == "1"
    assert champion_version(store.uri, name) is None

    loaded = load_version(store.uri, name, "1")
    holdout = frames["new_holdout"]
    original = models["new"].predict_proba(model_input(holdout, SCHEMA))
    assert np.array_equal(loaded.predict_proba(model_input(holdout, SCHEMA)), original)

    # a category never seen in training still scores after the round trip
    odd = holdout.head(3).copy()
    odd["plan"] = "galaxy_5g"
    assert np.isfinite(predict_scores(loaded, odd, SCHEMA)).all()

    client = client_for(store.uri)
    mv = client.get_model_version(name, version)
    assert mv.tags["driftloop.feature_service"] == "churn_v1"
    assert mv.tags["driftloop.data_hash"] == data_fingerprint(train)
    assert mv.tags["driftloop.rows_train"] == "4000"
    assert mv.tags["driftloop.git_sha"] == "0123abc"
    assert mv.tags["driftloop.data_window_start"].startswith("2026-03-01")
    assert mv.run_id is not None
    run = client.get_run(mv.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["learning_rate"] == "0.1"
    assert run.data.metrics["train_roc_auc"] > 0.7
    assert run.data.tags["driftloop.trigger"] == "test"
    artifacts = {a.path for a in client.list_artifacts(mv.run_id)}
    assert {"reference.json", "training_report.html"} <= artifacts

    reference = load_reference(store.uri, name, version)
    assert reference["numeric"]["tenure_months"]["edges"][0] == float("-inf")
    assert reference["prediction"]["count"] == len(train)

    inputs = version_inputs(store.uri, name, version)
    assert inputs["plan"] == "string" and inputs["tenure_months"] == "double"
    assert list(inputs) == list(SCHEMA.features)


@pytest.mark.parametrize(
    ("function", "classifier", "extra_trusted"),
    [
        ("logistic", LogisticRegression, {"numpy.dtype"}),  # SimpleImputer's fitted dtypes
        ("forest", RandomForestClassifier, {"sklearn.tree._tree.Tree"}),
    ],
)
def test_a_use_cases_own_estimator_is_logged_loaded_and_scores_the_same(
    tmp_path: Path,
    store: Store,
    frames: dict[str, pd.DataFrame],
    function: str,
    classifier: type,
    extra_trusted: set[str],
) -> None:
    named = f"tests.support.estimators:{function}"
    usecase = load_usecase(telco_usecase_file(tmp_path, named), project_root=PROJECT_ROOT)
    assert usecase.model is not None and usecase.model.estimator == named
    train, holdout = frames["new_train"], frames["new_holdout"]
    model = fit(train, frames["new_validation"], SCHEMA, seed=0, estimator=usecase.model.estimator)
    assert type(model) is Pipeline and type(model[-1]) is classifier  # as built: no calibration

    name = store.name()
    version = register(store, name, model, train)
    loaded = load_version(store.uri, name, version)
    assert type(loaded) is Pipeline and type(loaded[-1]) is classifier
    rows = model_input(holdout, SCHEMA)
    assert np.array_equal(loaded.predict_proba(rows), model.predict_proba(rows))
    assert roc_auc_score(holdout["churned"], predict_scores(loaded, holdout, SCHEMA)) > 0.7

    # the logged model trusts the built-in list plus its own types, and only those
    mlmodel = yaml.safe_load(
        (_download(client_for(store.uri), name, version, str(tmp_path)) / "MLmodel").read_text()
    )
    trusted = set(mlmodel["flavors"]["sklearn"]["skops_trusted_types"])
    assert trusted == set(SKOPS_TRUSTED_TYPES) | extra_trusted


def test_types_from_outside_the_estimators_packages_are_not_trusted(
    store: Store, frames: dict[str, pd.DataFrame]
) -> None:
    import operator

    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    train = frames["new_train"]
    negate = make_pipeline(SimpleImputer(), FunctionTransformer(operator.neg), StandardScaler())
    prep = ColumnTransformer([("num", negate, list(SCHEMA.numeric))])
    model = Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=500))])
    model.fit(model_input(train, SCHEMA), train["churned"])
    trusted = trusted_types(model)
    assert "numpy.dtype" in trusted and "_operator.neg" not in trusted  # not sklearn's
    with pytest.raises(RegistryError, match="_operator.neg"):
        register(store, store.name(), model, train)


def test_s3_artifact_root_on_an_s3_compatible_endpoint(
    s3_endpoint: str,
    s3_bucket: str,
    tmp_path: Path,
    models: dict[str, Any],
    frames: dict[str, pd.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With DRIFTLOOP_MLFLOW_ARTIFACT_ROOT=s3://..., the endpoint of the settings reaches MLflow's
    own boto3 client (MLFLOW_S3_ENDPOINT_URL): models are logged into the bucket and load back."""
    import boto3

    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("DRIFTLOOP_AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("DRIFTLOOP_MLFLOW_ARTIFACT_ROOT", f"s3://{s3_bucket}/mlartifacts")
    settings = load_settings()
    assert export_artifact_endpoint(settings) is True
    assert os.environ["MLFLOW_S3_ENDPOINT_URL"] == s3_endpoint

    s3_store = Store(settings.tracking_uri, settings.artifact_root, tmp_path / "promote.lock")
    name = s3_store.name()
    version = register(s3_store, name, models["new"], frames["new_train"])
    keys = [
        o["Key"]
        for page in boto3.client("s3", endpoint_url=s3_endpoint)
        .get_paginator("list_objects_v2")
        .paginate(Bucket=s3_bucket)
        for o in page.get("Contents", [])
    ]
    assert any(k.endswith("/MLmodel") for k in keys) and any(k.endswith(".skops") for k in keys)
    assert any(k.endswith("/reference.json") for k in keys)
    assert all(k.startswith("mlartifacts/churn-tests/") for k in keys)
    assert not (tmp_path / "lake" / "_state" / "mlartifacts").exists()  # nothing went local

    holdout = model_input(frames["new_holdout"], SCHEMA)
    loaded = load_version(settings.tracking_uri, name, version)
    assert np.array_equal(loaded.predict_proba(holdout), models["new"].predict_proba(holdout))
    assert load_reference(settings.tracking_uri, name, version)["prediction"]["count"] > 0
    assert list(version_inputs(settings.tracking_uri, name, version)) == list(SCHEMA.features)


def test_artifact_endpoint_is_exported_only_for_s3_and_never_overrides() -> None:
    s3 = load_settings(mlflow_artifact_root="s3://b/m", aws_endpoint_url="http://127.0.0.1:9")
    env: dict[str, str] = {}
    assert export_artifact_endpoint(s3, env) and env == {
        "MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:9"
    }
    env = {"MLFLOW_S3_ENDPOINT_URL": "http://elsewhere:1"}
    assert not export_artifact_endpoint(s3, env) and env["MLFLOW_S3_ENDPOINT_URL"].endswith(":1")
    for other in (
        load_settings(mlflow_artifact_root="/srv/m", aws_endpoint_url="http://127.0.0.1:9"),
        load_settings(mlflow_artifact_root="s3://b/m"),  # AWS itself: boto3's defaults
    ):
        env = {}
        assert not export_artifact_endpoint(other, env) and env == {}


def test_unknown_model_has_no_champion(store: Store) -> None:
    assert champion_version(store.uri, "never_registered") is None
    assert champion_history(store.uri, "never_registered") == []
    assert version_for_alias(store.uri, "never_registered", CHAMPION) is None


# ---- promotion against the registry -------------------------------------------------------------


def test_gate_promotes_on_the_floor_then_a_retrained_model_then_rolls_back(
    store: Store, models: dict[str, Any], frames: dict[str, pd.DataFrame]
) -> None:
    name = store.name()
    client = client_for(store.uri)
    holdout = frames["new_holdout"]

    v1 = register(store, name, models["old"], frames["old_train"])
    gated = gate(
        client, name, v1, frames["old_validation"], SCHEMA, POLICY, lock_path=store.lock_path
    )
    first, before = gated.decision, gated.previous
    assert first.promote and before is None and "no champion" in first.reason
    # the scores the decision compared come back for the report: no champion's, the challenger's
    assert gated.champion_scores is None
    assert np.array_equal(
        gated.challenger_scores, predict_scores(models["old"], frames["old_validation"], SCHEMA)
    )
    assert champion_version(client, name) == v1
    assert version_for_alias(client, name, CHALLENGER) is None  # promoted: no longer challenger

    # reality changed: the retrained model beats the old one on a recent holdout
    v2 = register(store, name, models["new"], frames["new_train"])
    gated = gate(client, name, v2, holdout, SCHEMA, POLICY, lock_path=store.lock_path, seed=1)
    decision, before = gated.decision, gated.previous
    assert decision.promote, decision.reason
    assert gated.champion_scores is not None
    assert np.array_equal(gated.champion_scores, predict_scores(models["old"], holdout, SCHEMA))
    assert np.array_equal(gated.challenger_scores, predict_scores(models["new"], holdout, SCHEMA))
    assert before == v1 and champion_version(client, name) == v2
    tags = client.get_model_version(name, v2).tags
    assert tags["driftloop.decision"] == "promoted"
    assert tags["driftloop.compared_with"] == v1
    assert json.loads(tags["driftloop.auc_delta_ci"])[0] > 0
    assert json.loads(tags["driftloop.sanity"]) == {
        **ALL_OK,
        "challenger_scores_valid": True,
        "champion_scores_valid": True,
    }
    assert tags["driftloop.decided_at"].startswith("20")
    assert champion_history(client, name) == [v1, v2]

    # the old model comes back as a challenger: worse on the same holdout, rejected
    v3 = register(store, name, models["old"], frames["old_train"])
    gated = gate(client, name, v3, holdout, SCHEMA, POLICY, lock_path=store.lock_path)
    rejected, before = gated.decision, gated.previous
    assert not rejected.promote and before == v2
    assert champion_version(client, name) == v2
    assert version_for_alias(client, name, CHALLENGER) == v3
    assert client.get_model_version(name, v3).tags["driftloop.decision"] == "rejected"

    # rollback restores the previous champion, and then there is nothing older
    assert rollback(client, name, lock_path=store.lock_path) == v1
    assert champion_version(client, name) == v1
    assert champion_history(client, name) == [v1]
    assert client.get_model_version(name, v2).tags["driftloop.rolled_back_to"] == v1
    assert client.get_model_version(name, v1).tags["driftloop.restored_from"] == v2
    restored = version_for_alias(client, name, CHAMPION)
    assert restored == v1
    model = load_version(client, name, restored)
    assert np.array_equal(
        predict_scores(model, holdout, SCHEMA), predict_scores(models["old"], holdout, SCHEMA)
    )
    with pytest.raises(RegistryError, match="no previous champion"):
        rollback(client, name, lock_path=store.lock_path)


class Counting:
    """A loaded model that counts the rows it scores."""

    def __init__(self, model: Any) -> None:
        self.model, self.rows = model, 0

    def predict_proba(self, x: pd.DataFrame) -> Any:
        self.rows += len(x)
        return self.model.predict_proba(x)


def test_the_gate_takes_the_trained_scores_once_the_registered_model_gives_them_too(
    store: Store,
    models: dict[str, Any],
    frames: dict[str, pd.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import tasks.registry

    monkeypatch.setattr(tasks.registry, "SCORE_BLOCK_ROWS", 500)
    name = store.name()
    holdout = frames["new_holdout"]  # 3,000 rows: six blocks
    version = register(store, name, models["new"], frames["new_train"])
    trained = predict_scores(models["new"], holdout, SCHEMA)

    # the same model: one block scored to check, the trained scores taken
    loaded = Counting(load_version(store.uri, name, version))
    got = registered_scores(loaded, holdout, SCHEMA, trained)
    assert loaded.rows == 500 and np.array_equal(got, trained)
    # no trained scores: every row scored
    loaded = Counting(loaded.model)
    assert np.array_equal(registered_scores(loaded, holdout, SCHEMA, None), trained)
    assert loaded.rows == 3000
    # scores of another model: the registered model's own, every row scored, and said so
    other = predict_scores(models["old"], holdout, SCHEMA)
    loaded = Counting(loaded.model)
    with caplog.at_level("WARNING", logger="driftloop.registry"):
        got = registered_scores(loaded, holdout, SCHEMA, other)
    assert np.array_equal(got, trained) and loaded.rows == 500 + 3000
    assert "scores differently" in caplog.text
    # a holdout of one block: its check is its scoring
    small = holdout.iloc[:400]
    loaded = Counting(loaded.model)
    got = registered_scores(loaded, small, SCHEMA, other[:400])
    assert np.array_equal(got, trained[:400]) and loaded.rows == 400

    # through the gate: the decision compares the trained scores, checked on one block
    client = client_for(store.uri)
    gated = gate(
        client,
        name,
        version,
        holdout,
        SCHEMA,
        POLICY,
        lock_path=store.lock_path,
        trained_scores=trained,
    )
    assert gated.decision.promote and np.array_equal(gated.challenger_scores, trained)


def test_gate_rejects_a_model_on_another_feature_service(
    store: Store, models: dict[str, Any], frames: dict[str, pd.DataFrame]
) -> None:
    name = store.name()
    client = client_for(store.uri)
    v1 = register(store, name, models["old"], frames["old_train"])
    gate(client, name, v1, frames["old_validation"], SCHEMA, POLICY, lock_path=store.lock_path)
    assert champion_version(client, name) == v1
    v2 = register(store, name, models["new"], frames["new_train"], feature_service="churn_v2")
    decision = gate(
        client, name, v2, frames["new_holdout"], SCHEMA, POLICY, lock_path=store.lock_path
    ).decision
    assert decision.delta_ci is not None and decision.delta_ci[0] > 0  # better, but...
    assert not decision.promote and "same_feature_service" in decision.reason
    assert champion_version(client, name) == v1


def test_rollback_without_champion_is_an_error(store: Store) -> None:
    with pytest.raises(RegistryError, match="no champion"):
        rollback(client_for(store.uri), store.name(), lock_path=store.lock_path)


def test_a_stale_decision_is_refused(
    store: Store, models: dict[str, Any], frames: dict[str, pd.DataFrame]
) -> None:
    name = store.name()
    client = client_for(store.uri)
    versions = [register(store, name, models["new"], frames["new_train"]) for _ in range(3)]
    y, champion, better = scored(500, 7, 1.0)
    floor = decide(None, better, y, **gate_kwargs(champion_version=None, floor=0.5))
    assert promote(client, name, versions[0], floor, lock_path=store.lock_path) is None
    won = decide(champion, better, y, **gate_kwargs(champion_version=versions[0]))
    assert promote(client, name, versions[1], won, lock_path=store.lock_path) == versions[0]
    # decided against versions[0], but versions[1] is champion by now
    late = replace(won, compared_with=versions[0])
    assert promote(client, name, versions[2], late, lock_path=store.lock_path) == STALE
    assert "driftloop.decision" not in client.get_model_version(name, versions[2]).tags
    assert champion_version(client, name) == versions[1]


# ---- two promotions racing ----------------------------------------------------------------------


def _race_scores() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    y, v1, v2 = scored(3000, 8, 0.6)
    _, _, v3 = scored(3000, 8, 1.2)  # same rows, an even better model
    return y, {"1": v1, "2": v2, "3": v3}


def _race_worker(
    uri: str, name: str, version: str, lock_path: str, barrier: Any, results: Any
) -> None:
    y, scores = _race_scores()
    client = client_for(uri)
    log: list[dict[str, Any]] = []
    for attempt in range(5):
        current = champion_version(client, name)
        decision = decide(
            scores[current] if current else None,
            scores[version],
            y,
            **gate_kwargs(champion_version=current, samples=200),
        )
        if attempt == 0:
            barrier.wait(timeout=60)  # both have decided against the same champion
        result = promote(client, name, version, decision, lock_path=lock_path)
        log.append({"compared_with": current, "promote": decision.promote, "result": result})
        if result != STALE:
            break
    results.put((version, log))


def test_racing_promotions_leave_one_consistent_champion(
    store: Store, models: dict[str, Any], frames: dict[str, pd.DataFrame]
) -> None:
    name = store.name()
    client = client_for(store.uri)
    for _ in range(3):
        register(store, name, models["new"], frames["new_train"])
    y, scores = _race_scores()
    seed_decision = decide(None, scores["1"], y, **gate_kwargs(champion_version=None, floor=0.5))
    assert promote(client, name, "1", seed_decision, lock_path=store.lock_path) is None

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    workers = [
        ctx.Process(
            target=_race_worker,
            args=(store.uri, name, version, str(store.lock_path), barrier, results),
        )
        for version in ("2", "3")
    ]
    for w in workers:
        w.start()
    logs = dict(results.get(timeout=120) for _ in workers)
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0

    # both decided against v1; exactly one of them won that comparison
    assert [logs[v][0]["compared_with"] for v in ("2", "3")] == ["1", "1"]
    first_try = [logs[v][0]["result"] for v in ("2", "3")]
    assert sorted(first_try, key=str) == ["1", STALE]
    loser = "2" if first_try[0] == STALE else "3"
    assert len(logs[loser]) == 2 and logs[loser][1]["compared_with"] != "1"

    champion = champion_version(client, name)
    history = champion_history(client, name)
    assert champion == "3"  # v3 wins either way: first, or by beating v2 afterwards
    assert history[0] == "1" and history[-1] == champion and len(set(history)) == len(history)
    for previous, current in itertools.pairwise(history):
        tags = client.get_model_version(name, current).tags
        assert tags["driftloop.decision"] == "promoted"
        assert tags["driftloop.compared_with"] == previous
    assert client.get_model_version(name, champion).tags["driftloop.compared_with"] == history[-2]
    if loser == "2":  # v3 got in first; v2 was then measured against v3 and rejected
        tags = client.get_model_version(name, "2").tags
        assert tags["driftloop.decision"] == "rejected" and tags["driftloop.compared_with"] == "3"


def test_load_version_of_an_old_version(
    store: Store, models: dict[str, Any], frames: dict[str, pd.DataFrame]
) -> None:
    name = store.name()
    v1 = register(store, name, models["old"], frames["old_train"])
    register(store, name, models["new"], frames["new_train"])
    loaded = load_version(store.uri, name, v1)
    holdout = frames["new_holdout"]
    assert np.array_equal(
        predict_scores(loaded, holdout, SCHEMA), predict_scores(models["old"], holdout, SCHEMA)
    )
