"""The training report (:mod:`tasks.training_report`): offline HTML."""

from __future__ import annotations

import pandas as pd

from tasks.model import evaluate, predict_scores
from tasks.reference import feature_importance
from tasks.training_report import training_report
from tests.tasks.test_model import SCHEMA


def test_training_report_is_offline_html(model: object, splits: dict[str, pd.DataFrame]) -> None:
    metrics = {name: evaluate(model, frame, SCHEMA) for name, frame in splits.items()}
    page = training_report(
        metrics, model, splits["holdout"], SCHEMA, details={"data hash": "abc123"}
    )
    assert page.startswith("<!doctype html>")
    assert page.count('src="data:image/png;base64,') == 3  # ROC, calibration, importance
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "support_tickets_sum_30d" in page and "abc123" in page
    # an importance measured already is the one shown, not measured again
    measured = feature_importance(model, splits["holdout"], SCHEMA, max_rows=300, seed=4)
    shown = training_report(metrics, model, splits["holdout"], SCHEMA, importance=measured)
    top = measured.iloc[0]
    assert f'<td>{top.feature}</td><td class="num">{round(top.importance, 4)}</td>' in shown
    assert shown.count('src="data:image/png;base64,') == 3


def test_holdout_scores_given_are_used_instead_of_scoring_again(
    model: object, splits: dict[str, pd.DataFrame]
) -> None:
    holdout = splits["holdout"]
    metrics = {name: evaluate(model, frame, SCHEMA) for name, frame in splits.items()}
    measured = feature_importance(model, holdout, SCHEMA, max_rows=300, seed=4)
    scores = predict_scores(model, holdout, SCHEMA)
    scored = training_report(metrics, model, holdout, SCHEMA, importance=measured)
    given = training_report(
        metrics, model, holdout, SCHEMA, importance=measured, holdout_scores=scores
    )
    assert given == scored  # the same page, byte for byte
    # and they are what the page plots: other scores give other curves
    flipped = training_report(
        metrics, model, holdout, SCHEMA, importance=measured, holdout_scores=1.0 - scores
    )
    assert flipped != scored
    assert evaluate(model, holdout, SCHEMA, scores=scores) == evaluate(model, holdout, SCHEMA)
