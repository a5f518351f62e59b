"""Drift statistics with thresholds calibrated to sample size.

**PSI** (population stability index) compares the share of rows per bin between a reference
window (bins = the reference's quantile bins for a numeric feature, categories for a categorical)
and a current window:  ``PSI = Σ (q_i − p_i) · ln(q_i / p_i)``.

PSI grows with real change, but also with sampling noise when windows are small. Without drift
(both windows drawn from one distribution), for ``k`` bins and window sizes ``n`` (reference) and
``m`` (current), ``PSI ≈ (1/n + 1/m) · X`` with ``X ~ χ²(k − 1)`` (PSI is the symmetrised
Kullback-Leibler divergence, whose second-order expansion is the chi-square statistic). So the
threshold that a no-drift window exceeds with probability ``alpha`` is

    psi_threshold = χ²_{1−alpha}(k − 1) · (1/n + 1/m)

and a feature is flagged only when its PSI exceeds both that and a practical floor ``psi_min``
(so that with very large windows, tiny shifts of no consequence do not alarm). ``alpha`` is split
across the features of one check (Bonferroni), bounding the false-alarm rate of a whole check.

The **KS** statistic (numeric features, from the reference sample stored with the model) and the
**chi-square** test of homogeneity (categoricals) are reported alongside as evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype
from scipy import stats

EPS = 1e-4  # share given to an empty bin so that ln(q/p) stays finite


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


def bin_proportions(values: np.ndarray | Sequence[float], edges: Sequence[float]) -> list[float]:
    """Share of the non-missing ``values`` in each bin ``edges[i] < x <= edges[i + 1]``.

    The rule reference profiles are built with (``tasks.train.reference_profile``); all zeros
    when there are no values.
    """
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    edge_arr = np.asarray(edges, dtype=np.float64)
    nbins = len(edge_arr) - 1
    if len(arr) == 0:
        return [0.0] * nbins
    idx = np.clip(np.searchsorted(edge_arr, arr, side="left") - 1, 0, nbins - 1)
    counts = np.bincount(idx, minlength=nbins)
    return [float(c) for c in counts / len(arr)]


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


def psi_threshold(
    n_reference: int, n_current: int, bins: int, alpha: float, psi_min: float
) -> float:
    """The PSI a window of this size exceeds with probability ``alpha`` without drift (≥ psi_min)."""
    if n_reference <= 0 or n_current <= 0 or bins < 2:
        return float("inf")
    chi = float(stats.chi2.ppf(1.0 - alpha, bins - 1))
    return max(psi_min, chi * (1.0 / n_reference + 1.0 / n_current))


def numeric_drift(
    feature: str,
    current: np.ndarray,
    *,
    edges: Sequence[float],
    reference_shares: Sequence[float],
    n_reference: int,
    alpha: float,
    psi_min: float,
    reference_sample: np.ndarray | None = None,
    null_share_reference: float = 0.0,
    kind: str = "numeric",
) -> DriftScore:
    cur = np.asarray(current, dtype="float64")
    nulls = float(np.isnan(cur).mean()) if len(cur) else 0.0
    valid = cur[~np.isnan(cur)]
    shares = np.asarray(bin_proportions(valid, edges))
    value = psi(np.asarray(reference_shares), shares) if len(valid) else float("nan")
    limit = psi_threshold(n_reference, len(valid), len(edges) - 1, alpha, psi_min)
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
    )


def categorical_drift(
    feature: str,
    current: pd.Series | Sequence[object],
    *,
    reference_shares: dict[str, float],
    n_reference: int,
    alpha: float,
    psi_min: float,
) -> DriftScore:
    counts = category_counts(current)
    cats = list(reference_shares)
    shares, all_cats = _shares(counts, cats)
    ref = np.array([reference_shares.get(c, 0.0) for c in all_cats])
    n_cur = int(counts.sum())
    value = psi(ref, shares) if n_cur else float("nan")
    limit = psi_threshold(n_reference, n_cur, len(all_cats), alpha, psi_min)
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
    )
