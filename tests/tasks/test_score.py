"""What a score run shows in Prefect and returns, from what it scored."""

from __future__ import annotations

from datetime import date

import pandas as pd

from tasks.score import Scored

DAY = date(2026, 2, 3)
KEY = "telco_churn/date=2026-02-03/champion.parquet"
POPULATION = {"rule": "terminal", "active": 3, "scored": 2, "excluded": {"churned": 1}}


def _scored(versions: list[str], probabilities: list[float]) -> Scored:
    scores = pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(len(versions))],
            "churn_probability": probabilities,
            "model_version": versions,
        }
    )
    return Scored(scores, KEY, POPULATION)


def test_a_scored_day_is_summarised_with_its_version_and_mean_prediction() -> None:
    scored = _scored(["7", "7"], [0.25, 0.75])
    assert scored.summary_row(DAY, "churn_probability") == {
        "day": "2026-02-03",
        "rows": 2,
        "model_version": "7",
        "mean_probability": 0.5,
        "key": KEY,
    }
    assert scored.to_dict(DAY) == {
        "day": "2026-02-03",
        "scored": 2,
        "key": KEY,
        "model_version": "7",
        "population": POPULATION,
    }
    scores, key = scored  # still unpacks as before
    assert key == KEY and len(scores) == 2


def test_a_day_that_scored_no_one_has_no_version_or_mean() -> None:
    empty = _scored([], [])
    assert empty.summary_row(DAY, "churn_probability") == {
        "day": "2026-02-03",
        "rows": 0,
        "model_version": None,
        "mean_probability": None,
        "key": KEY,
    }
    assert empty.to_dict(DAY) == {
        "day": "2026-02-03",
        "scored": 0,
        "key": KEY,
        "model_version": None,
        "population": POPULATION,
    }
