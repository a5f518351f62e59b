"""The model: its inputs, the pipeline and how it is fitted, its predictions and its metrics.

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

The reference profile that drift checks compare with is :mod:`tasks.reference`; the HTML
training report is :mod:`tasks.training_report`; the training stage that runs all of it is
:mod:`tasks.training`. Everything here is plain, typed functions of DataFrames; nothing talks to
MLflow or Prefect.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import numpy as np
import pandas as pd

from tasks.plugins import load_function

# scikit-learn is imported where a model is built, fitted or measured: a flow run that decides
# it has nothing to train (or only reads schemas and profiles) does not pay for its import
if TYPE_CHECKING:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

#: The default fitted model type: a calibrated, frozen preprocessing + boosting pipeline.
Model: TypeAlias = "CalibratedClassifierCV"

CALIBRATION_BINS = 10
#: rows as columns: name -> one value per row (what Feast's online reads answer, before pandas)
Columns: TypeAlias = Mapping[str, Sequence[Any]]


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


def category_text(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """A categorical column as the model reads it: its values as text (an ``object`` array of
    its own; a column that is not all text, such as numbers or mixed values, goes through
    ``str``) and where values are missing (their place in the text array holds whatever ``str``
    made of them: the caller decides what a missing value is)."""
    missing = values.isna().to_numpy()
    text = values.astype("object")
    if pd.api.types.infer_dtype(text, skipna=True) not in ("string", "empty"):
        text = text.astype(str)
    return text.to_numpy(dtype=object, copy=True), missing


def model_input(frame: pd.DataFrame, schema: FeatureSchema) -> pd.DataFrame:
    """The model's input columns in canonical types: categoricals as ``object`` strings (missing
    as NaN), numerics as ``float64`` (missing as NaN). Scoring should pass frames through this
    too, so that a missing category means the same thing at training and at scoring time."""
    missing = [c for c in schema.features if c not in frame.columns]
    if missing:
        raise KeyError(f"feature columns missing from the frame: {missing}")
    out: dict[str, pd.Series] = {}
    for col in schema.categorical:
        arr, missing_mask = category_text(frame[col])
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


#: Rows scored per block. The boosted trees are walked one tree at a time over every row they
#: are given: one pass over 300k rows reads the whole input from memory once per tree, a block
#: of 8,192 stays in the CPU's cache across the trees (~25 % less time, the same scores).
SCORE_BLOCK_ROWS = 8192


def predict_scores(model: Any, frame: pd.DataFrame, schema: FeatureSchema) -> np.ndarray:
    """P(label = 1) for every row of ``frame`` (the predicted outcome for a regression
    schema), scored :data:`SCORE_BLOCK_ROWS` rows at a time: a row's score does not depend on
    the rows scored with it (scikit-learn's contract for ``predict``)."""
    if len(frame) <= SCORE_BLOCK_ROWS:
        return _block_scores(model, frame, schema)
    return np.concatenate(
        [
            _block_scores(model, frame.iloc[start : start + SCORE_BLOCK_ROWS], schema)
            for start in range(0, len(frame), SCORE_BLOCK_ROWS)
        ]
    )


def _block_scores(model: Any, frame: pd.DataFrame, schema: FeatureSchema) -> np.ndarray:
    if schema.regression:
        return np.asarray(model.predict(model_input(frame, schema)), dtype=np.float64)
    proba = model.predict_proba(model_input(frame, schema))
    return np.asarray(proba[:, 1], dtype=np.float64)


# ---- scoring a few rows -------------------------------------------------------------------------


#: an input category no model has seen (the probe of :func:`fast_scorer` scores it too)
_UNSEEN = "\x00unseen"


def is_missing(value: Any) -> bool:
    """A missing value as pandas' ``isna`` sees one: None, NaN, ``pd.NA``, ``pd.NaT``."""
    return (
        value is None
        or value is pd.NA
        or value is pd.NaT
        or (isinstance(value, float) and math.isnan(value))
    )


def _plain_number(value: Any) -> bool:
    return value is None or (
        isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    )


class Scorer(Protocol):
    """A fast scorer (:func:`fast_scorer`); ``walk_rows``: the most rows it scores with
    :func:`tree_walker` rather than scikit-learn's trees."""

    def __call__(self, rows: pd.DataFrame | Columns, *, walk_rows: int = ...) -> np.ndarray: ...


def fast_scorer(model: Any, schema: FeatureSchema) -> Scorer | None:
    """:func:`predict_scores` for the built-in model, without pandas and the pipeline's checks
    on every call: for the online service, which scores one or a few rows per request and
    spent ~5 ms of its ~7 ms in building the model's input frame and the column transformer's
    checks, not in the trees.

    The rows come as a frame or as columns (an online read, no frame built when the categories
    are text and the numbers plain). The categories are one-hot encoded with the fitted
    encoder's own categories (an unseen value encodes as none of them, a missing one as the
    missing category when training saw one), the numeric columns passed through as float64, and
    the matrix goes to the fitted trees (up to :data:`WALK_ROWS` rows through
    :func:`tree_walker`); a classifier's scores then go through its fitted sigmoid calibration,
    as scikit-learn's calibrated classifier does. Built once per model; before it is returned it
    scores a probe (every category, missing and unseen values, numbers, NaN), as a frame and as
    columns, through the walker and through scikit-learn's trees, and must give
    :func:`predict_scores`' scores bit for bit. ``None`` (score with :func:`predict_scores`) for
    any other model (a use case's ``model.estimator``), an encoder with options this does not
    implement, or a probe that does not match.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.compose import ColumnTransformer
    from sklearn.frozen import FrozenEstimator
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    calibrator: Any = None
    pipeline = model
    if not schema.regression:
        if not isinstance(model, CalibratedClassifierCV) or len(model.calibrated_classifiers_) != 1:
            return None
        calibrated = model.calibrated_classifiers_[0]
        frozen = calibrated.estimator
        calibrators: Sequence[Any] = getattr(calibrated, "calibrators", ())
        if (
            not isinstance(frozen, FrozenEstimator)
            or getattr(calibrated, "method", None) != "sigmoid"
            or len(calibrators) != 1
            or list(getattr(calibrated, "classes", ())) != [0, 1]
        ):
            return None
        pipeline, calibrator = frozen.estimator, calibrators[0]
    if not isinstance(pipeline, Pipeline) or list(pipeline.named_steps) != ["prep", "clf"]:
        return None
    prep, clf = pipeline.named_steps["prep"], pipeline.named_steps["clf"]
    if not isinstance(prep, ColumnTransformer) or hasattr(clf, "feature_names_in_"):
        return None
    steps = [(name, step, list(cols)) for name, step, cols in prep.transformers_]
    if [(name, cols) for name, _, cols in steps[:2]] != [
        ("cat", list(schema.categorical)),
        ("num", list(schema.numeric)),
    ] or any(step != "drop" for _, step, _ in steps[2:]):
        return None
    encoder = steps[0][1]
    if (
        not isinstance(encoder, OneHotEncoder)
        or not _passes_through(steps[1][1])
        or encoder.handle_unknown != "ignore"
        or encoder.drop is not None
        or encoder.min_frequency is not None
        or encoder.max_categories is not None
    ):
        return None
    lookups: list[dict[Any, int]] = []
    missing_at: list[int] = []  # the column of the missing category, -1: none
    width = 0
    for categories in encoder.categories_:
        known = {value: width + i for i, value in enumerate(categories) if isinstance(value, str)}
        if len(known) + any(is_missing(v) for v in categories) != len(categories):
            return None  # categories other than text and missing: not implemented here
        nan_at = [width + i for i, v in enumerate(categories) if is_missing(v)]
        lookups.append(known)
        missing_at.append(nan_at[0] if nan_at else -1)
        width += len(categories)
    numeric = list(schema.numeric)

    walker = tree_walker(clf) if hasattr(clf, "_loss") else None

    def encode(frame: pd.DataFrame) -> np.ndarray:
        matrix = np.zeros((len(frame), width + len(numeric)), dtype=np.float64)
        for col, known, nan_at in zip(schema.categorical, lookups, missing_at, strict=True):
            text, missing = category_text(frame[col])
            for row, value in enumerate(text):
                at = nan_at if missing[row] else known.get(value, -1)
                if at >= 0:
                    matrix[row, at] = 1.0
        if numeric:
            block = frame[numeric]
            if all(pd.api.types.is_numeric_dtype(t) for t in block.dtypes):
                matrix[:, width:] = block.astype("float64").to_numpy()
            else:
                matrix[:, width:] = model_input(frame, schema)[numeric].to_numpy()
        return matrix

    def encode_columns(data: Columns) -> np.ndarray:
        """As :func:`encode` of ``pd.DataFrame(data)``, without pandas when the categories are
        text and the numbers plain numbers (missing: None or NaN); otherwise through pandas."""
        cats = [data[c] for c in schema.categorical]
        nums = [data[c] for c in numeric]
        if not all(isinstance(v, str) or is_missing(v) for col in cats for v in col) or not all(
            _plain_number(v) for col in nums for v in col
        ):
            return encode(pd.DataFrame(data))
        rows = len(next(iter(data.values()))) if data else 0
        matrix = np.zeros((rows, width + len(numeric)), dtype=np.float64)
        for values, known, nan_at in zip(cats, lookups, missing_at, strict=True):
            for row, value in enumerate(values):
                at = nan_at if is_missing(value) else known.get(value, -1)
                if at >= 0:
                    matrix[row, at] = 1.0
        if numeric:
            matrix[:, width:] = np.array(nums, dtype=np.float64).reshape(len(numeric), rows).T
        return matrix

    def score(rows: pd.DataFrame | Columns, *, walk_rows: int = WALK_ROWS) -> np.ndarray:
        matrix = encode(rows) if isinstance(rows, pd.DataFrame) else encode_columns(rows)
        if walker is not None and len(matrix) <= walk_rows:
            raw = walker(matrix)
            if calibrator is None:
                return np.asarray(clf._loss.link.inverse(raw), dtype=np.float64)
            decision = raw
        elif calibrator is None:
            return np.asarray(clf.predict(matrix), dtype=np.float64)
        else:
            decision = clf.decision_function(matrix)
        scores = np.asarray(calibrator.predict(decision), dtype=np.float64)
        scores[(scores > 1.0) & (scores <= 1.0 + 1e-5)] = 1.0  # as the calibrated classifier
        return scores

    probe = _probe_frame(encoder.categories_, schema)
    try:
        expected = predict_scores(model, probe, schema)
        # through the tree walker (when there is one) and scikit-learn's trees, from a frame
        # and from columns
        columns = {c: probe[c].tolist() for c in probe.columns}
        matches = all(
            np.array_equal(score(data, walk_rows=rows), expected)
            for rows in (len(probe), 0)
            for data in (probe, columns)
        )
    except (TypeError, ValueError, KeyError, IndexError, AttributeError):
        return None
    return score if matches else None


#: at most this many rows go through :func:`tree_walker` in :func:`fast_scorer`; more go through
#: scikit-learn's own prediction (one pass per tree over every row, faster once rows are many)
WALK_ROWS = 128


def tree_walker(clf: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    """The raw predictions (``_raw_predict``) of a fitted single-output histogram gradient
    boosting model, all trees at once: scikit-learn walks one tree at a time, with a Python call
    per tree (~5 µs each, 1.8 ms for a few hundred trees, whatever the number of rows), while
    this walks every tree one level per step, in numpy, over the trees' nodes laid end to end.

    The same comparisons as scikit-learn's (a value at most a node's threshold goes left, a
    missing one where the node sends missing values), and the leaves added to the baseline in
    tree order (``np.cumsum`` adds one after the other), so the sums are the same bit for bit.
    ``None`` for other models, native categorical splits or several trees per iteration.
    """
    predictors = getattr(clf, "_predictors", None)
    baseline = getattr(clf, "_baseline_prediction", None)
    if (
        not predictors
        or baseline is None
        or getattr(clf, "_preprocessor", None) is not None
        or getattr(clf, "n_trees_per_iteration_", None) != 1
        or np.shape(baseline) != (1, 1)
    ):
        return None
    if any(len(trees) != 1 for trees in predictors):
        return None
    nodes = [trees[0].nodes for trees in predictors]
    if any(t["is_categorical"].any() for t in nodes):
        return None
    starts = np.cumsum([0] + [len(t) for t in nodes[:-1]], dtype=np.intp)
    allnodes = np.concatenate(nodes)
    leaf = allnodes["is_leaf"].astype(bool)
    at = np.arange(len(allnodes), dtype=np.intp)
    offset = np.repeat(starts, [len(t) for t in nodes])
    # a leaf points to itself, so walking on past it stays there
    left = np.where(leaf, at, allnodes["left"].astype(np.intp) + offset)
    right = np.where(leaf, at, allnodes["right"].astype(np.intp) + offset)
    feature = np.where(leaf, 0, allnodes["feature_idx"]).astype(np.intp)
    threshold = allnodes["num_threshold"].astype(np.float64)
    missing_left = allnodes["missing_go_to_left"].astype(bool)
    value = allnodes["value"].astype(np.float64)
    depth = int(allnodes["depth"].max())
    base = float(np.asarray(baseline, dtype=np.float64)[0, 0])

    def raw(matrix: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(matrix, dtype=np.float64)
        node = np.broadcast_to(starts, (len(x), len(starts))).copy()
        rows = np.arange(len(x))[:, None]
        for _ in range(depth):
            data = x[rows, feature[node]]
            go_left = np.where(np.isnan(data), missing_left[node], data <= threshold[node])
            node = np.where(go_left, left[node], right[node])
        leaves = value[node]
        summed = np.cumsum(np.column_stack([np.full(len(x), base), leaves]), axis=1)
        return np.asarray(summed[:, -1], dtype=np.float64)

    return raw


def _passes_through(step: Any) -> bool:
    """``"passthrough"`` as given, or as a fitted column transformer holds it (an identity
    ``FunctionTransformer``)."""
    from sklearn.preprocessing import FunctionTransformer

    if isinstance(step, FunctionTransformer):
        return step.func is None and step.inverse_func is None
    return bool(step == "passthrough")


def _probe_frame(categories: Sequence[np.ndarray], schema: FeatureSchema) -> pd.DataFrame:
    """Rows that reach every category of every column, a missing and an unseen value, and
    numbers across their range (NaN and large ones included)."""
    values = [[v for v in c if isinstance(v, str)] + [np.nan, _UNSEEN] for c in categories]
    rows = max((len(v) for v in values), default=1) + 8
    frame: dict[str, Any] = {
        col: [vals[i % len(vals)] for i in range(rows)]
        for col, vals in zip(schema.categorical, values, strict=True)
    }
    ladder = np.array([np.nan, -1e9, -3.5, 0.0, 0.25, 1.0, 7.0, 42.0, 1e3, 1e12])
    for j, col in enumerate(schema.numeric):
        frame[col] = np.roll(np.resize(ladder, rows), j)
    return pd.DataFrame(frame)


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


def evaluate(
    model: Any, frame: pd.DataFrame, schema: FeatureSchema, *, scores: np.ndarray | None = None
) -> dict[str, Any]:
    """roc_auc, pr_auc, log_loss, brier, ece (10 quantile bins), n, positives and
    ``calibration_curve`` (one dict per bin) of ``model`` on ``frame`` — for a regression
    schema :func:`regression_metrics`. ``scores``: the model's :func:`predict_scores` of
    ``frame``, when they were computed already."""
    measure = regression_metrics if schema.regression else score_metrics
    if scores is None:
        scores = predict_scores(model, frame, schema)
    return measure(labels(frame, schema), scores)


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
