"""The promotion gate's decision (``tasks.gate``): pure, on holdout scores alone."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from tasks.gate import (
    CandidateInfo,
    _Ranked,
    _resample_counts,
    _weighted_metric,
    decide,
    decision_report,
    metric_value,
    sanity_checks,
)

ALL_OK = {"signature_compatible": True, "same_feature_service": True, "probabilities_valid": True}


# ---- the gate (pure) ----------------------------------------------------------------------------


def scored(n: int, seed: int, strength: float, prevalence: float = 0.2) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(np.int64)
    y[:2] = [0, 1]
    noise = rng.normal(0, 1, n)
    champion = 1 / (1 + np.exp(-(strength * y + noise - 1.5)))
    better = 1 / (1 + np.exp(-(2.5 * strength * y + 0.6 * noise - 1.5)))
    return y, champion, better


def gate_kwargs(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "margin": 0.0,
        "floor": 0.65,
        "metric": "roc_auc",
        "samples": 200,
        "confidence": 0.95,
        "calibration_tolerance": 1.0,
        "seed": 0,
        "sanity": ALL_OK,
        "champion_version": "1",
    }
    kwargs.update(overrides)
    return kwargs


@st.composite
def worse_challengers(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Champion scores and a challenger that only ever hurts: positives pushed down, negatives
    pushed up (so no pair of rows is ranked better, on any resample)."""
    n = draw(st.integers(20, 400))
    seed = draw(st.integers(0, 2**32 - 1))
    strength = draw(st.floats(0.0, 3.0))
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < draw(st.floats(0.05, 0.6))).astype(np.int64)
    y[:2] = [0, 1]
    champion = 1 / (1 + np.exp(-(strength * y + rng.normal(0, 1, n))))
    if draw(st.booleans()):
        champion = np.round(champion, 2)  # ties
    hurt = rng.random(n) < draw(st.floats(0.0, 1.0))
    size = np.abs(rng.normal(0, draw(st.floats(0.0, 0.5)), n))
    direction = np.where(y == 1, -1.0, 1.0)
    challenger = np.clip(champion + hurt * size * direction, 0.0, 1.0)
    return y, champion, challenger


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    worse_challengers(),
    st.floats(0.0, 0.05),
    st.floats(0.6, 0.99),
    st.integers(0, 1000),
)
def test_a_worse_challenger_is_never_promoted(
    case: tuple[np.ndarray, np.ndarray, np.ndarray], margin: float, confidence: float, seed: int
) -> None:
    y, champion, challenger = case
    decision = decide(
        champion,
        challenger,
        y,
        **gate_kwargs(margin=margin, confidence=confidence, seed=seed, samples=100),
    )
    assert decision.promote is False
    assert decision.delta_ci is None or decision.delta_ci[1] <= 1e-12


def test_a_clearly_better_challenger_is_promoted() -> None:
    y, champion, better = scored(3000, 1, 1.0)
    decision = decide(champion, better, y, **gate_kwargs(samples=400))
    assert decision.promote, decision.reason
    assert decision.delta_ci is not None and decision.delta_ci[0] > 0
    assert decision.samples == 400 and decision.compared_with == "1"
    assert decision.challenger_value == pytest.approx(roc_auc_score(y, better))
    assert decision.champion_value == pytest.approx(roc_auc_score(y, champion))
    # the same comparison on PR AUC
    pr = decide(champion, better, y, **gate_kwargs(metric="pr_auc"))
    assert pr.promote and pr.challenger_value == pytest.approx(average_precision_score(y, better))
    # a margin larger than the improvement holds it back
    assert not decide(champion, better, y, **gate_kwargs(margin=0.5)).promote


def test_identical_scores_are_not_an_improvement() -> None:
    y, champion, _ = scored(2000, 2, 1.0)
    decision = decide(champion, champion.copy(), y, **gate_kwargs())
    assert not decision.promote and decision.delta_ci == (0.0, 0.0)


