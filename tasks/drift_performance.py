"""The drift check's performance signals: estimated (CBPE) and realised model performance.

:func:`estimated_performance` compares the ROC AUC the calibrated probabilities of a window
promise with the training period's (the ``estimated-drop`` signal). :func:`pooled_performance`
pools labelled snapshot days of the champion's predictions into windows (per model version)
with their realised ROC AUC — or, for a regression model, its RMSE or MAE — and an interval;
:func:`realised_drop` decides the ``realised-drop`` signal from them, and
:func:`realised_performance` reads what they need from the lake. The check that uses them is
:mod:`tasks.drift`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from driftloop_config.usecase import ERROR_METRICS
from tasks.drift_stats import auc_interval, expected_auc, null_low

if TYPE_CHECKING:
    from driftloop_config.usecase import DriftSpec, UseCase
    from tasks.drift import DriftInputs
    from tasks.storage import Lake

#: pooled realised-performance windows kept in a result (the newest)
MAX_REALISED_WINDOWS = 60


def estimated_performance(
    reference: Mapping[str, Any], predictions: np.ndarray | None, spec: DriftSpec
) -> dict[str, Any] | None:
    """The window's CBPE-estimated ROC AUC against the training period's.

    ``auc`` (the window's), ``reference`` (all training rows'), ``reference_low`` (the low
    ``1 − null_quantile`` quantile of the training windows' estimates, the smallest with few
    windows), ``allowed_drop`` = ``max(min_performance_drop, reference − reference_low)``,
    ``drop`` and ``signal`` (``drop > allowed_drop``). None without predictions or a stored
    estimate.
    """
    stored = reference.get("estimated")
    if predictions is None or not isinstance(stored, Mapping) or stored.get("auc") is None:
        return None
    p = np.asarray(predictions, dtype="float64")
    auc = expected_auc(p)
    ref = float(stored["auc"])
    windows = [math.nan if v is None else float(v) for v in stored.get("windows") or []]
    low = null_low(windows, spec.null_quantile)
    allowed = max(spec.min_performance_drop, ref - low if low is not None else 0.0)
    drop = ref - auc if math.isfinite(auc) else math.nan
    return {
        "auc": auc if math.isfinite(auc) else None,
        "reference": ref,
        "reference_low": low,
        "allowed_drop": allowed,
        "drop": drop if math.isfinite(drop) else None,
        "rows": int(np.isfinite(p).sum()),
        "signal": bool(math.isfinite(drop) and drop > allowed),
    }


def pooled_performance(
    predictions: pd.DataFrame,
    labelled: pd.DataFrame,
    label: str,
    *,
    min_positives: int,
    entity: str,
    prediction: str,
    confidence: float = 0.95,
    metric: str = "roc_auc",
) -> list[dict[str, Any]]:
    """Realised ROC AUC over pooled windows of labelled snapshot days, per model version.

    ``predictions``: <entity>, event_timestamp, <prediction> and, optionally,
    model_version; ``labelled``: the entity frame of known labels (<entity>, event_timestamp,
    <label>). Each version's snapshot days are pooled from the newest backwards: a window
    closes once it holds at least ``min_positives`` positives and one negative (``complete``);
    the oldest days left over form an incomplete window; a window never mixes versions. Per
    window: ``version``, ``first``/``last`` snapshot day, ``days``, ``n``, ``positives``, and
    ``auc`` with its Hanley–McNeil interval ``low``/``high`` — None unless both classes are
    present. Ordered by last day (then version); at most the newest
    :data:`MAX_REALISED_WINDOWS`.

    With ``metric`` "rmse" or "mae" (a regression model: ``label`` holds outcomes) a window
    closes once ``min_positives`` rows have an outcome above 0, and holds that error with a
    normal interval (:func:`error_interval`) instead of the AUC. Every window says its
    ``metric`` and ``value``.
    """
    if predictions.empty or labelled.empty:
        return []
    p = predictions.assign(event_timestamp=pd.to_datetime(predictions["event_timestamp"], utc=True))
    if "model_version" not in p.columns:
        p = p.assign(model_version=None)
    p = p.assign(model_version=p["model_version"].map(lambda v: None if pd.isna(v) else str(v)))
    lab = labelled.assign(event_timestamp=pd.to_datetime(labelled["event_timestamp"], utc=True))
    p = p.drop_duplicates(["model_version", entity, "event_timestamp"], keep="last")
    joined = p.merge(lab[[entity, "event_timestamp", label]], on=[entity, "event_timestamp"])
    out = []
    error = metric in ERROR_METRICS
    for version, rows in joined.groupby("model_version", sort=True, dropna=False):
        days = [
            (
                str(ts)[:10],
                day[label].to_numpy(dtype="float64" if error else "int64"),
                day[prediction].to_numpy("float64"),
            )
            for ts, day in rows.groupby("event_timestamp", sort=True)
        ]
        name = None if pd.isna(version) else str(version)
        for pool, complete in _pool_days(days, min_positives, need_negative=not error):
            if error:
                out.append(_error_window(name, pool, complete, confidence, metric))
            else:
                out.append(_window(name, pool, complete, confidence))
    out.sort(key=lambda w: (w["last"], w["first"], str(w["version"])))
    return out[-MAX_REALISED_WINDOWS:]


def _pool_days(
    days: list[tuple[str, np.ndarray, np.ndarray]], min_positives: int, *, need_negative: bool
) -> list[tuple[list[tuple[str, np.ndarray, np.ndarray]], bool]]:
    """Days pooled from the newest backwards until a pool holds ``min_positives`` positives
    (labels above 0) and, with ``need_negative``, one negative; (days oldest first, complete),
    oldest pool first."""
    pools = []
    current: list[tuple[str, np.ndarray, np.ndarray]] = []
    positives = negatives = 0
    for day in reversed(days):
        current.append(day)
        positives += int((day[1] > 0).sum())
        negatives += int((day[1] == 0).sum())
        if positives >= min_positives and (negatives > 0 or not need_negative):
            pools.append((current[::-1], True))
            current, positives, negatives = [], 0, 0
    if current:
        pools.append((current[::-1], False))
    return pools[::-1]


def _window(
    version: str | None,
    pool: list[tuple[str, np.ndarray, np.ndarray]],
    complete: bool,
    confidence: float,
) -> dict[str, Any]:
    y = np.concatenate([d[1] for d in pool])
    s = np.concatenate([d[2] for d in pool])
    positives = int(y.sum())
    auc = low = high = None
    if 0 < positives < len(y):
        auc, low, high = auc_interval(y, s, confidence)
    return {
        "version": version,
        "first": pool[0][0],
        "last": pool[-1][0],
        "days": len(pool),
        "n": len(y),
        "positives": positives,
        "metric": "roc_auc",
        "value": auc,
        "auc": auc,
        "low": low,
        "high": high,
        "complete": complete,
    }


def error_interval(
    y: np.ndarray, predicted: np.ndarray, metric: str, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(error, low, high) of predicted outcomes: RMSE with the normal interval of the mean
    squared error (then its root), or MAE with the normal interval of the mean absolute error;
    the low end is at least 0."""
    from statistics import NormalDist

    err = np.asarray(predicted, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    per_row = err**2 if metric == "rmse" else np.abs(err)
    mean = float(per_row.mean())
    half = NormalDist().inv_cdf(0.5 + confidence / 2) * (
        float(per_row.std(ddof=1)) / math.sqrt(len(per_row)) if len(per_row) > 1 else 0.0
    )
    low, high = max(0.0, mean - half), mean + half
    if metric == "rmse":
        return math.sqrt(mean), math.sqrt(low), math.sqrt(high)
    return mean, low, high


def _error_window(
    version: str | None,
    pool: list[tuple[str, np.ndarray, np.ndarray]],
    complete: bool,
    confidence: float,
    metric: str,
) -> dict[str, Any]:
    y = np.concatenate([d[1] for d in pool])
    value, low, high = error_interval(y, np.concatenate([d[2] for d in pool]), metric, confidence)
    return {
        "version": version,
        "first": pool[0][0],
        "last": pool[-1][0],
        "days": len(pool),
        "n": len(y),
        "positives": int((y > 0).sum()),
        "metric": metric,
        "value": value,
        "auc": None,
        "low": low,
        "high": high,
        "complete": complete,
    }


def _value(window: Mapping[str, Any]) -> float | None:
    """A realised window's metric (results stored before windows named theirs hold "auc")."""
    value = window.get("value", window.get("auc"))
    return None if value is None else float(value)


def _metric_label(window: Mapping[str, Any]) -> str:
    return {"rmse": "RMSE", "mae": "MAE", "pr_auc": "PR AUC"}.get(str(window.get("metric")), "AUC")


def realised_drop(
    windows: Sequence[Mapping[str, Any]],
    expected: float | None,
    spec: DriftSpec,
    version: str | None = None,
) -> bool:
    """The newest complete pooled window (of ``version``'s predictions, when given) has its
    interval wholly below ``expected − min_performance_drop`` — for an error metric (rmse,
    mae) wholly above ``expected × (1 + min_performance_drop)`` — (False without an expected
    metric or a complete window)."""
    if expected is None:
        return False
    complete = [
        w
        for w in windows
        if w.get("complete")
        and w.get("high") is not None
        and (version is None or str(w.get("version")) == str(version))
    ]
    if not complete:
        return False
    newest = complete[-1]
    if newest.get("metric") in ERROR_METRICS:
        return bool(newest["low"] > expected * (1 + spec.min_performance_drop))
    return bool(newest["high"] < expected - spec.min_performance_drop)


def realised_performance(usecase: UseCase, lake: Lake, inputs: DriftInputs) -> list[dict[str, Any]]:
    """The champion version's realised ROC AUC over pooled labelled windows known at the
    window's last day (:func:`pooled_performance`)."""
    from tasks.ingest import read_validated
    from tasks.score import read_predictions
    from tasks.training_set import SnapshotColumns, entity_frame

    day = inputs.day
    loop = usecase.loop()
    columns = SnapshotColumns.of(usecase)
    source = usecase.datasets[loop.features.source_dataset]
    active = read_validated(lake, source, last=day, columns=[columns.entity, columns.day])
    labels = read_validated(lake, usecase.datasets[loop.target.labels_dataset], last=day)
    labelled = entity_frame(
        active,
        labels,
        as_of=day,
        horizon_days=loop.target.horizon_days,
        label_delay_days=loop.target.label_delay_days,
        columns=columns,
        recurring=loop.target.recurring,
    )
    prediction = usecase.prediction_column
    predictions = read_predictions(
        lake, inputs.model, last=day, entity=columns.entity, prediction=prediction
    )
    return pooled_performance(
        predictions,
        labelled,
        columns.label,
        min_positives=usecase.drift.min_window_positives,
        entity=columns.entity,
        prediction=prediction,
        metric=loop.model.metric,
    )
