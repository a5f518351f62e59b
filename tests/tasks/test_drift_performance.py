"""The drift check's performance signals: the CBPE-estimated AUC against the training period's,
labelled days pooled into realised-performance windows per model version (AUC or, for a
regression, its error), and the realised drop that needs the whole interval past the bar."""

from __future__ import annotations

from typing import TypedDict

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from driftloop_config.usecase import DriftSpec
from tasks.drift_performance import estimated_performance, pooled_performance, realised_drop
from tasks.drift_stats import expected_auc

START = pd.Timestamp("2026-01-02", tz="UTC")


class EntityNames(TypedDict):
    """The ``entity`` and ``prediction`` keyword arguments of a use case's columns."""

    entity: str
    prediction: str


#: the telco use case's id and prediction columns
TELCO_NAMES: EntityNames = {"entity": "customer_id", "prediction": "churn_probability"}


def test_the_estimated_auc_drops_when_the_model_is_less_sure() -> None:
    spec = DriftSpec(min_performance_drop=0.03, null_quantile=0.99)
    rng = np.random.default_rng(8)
    sure = rng.beta(0.5, 3.0, 2000)
    reference = {"estimated": {"auc": expected_auc(sure), "windows": [0.80, 0.86, 0.84]}}
    steady = estimated_performance(reference, rng.beta(0.5, 3.0, 2000), spec)
    assert steady is not None and not steady["signal"]
    assert steady["allowed_drop"] == pytest.approx(max(0.03, expected_auc(sure) - 0.80))
    unsure = estimated_performance(reference, rng.uniform(0.1, 0.2, 2000), spec)
    assert unsure is not None and unsure["signal"] and unsure["auc"] < 0.6
    assert estimated_performance({}, sure, spec) is None
    assert estimated_performance(reference, None, spec) is None


def labelled_days(positives: list[int], rows: int = 50) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    preds, labels = [], []
    for d, pos in enumerate(positives):
        ts = START + pd.Timedelta(days=d)
        ids = [f"C{d:02d}{i:03d}" for i in range(rows)]
        y = np.r_[np.ones(pos, dtype=int), np.zeros(rows - pos, dtype=int)]
        preds.append(
            pd.DataFrame(
                {
                    "customer_id": ids,
                    "event_timestamp": ts,
                    "churn_probability": np.clip(0.3 * y + rng.random(rows) * 0.7, 0, 1),
                }
            )
        )
        labels.append(pd.DataFrame({"customer_id": ids, "event_timestamp": ts, "churned": y}))
    return pd.concat(preds, ignore_index=True), pd.concat(labels, ignore_index=True)


def test_labelled_days_are_pooled_until_each_window_holds_enough_positives() -> None:
    per_day = [3, 0, 4, 6, 2, 1, 9, 0, 5, 5]
    preds, labels = labelled_days(per_day)
    windows = pooled_performance(preds, labels, "churned", min_positives=10, **TELCO_NAMES)
    # newest first: [5, 5] -> 10; [9, 0, ... ] 9 + 1 = 10 (days 5..7); [6, 2] = 8 + 4 (days 2..4)
    assert [(w["first"], w["last"], w["days"]) for w in windows] == [
        ("2026-01-02", "2026-01-03", 2),
        ("2026-01-04", "2026-01-06", 3),
        ("2026-01-07", "2026-01-09", 3),
        ("2026-01-10", "2026-01-11", 2),
    ]
    assert [w["positives"] for w in windows] == [3, 12, 10, 10]
    assert [w["n"] for w in windows] == [100, 150, 150, 100]
    assert [w["complete"] for w in windows] == [False, True, True, True]
    assert all(w["positives"] >= 10 for w in windows if w["complete"])
    assert {w["version"] for w in windows} == {None}
    newest = windows[-1]
    rows = labels["event_timestamp"] >= START + pd.Timedelta(days=8)
    expected = roc_auc_score(labels.loc[rows, "churned"], preds.loc[rows, "churn_probability"])
    assert newest["auc"] == pytest.approx(expected)
    assert newest["low"] < newest["auc"] < newest["high"]


def test_each_version_is_pooled_apart() -> None:
    preds, labels = labelled_days([5, 5, 5, 5, 5, 5])
    day = pd.to_datetime(preds["event_timestamp"]).dt.day
    preds["model_version"] = np.where(day <= 4, "1", "2")  # days 2..4 by v1, 5..7 by v2
    windows = pooled_performance(preds, labels, "churned", min_positives=10, **TELCO_NAMES)
    assert [(w["version"], w["first"], w["last"], w["complete"]) for w in windows] == [
        ("1", "2026-01-02", "2026-01-02", False),
        ("1", "2026-01-03", "2026-01-04", True),
        ("2", "2026-01-05", "2026-01-05", False),
        ("2", "2026-01-06", "2026-01-07", True),
    ]
    spec = DriftSpec(min_performance_drop=0.0)
    assert realised_drop(windows, expected=0.999, spec=spec, version="2")
    assert not realised_drop(windows, expected=0.999, spec=spec, version="3")


