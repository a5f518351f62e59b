"""The model (:mod:`tasks.model`): inputs, fitting, predictions, metrics, a named estimator and a
regression target. ``make_frame`` and ``SCHEMA`` (synthetic churn rows) are shared with other
test modules."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from tasks.model import (
    WALK_ROWS,
    FeatureSchema,
    boosting_iterations,
    build_estimator,
    calibration_table,
    evaluate,
    expected_calibration_error,
    fit,
    flat_metrics,
    labels,
    metric_names,
    model_input,
    predict_scores,
)

CATEGORIES = {
    "plan": ["basic", "standard", "premium", "unlimited"],
    "contract": ["month_to_month", "one_year", "two_year"],
    "region": ["north", "south", "east", "west"],
    "payment_method": ["card", "bank_transfer", "electronic", "mailed_check"],
}
NUMERIC = (
    "tenure_months",
    "monthly_charge",
    "minutes_mean_7d",
    "minutes_mean_30d",
    "data_gb_mean_7d",
    "data_gb_mean_30d",
    "minutes_trend",
    "data_gb_trend",
    "dropped_calls_sum_7d",
    "dropped_call_rate_7d",
    "support_tickets_sum_30d",
    "bill_mean_7d",
    "bill_change_7d_30d",
    "active_days_30d",
)
SCHEMA = FeatureSchema(categorical=tuple(CATEGORIES), numeric=NUMERIC, label="churned")


def make_frame(
    n: int, seed: int, *, changed: bool = False, start: str = "2026-01-01", days: int = 28
) -> pd.DataFrame:
    """Synthetic feature rows with a known churn signal.

    Before the change churn rises with month-to-month contracts, support tickets, dropped calls,
    falling usage and short tenure; after it (``changed``) premium-plan customers with high
    charges churn and tickets/usage trends act the other way round.
    """
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({k: rng.choice(v, n) for k, v in CATEGORIES.items()})
    tenure = rng.integers(0, 72, n).astype(float)
    charge = rng.normal(55, 20, n)
    m30 = rng.gamma(2, 15, n)
    m7 = m30 * rng.lognormal(0, 0.3, n)
    g30 = rng.gamma(2, 0.6, n)
    g7 = g30 * rng.lognormal(0, 0.3, n)
    drops = rng.poisson(1.0, n).astype(float)
    tickets = rng.poisson(0.6, n).astype(float)
    bill7 = charge / 30 + rng.normal(0, 0.3, n)
    numeric = {
        "tenure_months": tenure,
        "monthly_charge": charge,
        "minutes_mean_7d": m7,
        "minutes_mean_30d": m30,
        "data_gb_mean_7d": g7,
        "data_gb_mean_30d": g30,
        "minutes_trend": m7 - m30,
        "data_gb_trend": g7 - g30,
        "dropped_calls_sum_7d": drops,
        "dropped_call_rate_7d": drops / (1 + m7),
        "support_tickets_sum_30d": tickets,
        "bill_mean_7d": bill7,
        "bill_change_7d_30d": bill7 - charge / 30,
        "active_days_30d": rng.binomial(30, 0.85, n).astype(float),
    }
    for k, v in numeric.items():
        df[k] = v
    if changed:
        z = (
            -2.6
            + 2.0 * (df["plan"] == "premium")
            + 0.05 * (charge - 55)
            - 0.9 * tickets
            + 0.04 * (m7 - m30)
        )
    else:
        contract = df["contract"].map({"month_to_month": 1.2, "one_year": 0.0, "two_year": -1.2})
        z = (
            -2.2
            + contract
            - 0.5 * np.log1p(tenure)
            + 0.9 * tickets
            + 0.4 * drops
            - 0.04 * (m7 - m30)
            + 0.02 * (charge - 55)
        )
    y = (rng.random(n) < 1 / (1 + np.exp(-z.to_numpy()))).astype("int64")
    for col in ("minutes_trend", "data_gb_trend", "dropped_call_rate_7d"):
        df.loc[rng.random(n) < 0.05, col] = np.nan
    stamps = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(rng.integers(0, days, n), unit="D")
    df.insert(0, "customer_id", [f"C{seed:03d}{i:07d}" for i in range(n)])
    df.insert(1, "event_timestamp", stamps)
    df["features_asof"] = stamps - pd.Timedelta(hours=1)
    df["churned"] = y
    return df


def test_schema_rejects_overlaps() -> None:
    with pytest.raises(ValueError, match="label"):
        FeatureSchema(categorical=("a",), numeric=("y",), label="y")
    with pytest.raises(ValueError, match="repeat"):
        FeatureSchema(categorical=("a",), numeric=("a",), label="y")


def test_fit_learns_the_signal_and_is_calibrated(
    model: object, splits: dict[str, pd.DataFrame]
) -> None:
    metrics = evaluate(model, splits["holdout"], SCHEMA)
    assert metrics["roc_auc"] > 0.74  # the true hazard scores about 0.83
    assert 0 < metrics["pr_auc"] < 1
    assert metrics["n"] == 2500
    assert metrics["positives"] == int(splits["holdout"]["churned"].sum())
    # balanced class weights inflate the raw scores; calibration brings them back
    scores = predict_scores(model, splits["holdout"], SCHEMA)
    assert abs(scores.mean() - splits["holdout"]["churned"].mean()) < 0.03
    assert metrics["ece"] < 0.05
    assert metrics["brier"] < splits["holdout"]["churned"].mean()  # beats predicting 0
    assert boosting_iterations(model) < 500  # early stopping kicked in
    curve = metrics["calibration_curve"]
    assert len(curve) == 10 and sum(r["count"] for r in curve) == 2500


def test_evaluate_agrees_with_sklearn(model: object, splits: dict[str, pd.DataFrame]) -> None:
    holdout = splits["holdout"]
    scores = predict_scores(model, holdout, SCHEMA)
    metrics = evaluate(model, holdout, SCHEMA)
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(holdout["churned"], scores))
    assert metrics["pr_auc"] == pytest.approx(average_precision_score(holdout["churned"], scores))
    flat = flat_metrics({"holdout": metrics})
    assert flat["holdout_roc_auc"] == metrics["roc_auc"]
    assert "holdout_calibration_curve" not in flat


def test_single_class_metrics_are_nan_and_training_refuses(
    model: object, splits: dict[str, pd.DataFrame]
) -> None:
    negatives = splits["holdout"][splits["holdout"]["churned"] == 0]
    metrics = evaluate(model, negatives, SCHEMA)
    assert math.isnan(metrics["roc_auc"]) and metrics["positives"] == 0
    assert "holdout_roc_auc" not in flat_metrics({"holdout": metrics})
    with pytest.raises(ValueError, match="both classes"):
        fit(negatives, splits["validation"], SCHEMA, seed=0)


def test_unseen_categories_and_missing_values_score(
    model: object, splits: dict[str, pd.DataFrame]
) -> None:
    rows = splits["holdout"].head(6).copy()
    rows["plan"] = ["galaxy_5g", None, np.nan, "basic", "premium", "unlimited"]
    rows["region"] = pd.Series(["atlantis", None, "north", "south", "east", "west"], dtype="string")
    rows["contract"] = rows["contract"].astype("category")
    rows["tenure_months"] = np.nan
    scores = predict_scores(model, rows, SCHEMA)
    assert scores.shape == (6,)
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
    # extra columns, another column order, and the raw model call work too
    direct = model.predict_proba(model_input(rows, SCHEMA)[list(SCHEMA.features)[::-1]])  # type: ignore[attr-defined]
    assert np.allclose(direct[:, 1], scores)


def test_model_input_canonical_types() -> None:
    frame = pd.DataFrame(
        {
            "c": pd.Series(["a", None, "b"], dtype="string"),
            "k": pd.Series([1, 2, None], dtype="Int64"),
            "x": ["1.5", None, "oops"],
            "extra": [1, 2, 3],
        }
    )
    out = model_input(frame, FeatureSchema(categorical=("c", "k"), numeric=("x",), label="y"))
    assert list(out.columns) == ["c", "k", "x"]
    assert out["c"].dtype == object and out["c"].iloc[0] == "a" and pd.isna(out["c"].iloc[1])
    assert out["k"].tolist()[:2] == ["1", "2"] and pd.isna(out["k"].iloc[2])
    assert out["x"].dtype == np.float64 and out["x"].iloc[0] == 1.5 and out["x"].isna().sum() == 2
    with pytest.raises(KeyError, match="missing"):
        model_input(frame, FeatureSchema(categorical=("nope",), numeric=(), label="y"))


def test_model_input_casts_a_numeric_block_as_each_column_alone() -> None:
    """The one-cast path for frames whose numeric inputs are all numbers (the online read)
    gives what casting each column alone gives: NaN for missing, 1.0/0.0 for booleans."""
    frame = pd.DataFrame(
        {
            "i": np.array([1, -2, 3], dtype=np.int64),
            "n": pd.Series([4, None, 6], dtype="Int64"),
            "b": [True, False, True],
            "nb": pd.Series([True, None, False], dtype="boolean"),
            "f": np.array([0.5, np.nan, 2.25], dtype=np.float32),
            "c": ["x", "y", None],
        }
    )
    schema = FeatureSchema(categorical=("c",), numeric=("i", "n", "b", "nb", "f"), label="y")
    out = model_input(frame, schema)
    for col in schema.numeric:
        alone = pd.to_numeric(frame[col], errors="coerce").astype("float64")
        assert out[col].dtype == np.float64
        np.testing.assert_array_equal(out[col].to_numpy(), alone.to_numpy(), err_msg=col)
    assert out["n"].isna().tolist() == [False, True, False]
    assert out["b"].tolist() == [1.0, 0.0, 1.0]
    assert list(out.columns) == ["c", "i", "n", "b", "nb", "f"]


def test_ece_and_calibration_table() -> None:
    y = np.array([0, 0, 1, 1] * 25)
    perfect = np.where(y == 1, 1.0, 0.0)
    assert expected_calibration_error(y, perfect) == 0.0
    constant = np.full(100, 0.9)
    # every score ties, so a single bin: |0.9 - 0.5|
    assert expected_calibration_error(y, constant) == pytest.approx(0.4)
    rows = calibration_table(y, np.linspace(0, 1, 100))
    assert len(rows) == 10 and all(r["count"] == 10 for r in rows)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0, 1), min_size=1, max_size=200),
    st.integers(0, 2**32 - 1),
)
def test_ece_is_bounded(scores: list[float], seed: int) -> None:
    y = np.random.default_rng(seed).integers(0, 2, len(scores))
    ece = expected_calibration_error(y, np.array(scores))
    assert 0.0 <= ece <= 1.0


def test_the_seed_reaches_the_fit(model: object, splits: dict[str, pd.DataFrame]) -> None:
    """The fit's one random part (which columns each split may use) follows ``seed``: the same
    seed gives the same probabilities bit for bit, another seed a different model."""
    holdout = splits["holdout"]
    same = fit(splits["train"], splits["validation"], SCHEMA, seed=0)
    other = fit(splits["train"], splits["validation"], SCHEMA, seed=1)
    base = predict_scores(model, holdout, SCHEMA)
    np.testing.assert_array_equal(predict_scores(same, holdout, SCHEMA), base)
    moved = np.abs(predict_scores(other, holdout, SCHEMA) - base)
    # not a rounding difference: most rows get another probability
    assert (moved > 1e-9).mean() > 0.5, moved.max()
    # both are still models of the same signal
    assert evaluate(other, holdout, SCHEMA)["roc_auc"] > 0.74


# ---- a use case's own estimator -----------------------------------------------------------------


def test_a_named_estimator_is_built_with_the_seed_and_the_columns() -> None:
    from sklearn.linear_model import LogisticRegression

    pipeline = build_estimator("tests.support.estimators:logistic", SCHEMA, seed=3)
    assert isinstance(pipeline[-1], LogisticRegression)
    assert pipeline[-1].random_state == 3
    columns = {c for _, _, cols in pipeline.named_steps["prep"].transformers for c in cols}
    assert columns == set(SCHEMA.features)


@pytest.mark.parametrize(
    ("estimator", "why"),
    [
        ("tests.support.no_such_module:logistic", "cannot import tests.support.no_such_module"),
        ("tests.support.estimators:nope", "has no function 'nope'"),
        ("tests.support.estimators:not_an_estimator", "str .* has no fit and no predict_proba"),
        ("tests.support.estimators:wrong_arguments", "calling it with seed, categorical"),
        ("tests.support.estimators", "must look like 'module:function'"),
    ],
)
def test_a_bad_estimator_fails_before_training_naming_the_field(estimator: str, why: str) -> None:
    frame = make_frame(50, 1)
    with pytest.raises(ValueError, match=rf"^model\.estimator '{re.escape(estimator)}'.*{why}"):
        fit(frame, frame, SCHEMA, seed=0, estimator=estimator)


# ---- a regression target ---------------------------------------------------------------------------

SPEND = replace(SCHEMA, label="spend_30d", regression=True)


def spend_frame(n: int, seed: int) -> pd.DataFrame:
    """The synthetic rows with a numeric outcome: spend grows with the monthly charge and the
    minutes, more on the premium plan, with noise of sd 5."""
    frame = make_frame(n, seed)
    rng = np.random.default_rng(seed + 100)
    spend = (
        0.8 * frame["monthly_charge"]
        + 0.3 * frame["minutes_mean_30d"]
        + np.where(frame["plan"] == "premium", 20.0, 0.0)
        + rng.normal(0, 5, n)
    )
    return frame.drop(columns=["churned"]).assign(spend_30d=spend.clip(lower=0))


def test_a_regression_target_trains_a_regressor_measured_by_its_error() -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error

    train, validation, holdout = spend_frame(3000, 1), spend_frame(800, 2), spend_frame(800, 3)
    model = fit(train, validation, SPEND, seed=0)
    assert isinstance(model.named_steps["clf"], HistGradientBoostingRegressor)
    assert not hasattr(model, "predict_proba")
    assert 1 <= boosting_iterations(model) < 500  # early-stopped on the validation rows
    predicted = predict_scores(model, holdout, SPEND)
    y = holdout["spend_30d"].to_numpy()
    metrics = evaluate(model, holdout, SPEND)
    assert tuple(k for k in metrics) == metric_names(SPEND)
    assert metrics["rmse"] == pytest.approx(root_mean_squared_error(y, predicted))
    assert metrics["mae"] == pytest.approx(mean_absolute_error(y, predicted))
    assert metrics["bias"] == pytest.approx(predicted.mean() - y.mean())
    # the noise has sd 5 and the outcome sd ~20: the model is near the noise, far from the mean
    assert 5.0 <= metrics["rmse"] < 7.5 and float(np.std(y)) > 15
    again = fit(train, validation, SPEND, seed=0)
    assert np.array_equal(predict_scores(again, holdout, SPEND), predicted)  # one seed, one model


def test_regression_labels_must_be_finite_numbers_that_vary() -> None:
    frame = spend_frame(50, 4)
    assert labels(frame, SPEND).dtype == np.float64
    with pytest.raises(ValueError, match="finite numbers"):
        labels(frame.assign(spend_30d=np.inf), SPEND)
    with pytest.raises(ValueError, match="missing values"):
        labels(frame.assign(spend_30d=np.nan), SPEND)
    with pytest.raises(ValueError, match="outcomes that vary"):
        fit(frame.assign(spend_30d=3.0), frame, SPEND, seed=0)


def test_rows_scored_in_blocks_score_as_one_pass(model: object) -> None:
    """Above SCORE_BLOCK_ROWS rows, scoring goes block by block: the scores are those of one
    pass over every row, bit for bit (mixed, missing and unseen categories across blocks)."""
    from tasks.model import SCORE_BLOCK_ROWS

    rows = make_frame(2 * SCORE_BLOCK_ROWS + 17, seed=5)
    rows.loc[rows.index[:50], "plan"] = None
    rows.loc[rows.index[-3:], "plan"] = 7  # a number in a text column, in the last block only
    rows.loc[rows.index[SCORE_BLOCK_ROWS], "region"] = "atlantis"
    one_pass = model.predict_proba(model_input(rows, SCHEMA))[:, 1]  # type: ignore[attr-defined]
    blocked = predict_scores(model, rows, SCHEMA)
    assert blocked.shape == (len(rows),)
    np.testing.assert_array_equal(blocked, one_pass)
    assert len(np.unique(blocked)) > len(rows) // 2  # the rows were scored, not filled


# ---- scoring a few rows fast --------------------------------------------------------------------


def _awkward_rows(holdout: pd.DataFrame) -> pd.DataFrame:
    """Holdout rows as a store may answer them: unseen and missing categories, a category
    dtype, nullable text and numbers, a number in a text column, NaN numbers."""
    rows = holdout.head(40).copy().reset_index(drop=True)
    rows["plan"] = rows["plan"].astype(object)
    rows.loc[0, "plan"] = "galaxy_5g"
    rows.loc[1, "plan"] = None
    rows.loc[2, "plan"] = 5  # a number in a text column: scored as the text "5"
    rows["region"] = rows["region"].astype("string")
    rows.loc[3, "region"] = pd.NA
    rows["contract"] = rows["contract"].astype("category")
    rows["tenure_months"] = rows["tenure_months"].astype("Float64")
    rows.loc[4, "tenure_months"] = pd.NA
    rows.loc[5, "monthly_charge"] = np.nan
    return rows


def test_the_fast_scorer_scores_as_predict_scores(
    model: object, splits: dict[str, pd.DataFrame]
) -> None:
    """The online service's path gives predict_scores' probabilities bit for bit, for one row,
    a few and a block, whatever types the store answers in."""
    from tasks.model import fast_scorer

    score = fast_scorer(model, SCHEMA)
    assert score is not None
    rows = _awkward_rows(splits["holdout"])
    holdout = splits["holdout"]
    assert len(holdout) > WALK_ROWS  # through scikit-learn's trees as well as the walker
    for frame in (rows.iloc[:1], rows.iloc[1:2], rows.iloc[:7], rows, holdout):
        expected = predict_scores(model, frame, SCHEMA)
        np.testing.assert_array_equal(score(frame), expected)
        # as columns (an online read), plain values or not (pd.NA, numbers as text, ...)
        np.testing.assert_array_equal(score({str(c): frame[c].tolist() for c in frame}), expected)
    for walk_rows in (0, len(holdout)):
        np.testing.assert_array_equal(
            score(holdout, walk_rows=walk_rows), predict_scores(model, holdout, SCHEMA)
        )
    assert len(np.unique(score(rows))) > 30  # the rows were scored, not filled

    # a category that is not text goes through pandas, as the frame pandas would make of it
    odd = {str(c): holdout[c].iloc[:3].tolist() for c in holdout}
    odd[SCHEMA.categorical[0]] = [7, None, "x"]
    np.testing.assert_array_equal(score(odd), predict_scores(model, pd.DataFrame(odd), SCHEMA))


@pytest.mark.parametrize("loss", ["log_loss", "squared_error", "poisson"])
def test_the_tree_walker_sums_the_trees_as_scikit_learn(loss: str) -> None:
    """Every tree at once, the same leaves and the same sums bit for bit, for values on the
    thresholds themselves, missing values and values no training row had."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    from tasks.model import tree_walker

    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 6))
    x[rng.random(x.shape) < 0.1] = np.nan
    signal = np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1]) ** 2
    if loss == "log_loss":
        clf = HistGradientBoostingClassifier(max_iter=80, random_state=0)
        clf.fit(x, (signal + rng.normal(size=len(x)) > 0.5).astype(int))
    else:
        clf = HistGradientBoostingRegressor(loss=loss, max_iter=80, random_state=0)
        clf.fit(x, np.exp(signal / 3) + rng.random(len(x)))
    walk = tree_walker(clf)
    assert walk is not None
    thresholds = np.concatenate([p[0].nodes["num_threshold"] for p in clf._predictors])
    probe = rng.normal(size=(400, 6)) * 3
    probe[rng.random(probe.shape) < 0.2] = np.nan
    probe[:200, :] = rng.choice(thresholds, size=(200, 6))  # on the splits
    for rows in (probe[:1], probe[:5], probe):
        expected = clf._raw_predict(rows).ravel()
        np.testing.assert_array_equal(walk(rows), expected)
    assert len(np.unique(walk(probe))) > 100


