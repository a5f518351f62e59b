from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tasks.drift_stats import (
    bin_proportions,
    categorical_drift,
    category_shares,
    numeric_drift,
    psi,
    psi_threshold,
)


def test_psi_known_value() -> None:
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert psi(np.array([0.5, 0.5]), np.array([0.25, 0.75])) == pytest.approx(expected)
    assert psi(np.array([0.2, 0.8]), np.array([0.2, 0.8])) == 0.0


def test_psi_is_finite_with_empty_bins() -> None:
    assert math.isfinite(psi(np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.5, 0.5])))


def test_bin_proportions_edges_and_nulls() -> None:
    edges = [-np.inf, 0.0, 1.0, np.inf]  # bins are (a, b]: 0 falls in the first, 1 in the second
    shares = bin_proportions(np.array([-1.0, 0.0, 0.5, 1.0, 5.0, np.nan]), edges)
    assert shares == [0.4, 0.4, 0.2]
    assert bin_proportions(np.array([np.nan]), edges) == [0.0, 0.0, 0.0]


def test_category_shares_appends_new_categories() -> None:
    shares, cats = category_shares(["a", "b", "b", "new", None], ["a", "b", "c"])
    assert cats == ["a", "b", "c", "new"]
    assert shares.tolist() == [0.25, 0.5, 0.0, 0.25]


def test_threshold_matches_the_chi_square_quantile() -> None:
    t = psi_threshold(1000, 500, 10, alpha=0.01, psi_min=0.0)
    assert t == pytest.approx(stats.chi2.ppf(0.99, 9) * (1 / 1000 + 1 / 500))
    assert psi_threshold(10**9, 10**9, 10, 0.01, psi_min=0.1) == 0.1
    assert psi_threshold(0, 10, 10, 0.01, 0.1) == math.inf


def test_chi_square_p_value_agrees_with_scipy() -> None:
    ref = {"a": 0.5, "b": 0.3, "c": 0.2}
    cur = ["a"] * 40 + ["b"] * 40 + ["c"] * 20
    score = categorical_drift(
        "x", cur, reference_shares=ref, n_reference=1000, alpha=0.01, psi_min=0
    )
    expected = stats.chi2_contingency(np.array([[500, 300, 200], [40, 40, 20]]))[1]
    assert score.p_value == pytest.approx(expected)


def _reference(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[float], np.ndarray]:
    sample = rng.normal(size=n)
    edges = [-np.inf, *np.quantile(sample, np.linspace(0.1, 0.9, 9)).tolist(), np.inf]
    return sample, edges, np.asarray(bin_proportions(sample, edges))


def test_false_alarm_rate_on_no_drift_windows_is_within_alpha() -> None:
    """1,000 windows drawn from the reference distribution: alarms stay near alpha."""
    rng = np.random.default_rng(0)
    _, edges, shares = _reference(rng, 5000)
    alpha, windows = 0.01, 1000
    alarms = sum(
        numeric_drift(
            "x",
            rng.normal(size=800),
            edges=edges,
            reference_shares=shares,
            n_reference=5000,
            alpha=alpha,
            psi_min=0.0,
        ).drifted
        for _ in range(windows)
    )
    # binomial bound: with rate <= alpha, more than alpha + 3 sd alarms is implausible
    assert alarms / windows <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / windows)


def test_detects_a_known_shift() -> None:
    rng = np.random.default_rng(1)
    sample, edges, shares = _reference(rng, 5000)
    shifted = numeric_drift(
        "x",
        rng.normal(0.3, 1.0, size=2000),
        edges=edges,
        reference_shares=shares,
        n_reference=5000,
        alpha=0.01,
        psi_min=0.0,
        reference_sample=sample,
    )
    assert shifted.drifted and shifted.psi > shifted.threshold
    assert shifted.p_value is not None and shifted.p_value < 1e-6
    assert shifted.ks == pytest.approx(
        stats.ks_2samp(sample, rng.normal(0.3, 1, 2000)).statistic, abs=0.05
    )


def test_a_new_category_is_drift() -> None:
    ref = {"basic": 0.5, "premium": 0.5}
    cur = ["basic"] * 400 + ["premium"] * 400 + ["flex5g"] * 200
    score = categorical_drift(
        "plan", cur, reference_shares=ref, n_reference=5000, alpha=0.01, psi_min=0.1
    )
    assert score.drifted


def test_practical_floor_ignores_tiny_shifts_in_huge_windows() -> None:
    rng = np.random.default_rng(2)
    _, edges, shares = _reference(rng, 200_000)
    tiny = numeric_drift(
        "x",
        rng.normal(0.02, 1.0, size=200_000),
        edges=edges,
        reference_shares=shares,
        n_reference=200_000,
        alpha=0.01,
        psi_min=0.1,
    )
    assert not tiny.drifted
