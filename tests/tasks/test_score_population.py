"""Scoring applies the training snapshots' membership rule: with a terminal target nobody whose
known event precedes the scoring instant is scored; the result counts who was left out and flags
a model trained under the other rule."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd

from driftloop_config.settings import Settings
from driftloop_config.usecase import UseCase, load_usecase
from tasks.score import Scored, population_mismatch, scoring_population
from tasks.storage import Lake, write_parquet
from tasks.training_set import EVENT_BEFORE
from tests.support.usecases import usecase_with
from tests.tasks.test_features import usage

DAY = date(2026, 1, 10)


def _lake(settings: Settings) -> Lake:
    lake = Lake.from_settings(settings)
    rows = [{"customer_id": c, "date": DAY} for c in ("A", "B", "C", "D")]
    write_parquet(lake.validated, f"usage/date={DAY}/usage__{DAY}.csv.parquet", usage(rows))
    # B churned Jan 8 (known Jan 9), D churned on the day (known the same day), C churned on
    # the day but it is reported only on Jan 12: unknown when the day is scored
    for cid, churned, reported in (
        ("B", date(2026, 1, 8), date(2026, 1, 9)),
        ("D", DAY, DAY),
        ("C", DAY, date(2026, 1, 12)),
    ):
        labels = pd.DataFrame(
            {
                "customer_id": pd.Series([cid], dtype="string"),
                "churn_date": pd.to_datetime([churned]),
                "reported_date": pd.to_datetime([reported]),
            }
        )
        key = f"labels/reported_date={reported}/labels__{cid}.csv.parquet"
        write_parquet(lake.validated, key, labels)
    return lake


def _usecase(tmp: Path, recurring: bool) -> UseCase:
    return load_usecase(usecase_with(tmp, target={"recurring": recurring}))


def test_a_terminal_target_scores_no_one_whose_event_is_known(
    local_settings: Settings, tmp_path: Path
) -> None:
    from tasks.score import active_entities

    lake = _lake(local_settings)
    usecase = _usecase(tmp_path, recurring=False)
    active = active_entities(lake, usecase, DAY)
    assert active["customer_id"].tolist() == ["A", "B", "C", "D"]
    kept, counts = scoring_population(lake, usecase, DAY, active)
    assert kept["customer_id"].tolist() == ["A", "C"]
    assert counts == {
        "rule": "terminal",
        "active": 4,
        "scored": 2,
        "excluded": {EVENT_BEFORE: 2},
    }


def test_a_recurring_target_scores_every_active_entity(
    local_settings: Settings, tmp_path: Path
) -> None:
    from tasks.score import active_entities

    lake = _lake(local_settings)
    usecase = _usecase(tmp_path, recurring=True)
    active = active_entities(lake, usecase, DAY)
    kept, counts = scoring_population(lake, usecase, DAY, active)
    assert kept["customer_id"].tolist() == ["A", "B", "C", "D"]
    assert counts == {"rule": "recurring", "active": 4, "scored": 4, "excluded": {}}


def test_a_model_trained_under_the_other_rule_is_flagged() -> None:
    assert population_mismatch("terminal", "terminal", "3") is None
    assert population_mismatch("recurring", "recurring", "3") is None
    # a model recorded before the rule was: trained on terminal snapshots
    assert population_mismatch(None, "terminal", "3") is None
    assert population_mismatch(None, "recurring", "3") == (
        "v3 was trained on the terminal population rule, scoring applies the recurring rule: "
        "the scored population is not the trained one (retrain the model)"
    )
    assert population_mismatch("recurring", "terminal", "4") is not None


def test_what_was_scored_unpacks_as_scores_and_key() -> None:
    frame = pd.DataFrame({"customer_id": ["A"]})
    scores, key = Scored(frame, "predictions/x", {"rule": "terminal"})
    assert scores is frame and key == "predictions/x"