def test_the_floor_decides_without_a_champion() -> None:
    y, _, better = scored(2000, 3, 1.0)
    auc = roc_auc_score(y, better)
    ok = decide(None, better, y, **gate_kwargs(floor=auc - 0.01, champion_version=None))
    assert ok.promote and ok.delta_ci is None and ok.champion_value is None
    assert "floor" in ok.reason
    low = decide(None, better, y, **gate_kwargs(floor=auc + 0.01, champion_version=None))
    assert not low.promote and "below the floor" in low.reason
    broken_champion = np.full_like(better, np.nan)
    fallback = decide(broken_champion, better, y, **gate_kwargs(floor=auc - 0.01))
    assert fallback.promote and "unusable" in fallback.reason
    assert fallback.sanity["champion_scores_valid"] is False


def test_calibration_and_sanity_can_veto_a_better_challenger() -> None:
    y, champion, better = scored(3000, 4, 1.0)
    squashed = better**0.1  # same ranking (so the same AUC), probabilities far too high
    worse_calibrated = decide(champion, squashed, y, **gate_kwargs(calibration_tolerance=0.03))
    assert worse_calibrated.delta_ci is not None and worse_calibrated.delta_ci[0] > 0
    assert not worse_calibrated.promote and "calibration" in worse_calibrated.reason
    assert worse_calibrated.challenger_ece > worse_calibrated.champion_ece  # type: ignore[operator]

    failed = decide(
        champion, better, y, **gate_kwargs(sanity={**ALL_OK, "same_feature_service": False})
    )
    assert not failed.promote and "same_feature_service" in failed.reason
    nan_scores = better.copy()
    nan_scores[5] = np.nan
    broken = decide(champion, nan_scores, y, **gate_kwargs())
    assert not broken.promote and not broken.sanity["challenger_scores_valid"]
    single = decide(champion, better, np.zeros_like(y), **gate_kwargs())
    assert not single.promote and "single class" in single.reason


def test_sanity_checks() -> None:
    inputs = {"plan": "string", "tenure_months": "double"}
    champion = CandidateInfo("1", inputs, "churn_v1", np.array([0.1, 0.2]))
    good = CandidateInfo("2", dict(inputs), "churn_v1", np.array([0.3, 0.9]))
    assert all(sanity_checks(champion, good).values())
    assert all(sanity_checks(None, good, expected_feature_service="churn_v1").values())
    assert not sanity_checks(None, good, expected_feature_service="churn_v2")[
        "same_feature_service"
    ]
    retyped = replace(good, inputs={"plan": "string", "tenure_months": "long"})
    assert not sanity_checks(champion, retyped)["signature_compatible"]
    renamed = replace(good, inputs={"plan": "string", "tenure": "double"})
    assert not sanity_checks(champion, renamed)["signature_compatible"]
    assert not sanity_checks(champion, replace(good, feature_service="churn_v2"))[
        "same_feature_service"
    ]
    for bad in (np.array([0.2, np.nan]), np.array([0.2, 1.2]), np.array([])):
        assert not sanity_checks(champion, replace(good, scores=bad))["probabilities_valid"]


def test_bootstrap_metrics_match_sklearn() -> None:
    y, champion, better = scored(10_000, 5, 1.0)
    ties = np.round(champion, 2)
    assert metric_value(y, ties, "roc_auc") == pytest.approx(roc_auc_score(y, ties), abs=1e-12)
    assert metric_value(y, ties, "pr_auc") == pytest.approx(
        average_precision_score(y, ties), abs=1e-12
    )
    counts = _resample_counts(np.random.default_rng(0), len(y), 3)
    auc, _ = _weighted_metric(_Ranked.of(y, ties), counts, "roc_auc")
    ap, _ = _weighted_metric(_Ranked.of(y, ties), counts, "pr_auc")
    for i in range(3):  # a weighted resample == the expanded resample
        rows = np.repeat(np.arange(len(y)), counts[i].astype(int))
        assert auc[i] == pytest.approx(roc_auc_score(y[rows], ties[rows]), abs=1e-12)
        assert ap[i] == pytest.approx(average_precision_score(y[rows], ties[rows]), abs=1e-12)
    decision = decide(champion, better, y, **gate_kwargs(samples=400))
    assert decision.samples == 400


def test_decision_report_is_offline_html() -> None:
    y, champion, better = scored(1000, 6, 1.0)
    decision = decide(champion, better, y, **gate_kwargs())
    page = decision_report(
        decision, name="churn", version="2", y=y, champion_scores=champion, challenger_scores=better
    )
    assert page.count('src="data:image/png;base64,') == 2
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "churn v2" in page and decision.metric in page
    bare = decision_report(decision, name="churn", version="2")
    assert "data:image" not in bare and "signature_compatible" in bare


