"""Training: the model pipeline, its evaluation, the drift reference and the training report.

The model is a scikit-learn pipeline — one-hot encoded categoricals (unseen categories score as
"none of the known ones") and numeric features passed through with their NaNs — feeding a
histogram gradient-boosted tree classifier. Class imbalance is handled with balanced class
weights, on the training rows *and* on the validation rows that drive early stopping (scikit-learn
applies ``class_weight`` only to the training rows, so the validation weights are passed
explicitly). Balanced weights inflate the predicted probabilities, so the fitted pipeline is then
frozen and wrapped in a sigmoid (Platt) calibration fitted on the validation split: a monotone
map, so the ranking (ROC AUC) is unchanged while the probabilities become usable.

The fit's ``seed`` drives its one random part: every tree split considers a random share
(``max_features``) of the input columns. Early stopping and calibration use the given validation
rows, not a random split, so they are deterministic: one seed gives one model, bit for bit.

A use case may name its own classifier instead (``model.estimator``, see
:func:`build_estimator`); it is fitted on the training rows as it is given, with no calibration
or class weights added.

A regression target (``FeatureSchema.regression``: the label is a number, e.g. spend in the next
30 days) gets the same preprocessing feeding a histogram gradient-boosted tree *regressor*
(squared error, early-stopped on the validation rows; nothing to calibrate); it is measured by
RMSE and MAE, and its predictions are the predicted values.

Everything here is plain, typed functions of DataFrames; nothing talks to MLflow or Prefect.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import numpy as np
import pandas as pd

from tasks import report
from tasks.drift_stats import bin_proportions, expected_auc
from tasks.plugins import load_function
from tasks.report import figure, img, png_data_uri

# scikit-learn is imported where a model is built, fitted or measured: a flow run that decides
# it has nothing to train (or only reads schemas and profiles) does not pay for its import
if TYPE_CHECKING:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

#: The default fitted model type: a calibrated, frozen preprocessing + boosting pipeline.
Model: TypeAlias = "CalibratedClassifierCV"

CALIBRATION_BINS = 10
PROFILE_BINS = 10
MAX_PROFILE_CATEGORIES = 50
OTHER_CATEGORY = "__other__"


@dataclass(frozen=True)
class FeatureSchema:
    """Which columns the model reads, and which one it predicts."""

    categorical: tuple[str, ...]
    numeric: tuple[str, ...]
    label: str
    regression: bool = False  # the label is a number (else 0/1) and the model predicts it

    def __post_init__(self) -> None:
        features = self.categorical + self.numeric
        if not features:
            raise ValueError("a feature schema needs at least one feature")
        if len(set(features)) != len(features):
            raise ValueError(f"feature names repeat: {features}")
        if self.label in features:
            raise ValueError(f"the label {self.label!r} is also listed as a feature")

    @property
    def features(self) -> tuple[str, ...]:
        return self.categorical + self.numeric


# ---- inputs -------------------------------------------------------------------------------------


def model_input(frame: pd.DataFrame, schema: FeatureSchema) -> pd.DataFrame:
    """The model's input columns in canonical types: categoricals as ``object`` strings (missing
    as NaN), numerics as ``float64`` (missing as NaN). Scoring should pass frames through this
    too, so that a missing category means the same thing at training and at scoring time."""
    missing = [c for c in schema.features if c not in frame.columns]
    if missing:
        raise KeyError(f"feature columns missing from the frame: {missing}")
    out: dict[str, pd.Series] = {}
    for col in schema.categorical:
        values = frame[col]
        missing_mask = values.isna().to_numpy()
        text = values.astype("object")
        if pd.api.types.infer_dtype(text, skipna=True) not in ("string", "empty"):
            text = text.astype(str)
        arr = text.to_numpy(dtype=object, copy=True)
        arr[missing_mask] = np.nan
        out[col] = pd.Series(arr, index=frame.index, dtype="object")
    numeric = frame[list(schema.numeric)]
    if all(pd.api.types.is_numeric_dtype(t) for t in numeric.dtypes):
        numeric = numeric.astype("float64")  # one cast for the block (the serving path)
        for col in schema.numeric:
            out[col] = numeric[col]
    else:
        for col in schema.numeric:
            out[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    return pd.DataFrame(out, index=frame.index)


def labels(frame: pd.DataFrame, schema: FeatureSchema) -> np.ndarray:
    """The 0/1 label column as an int array (raises on missing or non-binary labels); for a
    regression schema the outcome as a float array (raises on missing or infinite values)."""
    if schema.label not in frame.columns:
        raise KeyError(f"label column {schema.label!r} is missing from the frame")
    y = frame[schema.label]
    if y.isna().any():
        raise ValueError(f"label column {schema.label!r} has {int(y.isna().sum())} missing values")
    if schema.regression:
        values = pd.to_numeric(y, errors="coerce").to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"label column {schema.label!r} must hold finite numbers")
        return values
    arr = y.to_numpy().astype("int64")
    if not np.isin(arr, (0, 1)).all():
        raise ValueError(f"label column {schema.label!r} must hold only 0 and 1")
    return arr


# ---- the model ------------------------------------------------------------------------------------


def build_pipeline(
    schema: FeatureSchema,
    *,
    seed: int,
    max_iter: int = 500,
    learning_rate: float = 0.05,
    max_leaf_nodes: int = 8,
    l2_regularization: float = 5.0,
    n_iter_no_change: int = 20,
    max_features: float = 0.8,
) -> Pipeline:
    """The unfitted preprocessing + classifier pipeline (see :func:`fit` for how it is trained).

    ``seed`` drives the classifier's only random part: each split considers a random
    ``max_features`` share of the (one-hot encoded) input columns. Everything else in the fit is
    deterministic (early stopping and calibration use the given validation rows, not a random
    split), so one seed gives one model and different seeds give different ones."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    prep = ColumnTransformer(
        [
            (
                "cat",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float64),
                list(schema.categorical),
            ),
            ("num", "passthrough", list(schema.numeric)),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )
    common: dict[str, Any] = dict(
        learning_rate=learning_rate,
        max_iter=max_iter,
        max_leaf_nodes=max_leaf_nodes,
        l2_regularization=l2_regularization,
        early_stopping=True,
        scoring="loss",
        n_iter_no_change=n_iter_no_change,
        max_features=max_features,
        random_state=seed,
    )
    if schema.regression:
        return Pipeline([("prep", prep), ("clf", HistGradientBoostingRegressor(**common))])
    clf = HistGradientBoostingClassifier(class_weight="balanced", **common)
    return Pipeline([("prep", prep), ("clf", clf)])


