"""Ingest → features → train → gate, through the real flows, Feast repo and MLflow store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from driftloop.simulate import simulate
from driftloop_config.settings import Settings, load_settings
from flows.features import features_flow
from flows.ingest import ingest_flow
from flows.train import TrainParams, train_flow
from tasks import registry
from tasks.storage import Lake
from tests.support.usecases import usecase_with

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    tmp = tmp_path_factory.mktemp("train-world")
    mp = pytest.MonkeyPatch()
    mp.setenv("DRIFTLOOP_DATA_ROOT", str(tmp / "lake"))
    mp.setenv(
        "DRIFTLOOP_USECASE",
        str(
            usecase_with(tmp, model={"floor": 0.5, "bootstrap_samples": 100, "min_history_days": 0})
        ),
    )
    settings = load_settings()
    simulate(
        Lake.from_settings(settings).landing,
        days=34,
        start=date(2026, 1, 1),
        customers=800,
        label_delay_days=7,
        seed=5,
    )
    ingest_flow()
    features_flow()
    yield settings
    mp.undo()


def test_first_model_is_judged_by_the_floor_and_becomes_champion(world: Settings) -> None:
    out = train_flow(TrainParams(seed=1))
    assert out["version"] == "1"
    assert out["decision"]["compared_with"] is None
    assert out["promoted"], out["decision"]["reason"]
    name = "telco_churn"
    assert registry.champion_version(world.tracking_uri, name) == "1"
    tags = registry.client_for(world.tracking_uri).get_model_version(name, "1").tags
    assert tags["driftloop.decision"] == "promoted"
    assert tags["driftloop.announced"] == "true"  # its event was emitted
    assert out["recovered"] == {
        "killed_runs": [],
        "judged": {},
        "completed": [],
        "removed": [],
        "reports": {},
        "announced": [],
    }
    assert tags["driftloop.feature_service"] == "churn_v1"
    assert int(tags["driftloop.rows_holdout"]) == out["rows"]["holdout"] > 0
    lake = Lake.from_settings(world)
    for key in out["reports"].values():
        page = lake.reports.read_bytes(key).decode()
        assert "<img" in page and "data:image/png;base64," in page
    # the reference distributions the drift checks need are stored with the model
    reference = registry.load_reference(world.tracking_uri, name, "1")
    assert {"numeric", "categorical", "prediction"} <= set(reference)
    assert "minutes_mean_7d" in reference["numeric"] and "plan" in reference["categorical"]
    # the report and the result say who the snapshots hold: churn is terminal, and churned
    # customers who are still delivered as active are left out, with the reason
    assert tags["driftloop.population_rule"] == "terminal"
    population = out["population"]
    assert population["population rule"].startswith("terminal")
    left_out = int(population["left out: event before the snapshot (terminal target)"])
    assert population["snapshot days"] == 20  # Jan 2 .. Jan 21 (labelled by Feb 3)
    members = int(population["in the population"].split(" ")[0].replace(",", ""))
    assert members == sum(out["rows"].values())
    training_page = lake.reports.read_bytes(out["reports"]["training"]).decode()
    assert "in the population" in training_page and "holdout evidence" in training_page
    assert f"{left_out:,}" in training_page


def test_second_model_is_compared_with_the_champion(world: Settings) -> None:
    out = train_flow(TrainParams(seed=2))
    assert out["version"] == "2"
    assert out["decision"]["compared_with"] == "1"
    assert out["decision"]["delta_ci"] is not None
    tags = registry.client_for(world.tracking_uri).get_model_version("telco_churn", "2").tags
    assert tags["driftloop.compared_with"] == "1"
    expected = "2" if out["promoted"] else "1"
    assert registry.champion_version(world.tracking_uri, "telco_churn") == expected


def test_a_rebased_reference_is_the_one_drift_checks_read(world: Settings) -> None:
    """The champion's drift reference re-based as of an earlier day: stored next to the
    training's one (which stays as it was), tagged as current, read by the drift check, and
    holding the same importance and expected metric but the windows up to that day."""
    from driftloop_config.usecase import load_usecase
    from tasks import rebaseline, training
    from tasks.drift import load_inputs
    from tasks.feature_store import feature_store

    usecase = load_usecase(world.usecase)
    lake = Lake.from_settings(world)
    name = "telco_churn"
    champion = registry.champion_version(world.tracking_uri, name)
    assert champion is not None
    before = registry.load_reference(world.tracking_uri, name, champion)
    assert "rebaselined" not in before
    as_of = date(2026, 1, 28)
    data = training.build_training_set(lake, usecase, feature_store(world), as_of=as_of)
    done = rebaseline.rebaseline(world, usecase, lake, data, champion, "the new normal")
    assert done["artifact"] == "references/reference-2026-01-28.json"
    after = registry.load_reference(world.tracking_uri, name, champion)
    assert after["rebaselined"] == {
        "as_of": "2026-01-28",
        "why": "the new normal",
        "previous_window": before["window"],
    }
    assert after["window"]["end"] < before["window"]["end"]
    # the features of a day are stamped with the next midnight: those of Jan 28 are the newest
    assert after["window"]["end"][:10] == "2026-01-29"
    assert after["importance"] == before["importance"]
    assert after["expected_metric"] == before["expected_metric"]
    assert after["numeric"]["tenure_months"] != before["numeric"]["tenure_months"]
    client = registry.client_for(world.tracking_uri)
    version = client.get_model_version(name, champion)
    assert version.tags[registry.REFERENCE_TAG] == done["artifact"]
    run = client.get_run(str(version.run_id))
    import json
    import tempfile

    from mlflow.artifacts import download_artifacts

    with tempfile.TemporaryDirectory() as tmp:
        original = download_artifacts(
            artifact_uri=f"{run.info.artifact_uri}/reference.json", dst_path=tmp
        )
        with open(original, encoding="utf-8") as fh:
            assert json.load(fh) == before  # the training's reference is kept as it was
    inputs = load_inputs(world, usecase, lake, date(2026, 2, 3))
    assert inputs is not None and inputs.reference["rebaselined"]["as_of"] == "2026-01-28"


def test_a_policy_run_for_a_day_already_trained_is_deferred_by_name(world: Settings) -> None:
    """A training as of this day exists already: the run ends "Deferred" and says which."""
    client = registry.client_for(world.tracking_uri)
    decision = client.get_model_version("telco_churn", "2").tags["driftloop.decision"]
    state = train_flow(TrainParams(reason="new-labels"), return_state=True)
    assert state.type.value == "COMPLETED" and state.name == "Deferred"
    out = state.result()
    assert out["trained"] is False
    assert state.message == out["reason"] == f"already trained as of 2026-02-03: v2 {decision}"
    assert registry.champion_version(world.tracking_uri, "telco_churn") in ("1", "2")
    assert len(registry.versions(world.tracking_uri, "telco_churn")) == 2


def test_rollback_from_the_command_line(world: Settings) -> None:
    from driftloop.cli import app

    history = registry.champion_history(world.tracking_uri, "telco_churn")
    result = CliRunner().invoke(app, ["promote", "--rollback"])
    if len(history) < 2:  # the second model was not promoted: nothing to go back to
        assert result.exit_code == 2
        assert "telco_churn" in result.output
    else:
        assert result.exit_code == 0, result.output
        assert registry.champion_version(world.tracking_uri, "telco_churn") == history[-2]


def test_training_without_enough_labels_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.training import NotEnoughData

    monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(tmp_path / "lake"))
    settings = load_settings()
    simulate(Lake.from_settings(settings).landing, days=5, customers=50, seed=1)
    ingest_flow()
    with pytest.raises(NotEnoughData):
        train_flow()