def test_no_auc_without_both_classes() -> None:
    preds, labels = labelled_days([0, 0, 0])
    [window] = pooled_performance(preds, labels, "churned", min_positives=5, **TELCO_NAMES)
    assert (window["auc"], window["low"], window["high"], window["complete"]) == (
        None,
        None,
        None,
        False,
    )
    assert window["n"] == 150
    assert (
        pooled_performance(preds.iloc[0:0], labels, "churned", min_positives=5, **TELCO_NAMES) == []
    )


def test_a_regression_is_pooled_by_rows_with_an_outcome_and_judged_by_its_error() -> None:
    """Three days of 4 entities' spend: day 1 has one zero outcome; windows close at 6 rows with
    an outcome above 0 (zeros count as rows, not as positives); the window holds the RMSE of
    its rows with a normal interval of the mean squared error."""
    days = [
        ("2026-01-02", [10.0, 0.0, 30.0, 40.0], [12.0, 1.0, 27.0, 44.0]),
        ("2026-01-03", [20.0, 20.0, 10.0, 50.0], [18.0, 25.0, 10.0, 47.0]),
        ("2026-01-04", [5.0, 15.0, 25.0, 35.0], [6.0, 13.0, 29.0, 30.0]),
    ]
    preds, labels = [], []
    for day, y, p in days:
        ts = pd.Timestamp(day, tz="UTC")
        ids = ["a", "b", "c", "d"]
        preds.append(pd.DataFrame({"id": ids, "event_timestamp": ts, "spend_predicted": p}))
        labels.append(pd.DataFrame({"id": ids, "event_timestamp": ts, "spend": y}))
    windows = pooled_performance(
        pd.concat(preds),
        pd.concat(labels),
        "spend",
        min_positives=6,
        entity="id",
        prediction="spend_predicted",
        metric="rmse",
    )
    # newest first: Jan 4 + Jan 3 = 8 positives → complete; Jan 2 alone (3 positives) is not
    assert [(w["first"], w["last"], w["complete"]) for w in windows] == [
        ("2026-01-02", "2026-01-02", False),
        ("2026-01-03", "2026-01-04", True),
    ]
    assert [(w["n"], w["positives"]) for w in windows] == [(4, 3), (8, 8)]
    err = np.array([-2, 5, 0, -3, 1, -2, 4, -5], dtype=float)
    assert windows[1]["metric"] == "rmse" and windows[1]["auc"] is None
    assert windows[1]["value"] == pytest.approx(np.sqrt(np.mean(err**2)))
    half = 1.959964 * np.std(err**2, ddof=1) / np.sqrt(8)
    assert windows[1]["high"] == pytest.approx(np.sqrt(np.mean(err**2) + half), rel=1e-5)
    assert windows[1]["low"] == pytest.approx(np.sqrt(max(0.0, np.mean(err**2) - half)), rel=1e-5)
    spec = DriftSpec(min_performance_drop=0.1)
    # an error metric drops when its whole interval lies *above* the holdout error x 1.1
    bad = {"complete": True, "metric": "rmse", "value": 30.0, "low": 25.0, "high": 35.0}
    assert realised_drop([bad], expected=20.0, spec=spec)
    assert not realised_drop([bad], expected=23.0, spec=spec)  # 25 < 23 x 1.1
    assert not realised_drop([{**bad, "low": 10.0, "value": 12.0}], expected=20.0, spec=spec)


def test_realised_drop_needs_the_whole_interval_below_the_bar() -> None:
    spec = DriftSpec(min_performance_drop=0.03)
    low = {"complete": True, "auc": 0.60, "low": 0.55, "high": 0.70}
    wide = {"complete": True, "auc": 0.60, "low": 0.40, "high": 0.80}
    assert realised_drop([wide, low], expected=0.8, spec=spec)
    assert not realised_drop([low, wide], expected=0.8, spec=spec)  # the newest decides
    assert not realised_drop([low, {**wide, "complete": False}], expected=0.72, spec=spec)
    assert realised_drop([low, {**wide, "complete": False}], expected=0.8, spec=spec)
    assert not realised_drop([low], expected=None, spec=spec)
    # only the current version's windows signal
    assert not realised_drop([{**low, "version": "1"}], expected=0.8, spec=spec, version="2")
    assert realised_drop([{**low, "version": "2"}], expected=0.8, spec=spec, version="2")