def build_estimator(estimator: str, schema: FeatureSchema, *, seed: int) -> Any:
    """The unfitted classifier that a use case's ``model.estimator`` names.

    ``estimator`` is ``"package.module:function"`` (resolved like ``features.builder``; the
    module must be importable where training *and* scoring run). The function is called with
    keyword arguments only::

        function(seed=seed, categorical=("plan", ...), numeric=("tenure_months", ...))

    * ``seed`` (int): the training seed; use it as the ``random_state`` of every random part,
      so that one seed gives one model.
    * ``categorical`` (tuple of str): the categorical input columns. Their values are strings
      (``object`` dtype) with NaN for missing; scoring may bring values training never saw.
    * ``numeric`` (tuple of str): the numeric input columns, ``float64`` with NaN for missing.

    It returns an *unfitted* scikit-learn compatible classifier or pipeline with ``fit(X, y)``
    and ``predict_proba(X)``: ``X`` is a DataFrame of exactly those columns (see
    :func:`model_input`), ``y`` the 0/1 labels, and column 1 of ``predict_proba`` is
    P(label = 1). For a regression target it returns a regressor with ``fit(X, y)`` and
    ``predict(X)``, ``y`` being the outcomes. The estimator must accept the NaNs (impute them if it cannot) and handle the
    categoricals itself (e.g. one-hot encode them). It is fitted once, on the training rows;
    the validation rows are only evaluated. Nothing is added: no class weights, no calibration
    (wrap it in ``CalibratedClassifierCV`` if its probabilities need it: the drift monitor's
    performance estimate reads them as probabilities). The fitted object is what is logged
    (skops format); the types it holds are trusted on loading only when they come from the
    packages its estimators' classes come from (see ``tasks.registry.trusted_types``).

    Raises ValueError naming ``model.estimator`` when the function cannot be imported, fails,
    or returns something without ``fit`` and ``predict_proba``.
    """
    function = load_function(estimator, "model.estimator")
    try:
        built = function(
            seed=seed, categorical=tuple(schema.categorical), numeric=tuple(schema.numeric)
        )
    except Exception as exc:
        raise ValueError(
            f"model.estimator {estimator!r}: calling it with seed, categorical and numeric "
            f"failed: {type(exc).__name__}: {exc}"
        ) from exc
    missing = [
        method
        for method in ("fit", "predict" if schema.regression else "predict_proba")
        if isinstance(built, type) or not callable(getattr(built, method, None))
    ]
    if missing:
        raise ValueError(
            f"model.estimator {estimator!r} returned {type(built).__name__} {built!r:.200}, "
            f"which has no {' and no '.join(missing)} method: it must return an unfitted "
            "scikit-learn estimator or pipeline (an instance, not a class)"
        )
    return built


