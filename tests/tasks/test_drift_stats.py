from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tasks.drift_stats import (
    auc_interval,
    bin_counts,
    bin_proportions,
    categorical_drift,
    category_shares,
    drift_threshold,
    expected_auc,
    leave_one_out_psi,
    null_low,
    null_threshold,
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


def _reference(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[float], list[float]]:
    sample = rng.normal(size=n)
    edges = [-np.inf, *np.quantile(sample, np.linspace(0.1, 0.9, 9)).tolist(), np.inf]
    return sample, edges, bin_proportions(sample, edges)


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


# ---- the empirical null -------------------------------------------------------------------------


def test_leave_one_out_psi_compares_each_window_with_all_the_others() -> None:
    counts = np.array([[10, 30], [20, 20], [0, 0], [35, 5]])
    out = leave_one_out_psi(counts)
    assert len(out) == 4
    rest0 = np.array([55, 25]) / 80
    assert out[0] == pytest.approx(psi(rest0, np.array([0.25, 0.75])))
    rest3 = np.array([30, 50]) / 80
    assert out[3] == pytest.approx(psi(rest3, np.array([35, 5]) / 40))
    assert math.isnan(out[2])  # a window without rows has no PSI
    assert math.isnan(leave_one_out_psi(np.array([[3, 4], [0, 0]]))[0])  # nothing to compare to


def test_null_threshold_uses_the_quantile_only_with_enough_windows() -> None:
    # None entries (a stored JSON null) count as missing
    few = [0.01, 0.05, 0.02, None, math.nan]
    # 3 values < 1 / (1 - 0.99): the largest
    assert null_threshold(few, 0.99) == 0.05
    assert null_low(few, 0.99) == 0.01
    many = np.linspace(0.0, 1.0, 1001).tolist()
    assert null_threshold(many, 0.9) == pytest.approx(0.9)
    assert null_low(many, 0.9) == pytest.approx(0.1)
    assert null_threshold(many, 1.0) == 1.0
    assert null_threshold([], 0.99) is None
    assert null_threshold([None], 0.99) is None


def test_threshold_names_its_source() -> None:
    sampling = stats.chi2.ppf(0.99, 9) * (1 / 1000 + 1 / 500)
    assert drift_threshold(1000, 500, 10, alpha=0.01, psi_min=0.0) == (
        pytest.approx(sampling),
        "sampling",
    )
    assert drift_threshold(1000, 500, 10, alpha=0.01, psi_min=0.0, null=[0.2, 0.5, 0.3]) == (
        0.5,
        "empirical",
    )
    tiny = [sampling / 10] * 5  # the sampling bound stays the floor
    assert drift_threshold(1000, 500, 10, alpha=0.01, psi_min=0.0, null=tiny)[1] == "sampling"
    assert drift_threshold(1000, 500, 10, alpha=0.01, psi_min=0.7, null=[0.5]) == (0.7, "psi_min")
    assert drift_threshold(0, 500, 10, alpha=0.01, psi_min=0.1, null=[0.5])[0] == math.inf


def _shared_context_day(rng: np.random.Generator, rows: int, shift: float = 0.0) -> np.ndarray:
    """One day of a column with a shared part: a per-day shock all rows of the day share (sd
    0.7, e.g. the weather at a location) plus each row's own variation (sd 1)."""
    return rng.normal(shift, 0.7) + rng.normal(0.0, 1.0, rows)


def test_empirical_null_quiets_a_shared_context_column_and_still_flags_a_real_shift() -> None:
    rng = np.random.default_rng(5)
    days, rows, alpha = 30, 400, 0.01 / 20
    train = [_shared_context_day(rng, rows) for _ in range(days)]
    pooled = np.concatenate(train)
    edges = [-np.inf, *np.unique(np.quantile(pooled, np.linspace(0.1, 0.9, 9))).tolist(), np.inf]
    shares = bin_proportions(pooled, edges)
    null = leave_one_out_psi(np.vstack([bin_counts(day, edges) for day in train]))
    assert len(null) == days

    def check(values: np.ndarray, with_null: bool) -> bool:
        return numeric_drift(
            "temperature",
            values,
            edges=edges,
            reference_shares=shares,
            n_reference=len(pooled),
            alpha=alpha,
            psi_min=0.1,
            null=null if with_null else None,
            null_quantile=0.99,
        ).drifted

    stable = [_shared_context_day(rng, rows) for _ in range(100)]
    by_sampling = np.mean([check(d, with_null=False) for d in stable])
    by_null = np.mean([check(d, with_null=True) for d in stable])
    # the i.i.d. bound (and psi_min) alarm on most ordinary days ...
    assert by_sampling >= 0.7
    # ... the null's largest of 30 windows is exceeded by about 1 / 31 of them
    assert by_null <= 0.1
    shifted = numeric_drift(
        "temperature",
        _shared_context_day(rng, rows, shift=4.0),
        edges=edges,
        reference_shares=shares,
        n_reference=len(pooled),
        alpha=alpha,
        psi_min=0.1,
        null=null,
    )
    assert shifted.drifted and shifted.threshold_source == "empirical"
    assert shifted.null_windows == days


# ---- estimated and realised performance -----------------------------------------------------------


def _brute_force_expected_auc(p: np.ndarray, s: np.ndarray) -> float:
    pos, neg = p[:, None], (1 - p)[None, :]
    above = (s[:, None] > s[None, :]) + 0.5 * (s[:, None] == s[None, :])
    pair = pos * neg
    np.fill_diagonal(pair, 0.0)
    return float((pair * above).sum() / pair.sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expected_auc_matches_the_pairwise_sum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = np.round(rng.beta(1.0, 4.0, 400), 2)  # rounded: many ties
    assert expected_auc(p) == pytest.approx(_brute_force_expected_auc(p, p), rel=1e-12)
    scores = np.round(p + rng.normal(0, 0.1, len(p)), 1)  # another ranking, with ties
    assert expected_auc(p, scores) == pytest.approx(_brute_force_expected_auc(p, scores), rel=1e-12)
    assert math.isnan(expected_auc([0.3]))
    assert math.isnan(expected_auc([0.0, 0.0, 0.0]))  # no positive weight


def test_expected_auc_agrees_with_the_auc_of_labels_drawn_from_the_probabilities() -> None:
    rng = np.random.default_rng(11)
    p = rng.beta(0.8, 4.0, 2000)
    expected = expected_auc(p)
    realised, covered = [], 0
    for _ in range(200):
        y = (rng.random(len(p)) < p).astype(int)
        auc, low, high = auc_interval(y, p)
        realised.append(auc)
        covered += low <= expected <= high
    # 200 draws: the mean's standard error is about 0.001
    assert np.mean(realised) == pytest.approx(expected, abs=0.005)
    assert covered / 200 >= 0.9  # the 95 % interval covers the expectation
    # a model that ranks at random promises 0.5
    assert expected_auc(p, rng.random(len(p))) == pytest.approx(0.5, abs=0.03)


def test_auc_interval_is_hanley_mcneil() -> None:
    from sklearn.metrics import roc_auc_score

    y = np.array([0, 0, 1, 1, 0, 1, 0, 0, 1, 0])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.7, 0.5, 0.3, 0.9, 0.6])
    auc, low, high = auc_interval(y, s)
    a = roc_auc_score(y, s)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = math.sqrt((a * (1 - a) + 3 * (q1 - a * a) + 5 * (q2 - a * a)) / (4 * 6))
    assert auc == pytest.approx(a)
    assert low == pytest.approx(max(0.0, a - 1.959964 * se), abs=1e-5)
    assert high == pytest.approx(min(1.0, a + 1.959964 * se), abs=1e-5)
    with pytest.raises(ValueError, match="both classes"):
        auc_interval([1, 1, 1], [0.1, 0.2, 0.3])
