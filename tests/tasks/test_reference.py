"""The training reference drift compares with (:mod:`tasks.reference`): profiles, fingerprint."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from tasks.drift_stats import bin_proportions
from tasks.model import predict_scores
from tasks.reference import data_fingerprint, numeric_profile, reference_profile
from tests.tasks.test_model import CATEGORIES, NUMERIC, SCHEMA


def test_reference_profile(model: object, splits: dict[str, pd.DataFrame]) -> None:
    train = splits["train"]
    scores = predict_scores(model, train, SCHEMA)
    profile = reference_profile(train, SCHEMA, scores)
    again = json.loads(json.dumps(profile))
    assert again == profile
    assert set(profile["numeric"]) == set(NUMERIC)
    assert set(profile["categorical"]) == set(CATEGORIES)
    tenure = profile["numeric"]["tenure_months"]
    assert tenure["edges"][0] == -math.inf and tenure["edges"][-1] == math.inf
    assert len(tenure["edges"]) == 11 and len(tenure["proportions"]) == 10
    assert sum(tenure["proportions"]) == pytest.approx(1.0)
    assert tenure["count"] == len(train) and tenure["null_share"] == 0.0
    assert tenure["mean"] == pytest.approx(train["tenure_months"].mean())
    assert tenure["std"] == pytest.approx(train["tenure_months"].std())
    # the profile's binning rule reproduces its own proportions
    assert (
        bin_proportions(train["tenure_months"].to_numpy(), tenure["edges"]) == tenure["proportions"]
    )
    trend = profile["numeric"]["minutes_trend"]
    assert trend["null_share"] == pytest.approx(train["minutes_trend"].isna().mean())
    plan = profile["categorical"]["plan"]
    assert set(plan["proportions"]) == set(CATEGORIES["plan"])
    assert sum(plan["proportions"].values()) == pytest.approx(1.0)
    pred = profile["prediction"]
    assert pred["mean"] == pytest.approx(scores.mean())
    assert bin_proportions(scores, pred["edges"]) == pred["proportions"]
    assert profile["label_rate"] == pytest.approx(train["churned"].mean())
    assert profile["window"]["start"].startswith("2026-01-01")


def test_numeric_profile_with_ties_and_no_values() -> None:
    values = np.r_[np.zeros(800), np.arange(1, 201)]
    prof = numeric_profile(values)
    assert prof["edges"][:2] == [-math.inf, 0.0]  # repeated quantiles merged
    assert prof["proportions"][0] == pytest.approx(0.8)  # bins are (lo, hi]: zeros in bin 0
    assert sum(prof["proportions"]) == pytest.approx(1.0)
    empty = numeric_profile(np.full(5, np.nan))
    assert empty == {
        "count": 5,
        "null_share": 1.0,
        "mean": None,
        "std": None,
        "edges": [-math.inf, math.inf],
        "proportions": [0.0],
    }


def test_data_fingerprint_is_order_independent_and_content_sensitive(
    splits: dict[str, pd.DataFrame],
) -> None:
    frame = splits["train"]
    digest = data_fingerprint(frame)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    shuffled = frame.sample(frac=1.0, random_state=7)[list(frame.columns)[::-1]]
    assert data_fingerprint(shuffled) == digest
    assert data_fingerprint(shuffled.reset_index(drop=True)) == digest
    changed = frame.copy()
    changed.loc[changed.index[10], "monthly_charge"] += 0.01
    assert data_fingerprint(changed) != digest
    assert data_fingerprint(frame.iloc[:-1]) != digest
    assert data_fingerprint(frame.rename(columns={"plan": "tariff"})) != digest