def test_there_is_no_tree_walker_for_native_categories_or_several_classes() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    from tasks.model import tree_walker

    rng = np.random.default_rng(4)
    x = np.column_stack([rng.integers(0, 5, 600), rng.normal(size=600)]).astype(float)
    native = HistGradientBoostingClassifier(max_iter=20, categorical_features=[0])
    native.fit(x, (x[:, 0] % 2 == 0).astype(int))
    assert tree_walker(native) is None
    three = HistGradientBoostingClassifier(max_iter=20).fit(x, x[:, 0].astype(int) % 3)
    assert tree_walker(three) is None
    assert tree_walker(object()) is None


def test_the_fast_scorer_of_a_regressor_and_where_there_is_none() -> None:
    """A regression model gets one too; a use case's own estimator does not (it is scored with
    predict_scores), nor does an encoder with an option the fast path does not implement."""
    from tasks.model import fast_scorer

    train, validation, holdout = spend_frame(1500, 1), spend_frame(400, 2), spend_frame(60, 3)
    regressor = fit(train, validation, SPEND, seed=0)
    score = fast_scorer(regressor, SPEND)
    assert score is not None
    np.testing.assert_array_equal(score(holdout), predict_scores(regressor, holdout, SPEND))

    frame = make_frame(600, 1)
    custom = fit(frame, frame, SCHEMA, seed=0, estimator="tests.support.estimators:logistic")
    assert fast_scorer(custom, SCHEMA) is None
    assert fast_scorer(regressor, SCHEMA) is None  # a classifier schema on a regressor

    drops = fit(train, validation, SPEND, seed=0)
    drops.named_steps["prep"].transformers_[0][1].drop = "first"  # an option not implemented
    assert fast_scorer(drops, SPEND) is None


def test_a_fast_scorer_that_misses_its_probe_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Were scikit-learn to score differently from the fast path (a new version), the probe
    catches it: no fast scorer, the service scores with predict_scores."""
    import tasks.model

    train, validation = spend_frame(800, 1), spend_frame(300, 2)
    regressor = fit(train, validation, SPEND, seed=0)
    assert tasks.model.fast_scorer(regressor, SPEND) is not None
    shifted = tasks.model.predict_scores

    def other(model: object, frame: pd.DataFrame, schema: FeatureSchema) -> np.ndarray:
        scores = shifted(model, frame, schema)
        scores[-1] = np.nextafter(scores[-1], np.inf)  # one probe row, one ulp
        return scores

    monkeypatch.setattr(tasks.model, "predict_scores", other)
    assert tasks.model.fast_scorer(regressor, SPEND) is None
