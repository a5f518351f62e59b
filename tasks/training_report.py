"""The training report people read: one offline HTML page per trained model.

Metric tables by split, the ROC and calibration curves and the permutation importance on the
holdout (plots embedded as PNG data URIs; see :mod:`tasks.report`), or for a regression target
its error metrics and importance. The model and its metrics are :mod:`tasks.model`; the
importance is measured by :func:`tasks.reference.feature_importance`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from tasks import report
from tasks.model import (
    FeatureSchema,
    labels,
    metric_names,
    predict_scores,
    regression_metrics,
    score_metrics,
)
from tasks.reference import IMPORTANCE_ROWS, feature_importance
from tasks.report import figure, img, png_data_uri


def roc_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Any:
    """ROC curves, one per named (labels, scores) pair."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig = figure()
    ax = fig.add_subplot()
    for name, (y, scores) in curves.items():
        if len(y) and np.min(y) != np.max(y):
            fpr, tpr, _ = roc_curve(y, scores)
            ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, scores):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC curve")
    ax.legend(loc="lower right")
    return fig


def calibration_figure(curves: Mapping[str, Sequence[Mapping[str, float]]]) -> Any:
    """Reliability diagram from :func:`calibration_table` rows, one line per name."""
    fig = figure()
    ax = fig.add_subplot()
    top = 0.0
    for name, rows in curves.items():
        if rows:
            pred = [r["mean_predicted"] for r in rows]
            obs = [r["fraction_positive"] for r in rows]
            top = max(top, *pred, *obs)
            ax.plot(pred, obs, marker="o", label=name)
    top = min(1.0, top * 1.05) or 1.0
    ax.plot([0, top], [0, top], linestyle="--", color="grey", linewidth=1)
    ax.set_xlabel("mean predicted probability (quantile bins)")
    ax.set_ylabel("observed positive rate")
    ax.set_title("Calibration")
    ax.legend(loc="upper left")
    return fig


def importance_figure(importance: pd.DataFrame, *, measure: str = "drop in ROC AUC") -> Any:
    fig = figure(6.5, max(2.5, 0.3 * len(importance) + 1))
    ax = fig.add_subplot()
    shown = importance.iloc[::-1]
    ax.barh(shown["feature"], shown["importance"], xerr=shown["std"], color="#486581")
    ax.set_xlabel(f"{measure} when the column is shuffled")
    ax.set_title("Permutation importance (holdout)")
    return fig


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else round(value, 4)
    return value


def training_report(
    metrics_by_split: Mapping[str, Mapping[str, Any]],
    model: Any,
    holdout: pd.DataFrame,
    schema: FeatureSchema,
    *,
    title: str = "Training report",
    details: Mapping[str, Any] | None = None,
    seed: int = 0,
    importance: pd.DataFrame | None = None,
    holdout_scores: np.ndarray | None = None,
) -> str:
    """Offline HTML: metric tables, ROC and calibration curves and permutation importance on the
    holdout (plots embedded as PNG data URIs). ``details`` adds a key/value table (data window,
    hash, version, ...); ``seed`` seeds the permutation importance, unless ``importance`` (a
    :func:`feature_importance` table of this model on this holdout) was measured already;
    ``holdout_scores``: the model's :func:`predict_scores` of ``holdout``, when computed already
    (a large holdout takes seconds to score)."""
    scalar_keys = list(metric_names(schema))
    rows = [
        {"split": split, **{k: _fmt(m.get(k)) for k in scalar_keys}}
        for split, m in metrics_by_split.items()
    ]
    y_hold = labels(holdout, schema)
    scores_hold = (
        predict_scores(model, holdout, schema) if holdout_scores is None else holdout_scores
    )
    if importance is None:
        importance = feature_importance(model, holdout, schema, max_rows=IMPORTANCE_ROWS, seed=seed)
    if schema.regression:
        return _regression_report(
            title,
            schema,
            rows,
            scalar_keys,
            regression_metrics(y_hold, scores_hold),
            importance,
            details,
        )
    hold = score_metrics(y_hold, scores_hold)

    parts = [
        report.cards(
            [
                ("holdout ROC AUC", _fmt(hold["roc_auc"])),
                ("holdout PR AUC", _fmt(hold["pr_auc"])),
                ("holdout ECE", _fmt(hold["ece"])),
                ("holdout rows", hold["n"]),
                ("holdout positives", hold["positives"]),
            ]
        ),
        "<h2>Metrics by split</h2>",
        report.table(rows, ["split", *scalar_keys]),
    ]
    if details:
        parts += [
            "<h2>Details</h2>",
            report.table([{"field": k, "value": str(v)} for k, v in details.items()]),
        ]
    curves = {
        s: m["calibration_curve"] for s, m in metrics_by_split.items() if m.get("calibration_curve")
    }
    curves.setdefault("holdout", hold["calibration_curve"])
    parts += [
        "<h2>ROC curve (holdout)</h2>",
        img(png_data_uri(roc_figure({"holdout": (y_hold, scores_hold)})), "ROC curve"),
        "<h2>Calibration</h2>",
        img(png_data_uri(calibration_figure(curves)), "calibration curve"),
        report.table(
            [{k: _fmt(v) for k, v in r.items()} for r in hold["calibration_curve"]],
        ),
        "<h2>Feature importance</h2>",
    ]
    parts += _importance_parts(importance, "drop in ROC AUC")
    return report.page(title, "".join(parts), html.escape(f"label: {schema.label}"))


def _importance_parts(importance: pd.DataFrame, measure: str) -> list[str]:
    if not len(importance):
        return ["<p><em>the holdout's labels do not vary; importance is undefined</em></p>"]
    return [
        img(png_data_uri(importance_figure(importance, measure=measure)), "permutation importance"),
        report.table(
            [
                {"feature": r.feature, "importance": _fmt(r.importance), "std": _fmt(r.std)}
                for r in importance.itertuples()
            ]
        ),
    ]


def _regression_report(
    title: str,
    schema: FeatureSchema,
    rows: list[dict[str, Any]],
    scalar_keys: list[str],
    hold: Mapping[str, Any],
    importance: pd.DataFrame,
    details: Mapping[str, Any] | None,
) -> str:
    parts = [
        report.cards(
            [
                ("holdout RMSE", _fmt(hold["rmse"])),
                ("holdout MAE", _fmt(hold["mae"])),
                ("holdout bias", _fmt(hold["bias"])),
                ("holdout rows", hold["n"]),
                ("holdout mean outcome", _fmt(hold["mean_label"])),
            ]
        ),
        "<h2>Metrics by split</h2>",
        report.table(rows, ["split", *scalar_keys]),
    ]
    if details:
        parts += [
            "<h2>Details</h2>",
            report.table([{"field": k, "value": str(v)} for k, v in details.items()]),
        ]
    parts += ["<h2>Feature importance</h2>", *_importance_parts(importance, "rise of RMSE")]
    return report.page(title, "".join(parts), html.escape(f"label: {schema.label}"))