# ---- the gate on a regression target (rmse, mae) -------------------------------------------------


def regressed(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outcomes (weekly counts), a champion off by noise of sd 40 and a challenger of sd 20."""
    rng = np.random.default_rng(seed)
    y = rng.gamma(4.0, 250.0, n)
    return y, y + rng.normal(0, 40, n), y + rng.normal(0, 20, n)


def test_error_metrics_and_their_bootstrap_match_sklearn() -> None:
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error

    y, champion, better = regressed(2000, 1)
    assert metric_value(y, champion, "rmse") == pytest.approx(root_mean_squared_error(y, champion))
    assert metric_value(y, champion, "mae") == pytest.approx(mean_absolute_error(y, champion))
    from tasks.gate import bootstrap_deltas

    deltas = bootstrap_deltas(champion, better, y, metric="rmse", samples=50, seed=3)
    counts = _resample_counts(np.random.default_rng(3), len(y), 50)
    for i in (0, 49):  # the same resamples, expanded: the champion's RMSE minus the challenger's
        rows = np.repeat(np.arange(len(y)), counts[i].astype(int))
        expected = root_mean_squared_error(y[rows], champion[rows]) - root_mean_squared_error(
            y[rows], better[rows]
        )
        assert deltas[i] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("metric", ["rmse", "mae"])
def test_a_smaller_error_beyond_noise_is_promoted_and_a_larger_one_never(metric: str) -> None:
    y, champion, better = regressed(1500, 2)
    won = decide(champion, better, y, **gate_kwargs(metric=metric, sanity={}))
    assert won.promote, won.reason
    assert won.delta is not None and won.champion_value is not None
    assert won.delta == pytest.approx(won.champion_value - won.challenger_value)
    assert won.delta > 0 and won.delta_ci is not None and won.delta_ci[0] > 0
    assert won.samples == 200 and math.isnan(won.challenger_ece)
    lost = decide(better, champion, y, **gate_kwargs(metric=metric, sanity={}))
    assert not lost.promote and "not better beyond noise" in lost.reason
    assert lost.delta_ci is not None and lost.delta_ci[1] < 0
    same = decide(champion, champion.copy(), y, **gate_kwargs(metric=metric, sanity={}))
    assert not same.promote and same.delta_ci == (0.0, 0.0)
    # a margin in the label's units: 40 → 20 noise cannot buy a decrease of 1,000
    assert not decide(champion, better, y, **gate_kwargs(metric=metric, margin=1000.0)).promote


def test_without_a_champion_a_regression_must_show_skill_over_the_mean() -> None:
    y, _, better = regressed(1000, 4)
    constant = float(np.sqrt(np.mean((y - y.mean()) ** 2)))
    skill = 1 - metric_value(y, better, "rmse") / constant
    assert 0.9 < skill < 1
    ok = decide(None, better, y, **gate_kwargs(metric="rmse", floor=0.9, champion_version=None))
    assert ok.promote and f"skill {skill:.4f}" in ok.reason
    flat = np.full(len(y), float(y.mean()))  # the mean itself: no skill at all
    none = decide(None, flat, y, **gate_kwargs(metric="rmse", floor=0.0, champion_version=None))
    assert none.promote  # skill 0 reaches a floor of 0 ...
    assert not decide(None, flat, y, **gate_kwargs(metric="rmse", floor=0.01)).promote
    nan = better.copy()
    nan[3] = np.nan
    broken = decide(None, nan, y, **gate_kwargs(metric="rmse", floor=0.0, champion_version=None))
    assert not broken.promote and "challenger_scores_valid" in broken.reason
    constant_y = decide(None, better, np.full(len(y), 5.0), **gate_kwargs(metric="rmse"))
    assert not constant_y.promote and "do not vary" in constant_y.reason


def test_a_regression_decision_report_names_its_metric() -> None:
    y, champion, better = regressed(500, 5)
    decision = decide(champion, better, y, **gate_kwargs(metric="rmse", sanity={}))
    page = decision_report(
        decision,
        name="births",
        version="2",
        y=y,
        champion_scores=champion,
        challenger_scores=better,
    )
    assert "challenger rmse" in page and "data:image" not in page  # no ROC or calibration curve
