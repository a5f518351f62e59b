"""What a train run shows in Prefect: its metrics per split and its promotion decision."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tasks.gate import Decision
from tasks.model import FeatureSchema
from tasks.training import TrainingResult, decision_markdown, metrics_rows

SCHEMA = FeatureSchema(categorical=("plan",), numeric=("minutes",), label="churned")


def _result(metrics: dict[str, dict[str, Any]]) -> TrainingResult:
    return TrainingResult(
        version="2",
        metrics=metrics,
        rows={"train": 900, "holdout": 300},
        window=("2026-01-01", "2026-01-20"),
        data_hash="abc",
    )


def test_the_metrics_artifact_has_one_row_per_split_with_its_scalar_metrics() -> None:
    result = _result(
        {
            "train": {"n": 900, "positives": 90, "roc_auc": 0.81, "curve": [[0, 0], [1, 1]]},
            "holdout": {"n": 300, "roc_auc": 0.78, "ece": 0.02, "rmse": 0.3},
        }
    )
    # in report order; what the schema's kind does not report (curves, rmse) is left out
    assert metrics_rows(result, SCHEMA) == [
        {"split": "train", "n": 900, "positives": 90, "roc_auc": 0.81},
        {"split": "holdout", "n": 300, "roc_auc": 0.78, "ece": 0.02},
    ]
    regression = replace(SCHEMA, label="minutes_next_week", regression=True)
    assert metrics_rows(result, regression) == [
        {"split": "train", "n": 900, "positives": 90},
        {"split": "holdout", "n": 300, "rmse": 0.3},
    ]
    assert metrics_rows(_result({}), SCHEMA) == []


DECISION = Decision(
    promote=True,
    reason="promoted: holdout roc_auc 0.7800 >= floor 0.65 (no champion)",
    metric="roc_auc",
    challenger_value=0.78,
    champion_value=None,
    delta_ci=None,
    challenger_ece=0.02,
    champion_ece=None,
    sanity={},
    samples=400,
    compared_with=None,
)


def test_the_promotion_artifact_says_the_verdict_why_and_where_the_report_is() -> None:
    text = decision_markdown(
        "telco_churn",
        "2",
        DECISION,
        reports_zone="file:///srv/lake/reports",
        report_key="promotion/telco_churn-v2.html",
        rebased=None,
    )
    assert text == (
        "**telco_churn v2: promoted**\n\n"
        "promoted: holdout roc_auc 0.7800 >= floor 0.65 (no champion)\n\n"
        "Report: `file:///srv/lake/reports/promotion/telco_churn-v2.html`"
    )


def test_a_rejection_with_a_rebased_reference_says_so_and_masks_the_password() -> None:
    rejected = replace(DECISION, promote=False, reason="rejected: not better beyond noise")
    text = decision_markdown(
        "telco_churn",
        "3",
        rejected,
        reports_zone="s3://minio:s3cret@lake/reports?token=abc",
        report_key="promotion/telco_churn-v3.html",
        rebased={"version": "2", "why": "the change is the new normal"},
    )
    assert text == (
        "**telco_churn v3: rejected**\n\n"
        "rejected: not better beyond noise\n\n"
        "Report: `s3://minio:***@lake/reports?token=***/promotion/telco_churn-v3.html`\n\n"
        "Drift reference of v2 re-based: the change is the new normal"
    )
    assert "s3cret" not in text and "abc" not in text
