"""Drift statistics: PSI against thresholds learned from the training period, and estimated and
realised ROC AUC with their uncertainty.

**PSI** (population stability index) compares the share of rows per bin between a reference
window (bins = the reference's quantile bins for a numeric feature, categories for a categorical)
and a current window:  ``PSI = Σ (q_i − p_i) · ln(q_i / p_i)``.

Sampling bound
    PSI grows with real change, but also with sampling noise when windows are small. If every
    row were drawn independently from one distribution, for ``k`` bins and window sizes ``n``
    (reference) and ``m`` (current), ``PSI ≈ (1/n + 1/m) · X`` with ``X ~ χ²(k − 1)`` (PSI is the
    symmetrised Kullback-Leibler divergence, whose second-order expansion is the chi-square
    statistic). The PSI such a window exceeds with probability ``alpha`` is

        sampling bound = χ²_{1−alpha}(k − 1) · (1/n + 1/m)

    with ``alpha`` split across the checks of one window (Bonferroni).

Empirical null
    Rows are rarely independent. A column shared by many entities (the weather at a location, a
    price list, a calendar flag) takes one value for all of them on a day, so a day's share per
    bin moves far more than the row count allows; rolling aggregates carry one day into the
    next; weekly and seasonal cycles move whole days. The sampling bound then fires on most
    ordinary days and the practical floor ``psi_min`` ends up deciding alone.

    So the reference stores, next to its distributions, how far the reference period's own
    windows lie from the rest of it: the reference rows (the newest feature days up to the
    training's ``as_of``, ``tasks.training.reference_rows``) are cut by day into
    consecutive windows of the check's length (``window_days``) and each window's PSI is taken
    against the reference built from all *other* windows, over the same bins or categories
    (:func:`leave_one_out_psi`). Leaving the window out keeps it from being compared with
    itself: a window inside its own reference would look closer than a new window ever can.
    These PSIs are the natural variation between windows — sampling noise, shared context,
    autocorrelation and weekly cycles included — with no change of the world in them: an
    empirical null.

    A window is flagged when its PSI exceeds

        threshold = max(sampling bound, psi_min, quantile_q(null))

    with ``q = null_quantile`` (:func:`null_threshold`; with fewer than ``1 / (1 − q)`` windows
    the largest value is used). The sampling bound stays the floor, so a training period with
    little variation never makes a threshold smaller than pure sampling noise allows, and
    ``psi_min`` keeps tiny shifts of no consequence from alarming in very large windows. A
    window drawn like the training windows exceeds the null quantile with probability about
    ``1 − q``, and the largest of ``W`` values with probability about ``1 / (W + 1)`` — on
    average over training periods: the largest of a few dozen values is itself noisy, so one
    period's rate may be a few times that. Every score records which of the three set its
    threshold (``threshold_source``). References stored without a null fall back to the
    sampling bound.

    PSI saturates: when a column's rows within one window all share nearly one value (a pure
    context column), each window fills one or two bins and every window's PSI — a real shift's
    too — sits near the ceiling set by ``EPS``. Such a column is best given ``role: context``.

The **KS** statistic (numeric features, against the reference sample stored with the model) and
the **chi-square** test of homogeneity (categoricals) are reported alongside as evidence.

Estimated performance (CBPE)
    With calibrated probabilities ``p_i`` the labels can be taken as ``y_i ~ Bernoulli(p_i)``.
    The ROC AUC to be expected then is the share of (positive, negative) pairs ranked right:

        E[AUC] ≈ Σ_{i≠j} p_i (1 − p_j) · (1[s_i > s_j] + ½ · 1[s_i = s_j]) / Σ_{i≠j} p_i (1 − p_j)

    (:func:`expected_auc`, by sorting: O(n log n)). It needs no labels, so a drop shows as soon
    as the inputs move to where the model is less sure — as long as the model's calibration
    holds, which a change of the relation between inputs and label breaks (the realised AUC
    catches that once labels arrive).

Realised performance
    The ROC AUC of labelled predictions with the Hanley–McNeil standard error
    (:func:`auc_interval`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype

EPS = 1e-4  # share given to an empty bin so that ln(q/p) stays finite

#: where a threshold came from (the largest of the three)
THRESHOLD_SOURCES = ("empirical", "sampling", "psi_min")


@dataclass(frozen=True)
class DriftScore:
    """One feature's drift evidence for one window."""

    feature: str
    kind: str  # "numeric" | "categorical" | "prediction"
    psi: float
    threshold: float
    drifted: bool
    n_reference: int
    n_current: int
    ks: float | None = None
    p_value: float | None = None
    null_share_reference: float = 0.0
    null_share_current: float = 0.0
    #: which bound set the threshold: "empirical" | "sampling" | "psi_min"
    threshold_source: str = "sampling"
    #: training windows behind the empirical null (0: none stored)
    null_windows: int = 0
    #: "vote" (counts towards the verdict) or "context" (reported only)
    role: str = "vote"
    #: the input's vote (relative to the other voting inputs)
    weight: float = 1.0