def _check_both_classes(y: np.ndarray, split: str, *, regression: bool = False) -> None:
    if regression:
        if len(y) == 0 or y.min() == y.max():
            raise ValueError(
                f"the {split} split needs outcomes that vary to train on; it has {len(y)} rows"
                + (f", all {y[0]:g}" if len(y) else "")
            )
        return
    if len(y) == 0 or y.min() == y.max():
        raise ValueError(
            f"the {split} split needs both classes to train on; it has {len(y)} rows and "
            f"{int(y.sum())} positives"
        )


def fit(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    schema: FeatureSchema,
    *,
    seed: int,
    estimator: str | None = None,
    **params: Any,
) -> Any:
    """Train on ``train``, early-stop and calibrate on ``validation``; return the calibrated model.

    ``params`` go to :func:`build_pipeline` (``max_iter``, ``learning_rate``, ...). With
    ``estimator`` (a use case's ``model.estimator``) the classifier it names is fitted on the
    training rows instead and returned as it is (see :func:`build_estimator`); it is resolved
    before anything is fitted, so a bad reference fails at once.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator
    from sklearn.utils.class_weight import compute_sample_weight

    if estimator is not None:
        if params:
            raise TypeError(f"model.estimator {estimator!r} takes no pipeline parameters: {params}")
        custom = build_estimator(estimator, schema, seed=seed)
    y_train = labels(train, schema)
    y_val = labels(validation, schema)
    _check_both_classes(y_train, "training", regression=schema.regression)
    _check_both_classes(y_val, "validation", regression=schema.regression)
    x_train = model_input(train, schema)
    if estimator is not None:
        custom.fit(x_train, y_train)
        return custom
    x_val = model_input(validation, schema)

    pipeline = build_pipeline(schema, seed=seed, **params)
    prep: ColumnTransformer = pipeline.named_steps["prep"]
    clf = pipeline.named_steps["clf"]
    train_matrix = prep.fit_transform(x_train)
    val_matrix = prep.transform(x_val)
    if schema.regression:  # early-stopped on the validation rows; nothing to calibrate
        clf.fit(train_matrix, y_train, X_val=val_matrix, y_val=y_val)
        return pipeline
    # class_weight is applied to the training rows only: weight the validation rows the same
    # way, or early stopping watches a different loss than the one being minimised.
    clf.fit(
        train_matrix,
        y_train,
        X_val=val_matrix,
        y_val=y_val,
        sample_weight_val=compute_sample_weight("balanced", y_val),
    )
    calibrated = CalibratedClassifierCV(FrozenEstimator(pipeline), method="sigmoid")
    calibrated.fit(x_val, y_val)
    return calibrated


def predict_scores(model: Any, frame: pd.DataFrame, schema: FeatureSchema) -> np.ndarray:
    """P(label = 1) for every row of ``frame`` (the predicted outcome for a regression
    schema)."""
    if schema.regression:
        return np.asarray(model.predict(model_input(frame, schema)), dtype=np.float64)
    proba = model.predict_proba(model_input(frame, schema))
    return np.asarray(proba[:, 1], dtype=np.float64)


def boosting_iterations(model: Model | Pipeline) -> int:
    """How many boosting iterations early stopping kept."""
    from sklearn.pipeline import Pipeline

    # CalibratedClassifierCV -> Frozen -> Pipeline; a regression model is the pipeline itself
    pipeline: Pipeline = model if isinstance(model, Pipeline) else model.estimator.estimator
    return int(pipeline.named_steps["clf"].n_iter_)


# ---- evaluation ---------------------------------------------------------------------------------


def _quantile_bins(scores: np.ndarray, bins: int) -> np.ndarray:
    """Bin index per score for (up to) ``bins`` equal-count bins; ties share a bin."""
    inner = np.unique(np.quantile(scores, np.linspace(0, 1, bins + 1)[1:-1]))
    return np.searchsorted(inner, scores, side="left")


def calibration_table(
    y: np.ndarray, scores: np.ndarray, bins: int = CALIBRATION_BINS
) -> list[dict[str, float]]:
    """Reliability data on quantile bins: count, mean predicted and observed positive rate."""
    y = np.asarray(y, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return []
    idx = _quantile_bins(scores, bins)
    rows = []
    for b in np.unique(idx):
        mask = idx == b
        rows.append(
            {
                "bin": int(b),
                "count": int(mask.sum()),
                "score_min": float(scores[mask].min()),
                "score_max": float(scores[mask].max()),
                "mean_predicted": float(scores[mask].mean()),
                "fraction_positive": float(y[mask].mean()),
            }
        )
    return rows


def expected_calibration_error(
    y: np.ndarray, scores: np.ndarray, bins: int = CALIBRATION_BINS
) -> float:
    """ECE on quantile bins: the count-weighted mean |mean predicted - observed rate|."""
    table_rows = calibration_table(y, scores, bins)
    total = sum(r["count"] for r in table_rows)
    if total == 0:
        return math.nan
    return float(
        sum(r["count"] * abs(r["mean_predicted"] - r["fraction_positive"]) for r in table_rows)
        / total
    )


def score_metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """The metrics of :func:`evaluate` for given labels and scores. Ranking metrics are NaN when
    only one class is present."""
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        log_loss,
        roc_auc_score,
    )

    y = np.asarray(y, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    both = len(y) > 0 and y.min() != y.max()
    clipped = np.clip(scores, 1e-15, 1 - 1e-15)
    return {
        "n": len(y),
        "positives": int(y.sum()),
        "roc_auc": float(roc_auc_score(y, scores)) if both else math.nan,
        "pr_auc": float(average_precision_score(y, scores)) if both else math.nan,
        "log_loss": float(log_loss(y, clipped, labels=[0, 1])) if len(y) else math.nan,
        "brier": float(brier_score_loss(y, scores, pos_label=1)) if len(y) else math.nan,
        "ece": expected_calibration_error(y, scores),
        "calibration_curve": calibration_table(y, scores),
    }


def regression_metrics(y: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """n, positives (outcomes above 0), rmse, mae, mean_label, mean_predicted and bias (mean
    predicted - mean outcome) of predicted outcomes; NaN metrics without rows."""
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error

    y = np.asarray(y, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    some = len(y) > 0
    return {
        "n": len(y),
        "positives": int((y > 0).sum()),
        "rmse": float(root_mean_squared_error(y, predicted)) if some else math.nan,
        "mae": float(mean_absolute_error(y, predicted)) if some else math.nan,
        "mean_label": float(y.mean()) if some else math.nan,
        "mean_predicted": float(predicted.mean()) if some else math.nan,
        "bias": float(predicted.mean() - y.mean()) if some else math.nan,
    }


def evaluate(model: Any, frame: pd.DataFrame, schema: FeatureSchema) -> dict[str, Any]:
    """roc_auc, pr_auc, log_loss, brier, ece (10 quantile bins), n, positives and
    ``calibration_curve`` (one dict per bin) of ``model`` on ``frame`` — for a regression
    schema :func:`regression_metrics`."""
    measure = regression_metrics if schema.regression else score_metrics
    return measure(labels(frame, schema), predict_scores(model, frame, schema))


#: the scalar metrics a training reports per split
CLASSIFIER_METRICS = ("n", "positives", "roc_auc", "pr_auc", "log_loss", "brier", "ece")
REGRESSION_METRICS = ("n", "positives", "rmse", "mae", "mean_label", "mean_predicted", "bias")


def metric_names(schema: FeatureSchema) -> tuple[str, ...]:
    """The scalar metrics :func:`evaluate` gives for ``schema``, in report order."""
    return REGRESSION_METRICS if schema.regression else CLASSIFIER_METRICS


def flat_metrics(metrics_by_split: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """``{"holdout_roc_auc": ..., ...}``: the finite scalar metrics of every split, for logging."""
    out: dict[str, float] = {}
    for split, metrics in metrics_by_split.items():
        for key, value in metrics.items():
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if numeric and math.isfinite(float(value)):
                out[f"{split}_{key}"] = float(value)
    return out


# ---- drift reference ----------------------------------------------------------------------------


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


# ---- report -------------------------------------------------------------------------------------


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
) -> str:
    """Offline HTML: metric tables, ROC and calibration curves and permutation importance on the
    holdout (plots embedded as PNG data URIs). ``details`` adds a key/value table (data window,
    hash, version, ...); ``seed`` seeds the permutation importance, unless ``importance`` (a
    :func:`feature_importance` table of this model on this holdout) was measured already."""
    scalar_keys = list(metric_names(schema))
    rows = [
        {"split": split, **{k: _fmt(m.get(k)) for k in scalar_keys}}
        for split, m in metrics_by_split.items()
    ]
    y_hold = labels(holdout, schema)
    scores_hold = predict_scores(model, holdout, schema)
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
