"""The training reference that drift checks compare with, and what goes into it.

:func:`reference_profile` records the distributions of the reference period (each input's
quantile bins or category shares, the predictions', a sample for the KS test), the empirical
null of the drift thresholds (each window's PSI against the other windows), the CBPE-estimated
performance and the inputs' permutation importance (:func:`feature_importance`,
:func:`input_importance`); :func:`data_fingerprint` identifies the data a model was trained on.
The drift monitor (:mod:`tasks.drift`) reads the profile back. The model itself is
:mod:`tasks.model`. Plain, typed functions of DataFrames; nothing talks to MLflow or Prefect.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import pandas as pd

from tasks.drift_stats import bin_proportions, expected_auc
from tasks.model import FeatureSchema, labels, model_input

PROFILE_BINS = 10
MAX_PROFILE_CATEGORIES = 50
OTHER_CATEGORY = "__other__"


def numeric_profile(
    values: np.ndarray | pd.Series, bins: int = PROFILE_BINS, *, sample: int = 0
) -> dict[str, Any]:
    """Quantile bin edges (outer edges -inf/+inf, repeated quantiles merged) and proportions,
    count, mean, std and null share of one numeric column; with ``sample`` > 0 also ``sample``:
    at most that many of the present values (all of them when fewer; else a fixed-seed draw
    without replacement), sorted."""
    arr = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=np.float64)
    present = arr[~np.isnan(arr)]
    count = len(arr)
    if len(present):
        inner = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))
        edges = [-math.inf, *(float(e) for e in inner), math.inf]
        mean = float(present.mean())
        std = float(present.std(ddof=1)) if len(present) > 1 else 0.0
    else:
        edges, mean, std = [-math.inf, math.inf], None, None
    out: dict[str, Any] = {
        "count": count,
        "null_share": float(1 - len(present) / count) if count else 0.0,
        "mean": mean,
        "std": std,
        "edges": edges,
        "proportions": bin_proportions(present, edges),
    }
    if sample > 0:
        kept = present
        if len(present) > sample:
            kept = np.random.default_rng(0).choice(present, size=sample, replace=False)
        out["sample"] = [float(v) for v in np.sort(kept)]
    return out


def categorical_profile(
    values: pd.Series, max_categories: int = MAX_PROFILE_CATEGORIES
) -> dict[str, Any]:
    """Category proportions (of the non-missing values; rare tail folded into ``__other__``),
    count and null share of one categorical column."""
    series = pd.Series(values)
    count = len(series)
    present = series.dropna().astype(str)
    shares = present.value_counts(normalize=True, sort=True)
    props = {str(k): float(v) for k, v in shares.iloc[:max_categories].items()}
    if len(shares) > max_categories:
        props[OTHER_CATEGORY] = float(shares.iloc[max_categories:].sum())
    return {
        "count": count,
        "null_share": float(1 - len(present) / count) if count else 0.0,
        "n_categories": len(shares),
        "proportions": props,
    }


def reference_profile(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    predictions: np.ndarray | pd.Series,
    *,
    window_days: int = 1,
    importance: Mapping[str, float] | None = None,
    expected_metric: float | None = None,
    unseen: pd.DataFrame | None = None,
    unseen_predictions: np.ndarray | pd.Series | None = None,
) -> dict[str, Any]:
    """The distributions of ``frame`` (the reference period) that drift checks compare against.

    ``numeric[f]`` / ``prediction``: ``edges`` (quantile bin edges of the training data, outer
    edges -inf/+inf; bins are ``edges[i] < x <= edges[i + 1]``, see :func:`bin_proportions`),
    ``proportions``, ``count``, ``mean``, ``std``, ``null_share`` and ``sample`` (at most
    :data:`PROFILE_SAMPLE` of the values, a fixed-seed draw, for the KS test).
    ``categorical[f]``: ``proportions`` per category, ``count``, ``null_share``.

    With an ``event_timestamp`` column, ``null`` holds the empirical null of the drift
    thresholds (see :mod:`tasks.drift_stats`): the rows are cut by snapshot day into
    consecutive windows of ``window_days`` days (``null["windows"]``: first and last day and
    rows of each), and ``null["psi"][f]`` / ``null["prediction"]`` hold, per window, its PSI
    against the reference built from all the other windows over the same bins or categories.
    ``estimated``: the CBPE-estimated ROC AUC of all rows (``auc``) and of each window
    (``windows``), from the predictions taken as calibrated probabilities — of ``unseen`` (rows
    the model was not fitted on, e.g. the validation and holdout splits, with an
    ``event_timestamp`` column) and ``unseen_predictions`` when given (``rows`` says which), else
    of ``frame``. Prefer unseen rows: the training rows' probabilities are sharper than those of
    new rows, so an estimate on them promises more than live windows can show.

    ``importance`` (e.g. :func:`input_importance`) is stored normalised over the inputs
    (negative values as 0; absent inputs 0); ``expected_metric`` (the holdout ROC AUC) is what
    realised performance is compared with. JSON-serialisable (the infinite edges are written as
    ``-Infinity``/``Infinity``, which Python's json reads back).
    """
    if len(predictions) != len(frame):
        raise ValueError(f"{len(predictions)} predictions for {len(frame)} rows")
    if window_days < 1:
        raise ValueError(f"window_days must be >= 1, got {window_days}")
    x = model_input(frame, schema)
    scores = np.asarray(predictions, dtype=np.float64)
    profile: dict[str, Any] = {
        "version": 2,
        "rows": len(frame),
        "bins": PROFILE_BINS,
        "binning": "edges[i] < x <= edges[i+1]; missing values excluded (see null_share)",
        "numeric": {c: numeric_profile(x[c], sample=PROFILE_SAMPLE) for c in schema.numeric},
        "categorical": {c: categorical_profile(x[c]) for c in schema.categorical},
        "prediction": numeric_profile(scores, sample=PROFILE_SAMPLE),
        "expected_metric": _finite_or_none(expected_metric),
    }
    if importance is not None:
        profile["importance"] = normalised_importance(importance, schema.features)
    if schema.label in frame.columns:  # the positive rate; the mean outcome for a regression
        profile["label_rate"] = float(labels(frame, schema).mean()) if len(frame) else None
    if "event_timestamp" in frame.columns and len(frame):
        ts = pd.to_datetime(frame["event_timestamp"], utc=True)
        profile["window"] = {"start": ts.min().isoformat(), "end": ts.max().isoformat()}
        window = window_index(ts, window_days)
        profile["null"] = empirical_null(x, scores, profile, window, ts, window_days)
    if schema.regression:
        profile["estimated"] = None  # no label-free estimate of a regression's error
    elif unseen is not None and unseen_predictions is not None:
        if len(unseen_predictions) != len(unseen):
            raise ValueError(f"{len(unseen_predictions)} predictions for {len(unseen)} unseen rows")
        profile["estimated"] = estimated_profile(
            unseen, np.asarray(unseen_predictions, dtype=np.float64), window_days, rows="unseen"
        )
    else:
        profile["estimated"] = estimated_profile(frame, scores, window_days, rows="reference")
    return profile


def estimated_profile(
    frame: pd.DataFrame, scores: np.ndarray, window_days: int, *, rows: str
) -> dict[str, Any]:
    """The CBPE-estimated ROC AUC of ``scores`` (``auc``) and per window of ``window_days``
    snapshot days (``windows``; empty without an ``event_timestamp`` column)."""
    out: dict[str, Any] = {
        "metric": "roc_auc",
        "rows": rows,
        "n": len(scores),
        "auc": _finite_or_none(expected_auc(scores)),
        "windows": [],
    }
    if "event_timestamp" in frame.columns and len(frame):
        window = window_index(pd.to_datetime(frame["event_timestamp"], utc=True), window_days)
        out["windows"] = [
            _finite_or_none(expected_auc(scores[window == w])) for w in np.unique(window)
        ]
    return out


#: values per numeric input kept in the reference for the KS test
PROFILE_SAMPLE = 1000


def _finite_or_none(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def window_index(timestamps: pd.Series, window_days: int) -> np.ndarray:
    """Per row, its window: consecutive runs of ``window_days`` calendar days counted from the
    first snapshot day (0, 1, ...; a window without rows has no number)."""
    day = pd.to_datetime(timestamps, utc=True).dt.normalize()
    offset = ((day - day.min()) // pd.Timedelta(days=1)).to_numpy(dtype=np.int64)
    raw = offset // window_days
    _, dense = np.unique(raw, return_inverse=True)
    return np.asarray(dense, dtype=np.int64)


def empirical_null(
    x: pd.DataFrame,
    scores: np.ndarray,
    profile: Mapping[str, Any],
    window: np.ndarray,
    timestamps: pd.Series,
    window_days: int,
) -> dict[str, Any]:
    """Each window's PSI against all the other windows (see :func:`reference_profile`)."""
    from tasks.drift_stats import leave_one_out_psi

    day = pd.to_datetime(timestamps, utc=True).dt.normalize()
    ids = np.unique(window)
    windows = [
        {
            "first": str(day[window == w].min().date()),
            "last": str(day[window == w].max().date()),
            "rows": int((window == w).sum()),
        }
        for w in ids
    ]
    out: dict[str, Any] = {"window_days": window_days, "windows": windows, "psi": {}}
    if len(ids) < 2:
        out["prediction"] = []
        return out

    def numeric_counts(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
        return np.vstack([_bin_counts(values[window == w], edges) for w in ids])

    for name, ref in profile["numeric"].items():
        values = x[name].to_numpy(dtype=np.float64)
        out["psi"][name] = _nan_to_none(leave_one_out_psi(numeric_counts(values, ref["edges"])))
    for name, ref in profile["categorical"].items():
        cats = list(ref["proportions"])
        codes = fold_categories(x[name], cats).to_numpy(dtype=object)
        present = pd.notna(codes)
        index = {c: i for i, c in enumerate(cats)}
        col = np.array([index[c] for c in codes[present]], dtype=np.int64)
        counts = np.zeros((len(ids), max(len(cats), 1)), dtype=np.int64)
        np.add.at(counts, (window[present], col), 1)
        out["psi"][name] = _nan_to_none(leave_one_out_psi(counts))
    edges = profile["prediction"]["edges"]
    out["prediction"] = _nan_to_none(leave_one_out_psi(numeric_counts(scores, edges)))
    return out


def _bin_counts(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    from tasks.drift_stats import bin_counts

    return bin_counts(values, edges)


def _nan_to_none(values: Sequence[float]) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in values]


def fold_categories(values: pd.Series, categories: Sequence[str]) -> pd.Series:
    """The values as category labels (``str``), with labels outside ``categories`` folded into
    :data:`OTHER_CATEGORY` when the reference has it (its rare tail); missing stays missing."""
    series = pd.Series(values)
    present = series.notna()
    text = series.astype(object).where(~present, series.astype(object).map(str))
    if OTHER_CATEGORY in categories:
        known = set(categories)
        outside = present & ~text.isin(known)
        text = text.where(~outside, OTHER_CATEGORY)
    return text


def normalised_importance(
    importance: Mapping[str, float], features: Sequence[str]
) -> dict[str, float]:
    """Importance per input, negative values as 0, normalised to sum 1 (equal when all 0)."""
    raw = {f: max(0.0, float(importance.get(f, 0.0) or 0.0)) for f in features}
    raw = {f: (v if math.isfinite(v) else 0.0) for f, v in raw.items()}
    total = sum(raw.values())
    if total <= 0:
        return {f: 1.0 / len(features) for f in features} if features else {}
    return {f: v / total for f, v in raw.items()}


#: rows of the holdout the permutation importance is measured on (a fixed-seed sample)
IMPORTANCE_ROWS: Final = 2000


def input_importance(
    model: Any,
    frame: pd.DataFrame,
    schema: FeatureSchema,
    *,
    seed: int = 0,
    max_rows: int = IMPORTANCE_ROWS,
    table: pd.DataFrame | None = None,
) -> dict[str, float]:
    """Permutation importance of each input on ROC AUC over (a fixed-seed sample of at most
    ``max_rows`` rows of) ``frame``: negative values clipped to 0, normalised to sum 1; equal
    weights when every input's importance is 0 (or ``frame`` has a single class). ``table``:
    that :func:`feature_importance` already measured (the training report shows the same)."""
    if table is None:
        table = feature_importance(model, frame, schema, max_rows=max_rows, seed=seed)
    found = dict(zip(table["feature"].astype(str), table["importance"].astype(float), strict=True))
    return normalised_importance(found, schema.features)


def feature_importance(
    model: Any,
    holdout: pd.DataFrame,
    schema: FeatureSchema,
    *,
    n_repeats: int = 3,
    max_rows: int = 5000,
    seed: int = 0,
) -> pd.DataFrame:
    """Permutation importance (drop in ROC AUC; for a regression schema the rise of RMSE) of
    each input column on (a sample of) the holdout, sorted by importance."""
    from sklearn.inspection import permutation_importance

    sample = holdout.sample(max_rows, random_state=seed) if len(holdout) > max_rows else holdout
    y = labels(sample, schema)
    if len(y) == 0 or y.min() == y.max():
        return pd.DataFrame(columns=["feature", "importance", "std"])
    result = permutation_importance(
        model,
        model_input(sample, schema),
        y,
        scoring="neg_root_mean_squared_error" if schema.regression else "roc_auc",
        n_repeats=n_repeats,
        random_state=seed,
    )
    out = pd.DataFrame(
        {
            "feature": list(schema.features),
            "importance": result.importances_mean,
            "std": result.importances_std,
        }
    )
    return out.sort_values("importance", ascending=False, ignore_index=True)


def data_fingerprint(frame: pd.DataFrame) -> str:
    """sha256 of the frame's content: independent of row order, column order and index.

    Each row is hashed (pandas' stable 64-bit row hash over the columns in name order); the row
    hashes are sorted — the same as hashing the rows sorted by key and time, and well defined
    even when keys repeat — and digested together with the column names.
    """
    cols = sorted(str(c) for c in frame.columns)
    ordered = frame.rename(columns=str)[cols]
    digest = hashlib.sha256()
    digest.update(json.dumps({"columns": cols, "rows": len(ordered)}).encode())
    if len(ordered):
        rows = pd.util.hash_pandas_object(ordered, index=False).to_numpy(dtype=np.uint64)
        digest.update(np.sort(rows).tobytes())
    return digest.hexdigest()