def bin_proportions(values: np.ndarray | Sequence[float], edges: Sequence[float]) -> list[float]:
    """Share of the non-missing ``values`` in each bin ``edges[i] < x <= edges[i + 1]``.

    The rule reference profiles are built with (``tasks.reference.reference_profile``); all zeros
    when there are no values.
    """
    counts = bin_counts(values, edges)
    total = counts.sum()
    if total == 0:
        return [0.0] * len(counts)
    return [float(c) for c in counts / total]


def bin_counts(values: np.ndarray | Sequence[float], edges: Sequence[float]) -> np.ndarray:
    """Rows of the non-missing ``values`` per bin ``edges[i] < x <= edges[i + 1]``."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    edge_arr = np.asarray(edges, dtype=np.float64)
    nbins = len(edge_arr) - 1
    idx = np.clip(np.searchsorted(edge_arr, arr, side="left") - 1, 0, nbins - 1)
    return np.bincount(idx, minlength=nbins).astype(np.int64)


def category_counts(values: pd.Series | Sequence[object]) -> pd.Series:
    """Rows per category label (``str`` of the value) of the non-missing ``values``.

    Counted in pandas: a column of strings is counted as it is, a categorical column per
    category, anything else after ``str`` of each value (so ``1`` and ``1.0`` stay apart).
    """
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    if isinstance(series.dtype, pd.CategoricalDtype):
        counts = series.value_counts(dropna=True)
        counts = counts[counts > 0]
        if len(counts) == 0:
            return counts.astype("int64")
        counts.index = pd.Index([str(c) for c in counts.index], dtype=object)
        return counts.groupby(level=0, sort=False).sum()
    present = series[series.notna()]
    if present.dtype != object or infer_dtype(present, skipna=False) != "string":
        present = present.astype(object).map(str)
    return present.value_counts(dropna=False)


def category_shares(
    values: pd.Series | Sequence[object], categories: Sequence[str]
) -> tuple[np.ndarray, list[str]]:
    """Shares over ``categories`` plus any new category seen now (appended, sorted)."""
    return _shares(category_counts(values), categories)


def _shares(found: pd.Series, categories: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    new = sorted(set(found.index) - set(categories))
    cats = [*categories, *new]
    c = found.reindex(cats, fill_value=0).to_numpy(dtype="float64")
    return (c / c.sum() if c.sum() else c), cats


def psi(reference: np.ndarray, current: np.ndarray, eps: float = EPS) -> float:
    """Population stability index between two share vectors over the same bins."""
    p = np.clip(np.asarray(reference, dtype="float64"), eps, None)
    q = np.clip(np.asarray(current, dtype="float64"), eps, None)
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum((q - p) * np.log(q / p)))


def leave_one_out_psi(counts: np.ndarray) -> list[float]:
    """The PSI of each window against all the other windows together.

    ``counts``: rows per window (axis 0) and bin or category (axis 1). Window ``w`` is compared
    with the shares of ``total − counts[w]``; a window without rows, or whose complement has
    none, gets NaN. One value per window, in window order.
    """
    table = np.asarray(counts, dtype="float64")
    if table.ndim != 2:
        raise ValueError(f"counts must be windows x bins, got shape {table.shape}")
    total = table.sum(axis=0)
    out = []
    for row in table:
        rest = total - row
        if row.sum() <= 0 or rest.sum() <= 0:
            out.append(math.nan)
        else:
            out.append(psi(rest / rest.sum(), row / row.sum()))
    return out


def psi_threshold(
    n_reference: int, n_current: int, bins: int, alpha: float, psi_min: float
) -> float:
    """The PSI a window of this size exceeds with probability ``alpha`` without drift (≥ psi_min)."""
    from scipy import stats

    if n_reference <= 0 or n_current <= 0 or bins < 2:
        return float("inf")
    chi = float(stats.chi2.ppf(1.0 - alpha, bins - 1))
    return max(psi_min, chi * (1.0 / n_reference + 1.0 / n_current))


def _finite(values: Sequence[float | None] | None) -> np.ndarray:
    arr = np.asarray([] if values is None else list(values), dtype="float64")
    return arr[np.isfinite(arr)]


def null_threshold(null: Sequence[float | None] | None, quantile: float) -> float | None:
    """The ``quantile`` of the null statistics (the largest with ``quantile`` 1.0, or with fewer
    than ``1 / (1 − quantile)`` values); None without finite values."""
    vals = _finite(null)
    if len(vals) == 0:
        return None
    if quantile >= 1.0 or len(vals) * (1.0 - quantile) < 1.0:
        return float(vals.max())
    return float(np.quantile(vals, quantile, method="higher"))


def null_low(null: Sequence[float | None] | None, quantile: float) -> float | None:
    """The lower tail counterpart of :func:`null_threshold`: the ``1 − quantile`` quantile (the
    smallest value when there are too few); None without finite values."""
    vals = _finite(null)
    if len(vals) == 0:
        return None
    if quantile >= 1.0 or len(vals) * (1.0 - quantile) < 1.0:
        return float(vals.min())
    return float(np.quantile(vals, round(1.0 - quantile, 12), method="lower"))


def drift_threshold(
    n_reference: int,
    n_current: int,
    bins: int,
    *,
    alpha: float,
    psi_min: float,
    null: Sequence[float] | None = None,
    quantile: float = 0.99,
) -> tuple[float, str]:
    """(threshold, source): the largest of the sampling bound, ``psi_min`` and the null's
    ``quantile`` (when a null is given); the source names which one it is."""
    sampling = psi_threshold(n_reference, n_current, bins, alpha, 0.0)
    if not math.isfinite(sampling):
        return sampling, "sampling"
    candidates = [("psi_min", float(psi_min)), ("sampling", sampling)]
    empirical = null_threshold(null, quantile)
    if empirical is not None:
        candidates.append(("empirical", empirical))
    source, value = max(candidates, key=lambda c: c[1])
    return value, source


def numeric_drift(
    feature: str,
    current: np.ndarray,
    *,
    edges: Sequence[float],
    reference_shares: Sequence[float],
    n_reference: int,
    alpha: float,
    psi_min: float,
    reference_sample: np.ndarray | Sequence[float] | None = None,
    null_share_reference: float = 0.0,
    kind: str = "numeric",
    null: Sequence[float] | None = None,
    null_quantile: float = 0.99,
) -> DriftScore:
    """PSI of a numeric column (or the predictions) over the reference's bins, its threshold
    (:func:`drift_threshold`) and, given a reference sample, the two-sample KS test."""
    from scipy import stats

    cur = np.asarray(current, dtype="float64")
    nulls = float(np.isnan(cur).mean()) if len(cur) else 0.0
    valid = cur[~np.isnan(cur)]
    shares = np.asarray(bin_proportions(valid, edges))
    value = psi(np.asarray(reference_shares), shares) if len(valid) else float("nan")
    limit, source = drift_threshold(
        n_reference,
        len(valid),
        len(edges) - 1,
        alpha=alpha,
        psi_min=psi_min,
        null=null,
        quantile=null_quantile,
    )
    ks = p = None
    if reference_sample is not None and len(reference_sample) and len(valid):
        res = stats.ks_2samp(np.asarray(reference_sample, dtype="float64"), valid)
        ks, p = float(res.statistic), float(res.pvalue)
    return DriftScore(
        feature=feature,
        kind=kind,
        psi=value,
        threshold=limit,
        drifted=bool(len(valid) and value > limit),
        n_reference=n_reference,
        n_current=len(valid),
        ks=ks,
        p_value=p,
        null_share_reference=null_share_reference,
        null_share_current=nulls,
        threshold_source=source,
        null_windows=len(_finite(null)),
    )


def categorical_drift(
    feature: str,
    current: pd.Series | Sequence[object],
    *,
    reference_shares: dict[str, float],
    n_reference: int,
    alpha: float,
    psi_min: float,
    null: Sequence[float] | None = None,
    null_quantile: float = 0.99,
) -> DriftScore:
    """PSI of a categorical column over the reference's categories (new ones appended), its
    threshold (:func:`drift_threshold`) and the chi-square test of homogeneity."""
    from scipy import stats

    counts = category_counts(current)
    cats = list(reference_shares)
    shares, all_cats = _shares(counts, cats)
    ref = np.array([reference_shares.get(c, 0.0) for c in all_cats])
    n_cur = int(counts.sum())
    value = psi(ref, shares) if n_cur else float("nan")
    limit, source = drift_threshold(
        n_reference,
        n_cur,
        len(all_cats),
        alpha=alpha,
        psi_min=psi_min,
        null=null,
        quantile=null_quantile,
    )
    p_value = None
    if n_cur and n_reference:
        table = np.vstack([ref * n_reference, shares * n_cur])
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] > 1:
            p_value = float(stats.chi2_contingency(table)[1])
    return DriftScore(
        feature=feature,
        kind="categorical",
        psi=value,
        threshold=limit,
        drifted=bool(n_cur and value > limit),
        n_reference=n_reference,
        n_current=n_cur,
        p_value=p_value,
        threshold_source=source,
        null_windows=len(_finite(null)),
    )


# ---- performance ----------------------------------------------------------------------------------


def expected_auc(
    probabilities: np.ndarray | Sequence[float], scores: np.ndarray | Sequence[float] | None = None
) -> float:
    """The ROC AUC expected when each row's label is drawn from its calibrated probability
    (CBPE): ``Σ_{i≠j} p_i (1−p_j) (1[s_i > s_j] + ½·1[s_i = s_j]) / Σ_{i≠j} p_i (1−p_j)``.

    ``scores`` rank the rows (default: the probabilities themselves). O(n log n): rows are
    grouped by score, and each row's positive weight ``p_i`` meets the negative weight
    ``1 − p_j`` of every row ranked below it (half of those tied with it). NaN with fewer than
    two rows or no weight on either class.
    """
    p = np.asarray(probabilities, dtype="float64")
    s = p if scores is None else np.asarray(scores, dtype="float64")
    if p.shape != s.shape:
        raise ValueError(f"{len(p)} probabilities for {len(s)} scores")
    keep = np.isfinite(p) & np.isfinite(s)
    p, s = np.clip(p[keep], 0.0, 1.0), s[keep]
    if len(p) < 2:
        return math.nan
    q = 1.0 - p
    _, group = np.unique(s, return_inverse=True)
    tied = np.bincount(group, weights=q)  # negative weight per score value
    below = np.cumsum(tied) - tied  # negative weight strictly below each score value
    numerator = float(np.sum(p * below[group]) + 0.5 * np.sum(p * (tied[group] - q)))
    denominator = float(p.sum() * q.sum() - np.sum(p * q))
    if denominator <= 0:
        return math.nan
    return numerator / denominator


def auc_interval(
    y: np.ndarray | Sequence[int], scores: np.ndarray | Sequence[float], confidence: float = 0.95
) -> tuple[float, float, float]:
    """(ROC AUC, low, high): the realised AUC with the Hanley–McNeil (1982) normal interval,
    clipped to [0, 1]. Raises without both classes (there is no AUC then)."""
    from scipy import stats
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(y, dtype="int64")
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        raise ValueError(f"an AUC needs both classes: {positives} positives, {negatives} negatives")
    auc = float(roc_auc_score(labels, np.asarray(scores, dtype="float64")))
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    variance = (
        auc * (1.0 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)
    ) / (positives * negatives)
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    half = z * math.sqrt(max(variance, 0.0))
    return auc, max(0.0, auc - half), min(1.0, auc + half)
