"""The promotion gate's decision, a pure function of holdout scores, and its report.

* :func:`decide` is the gate, a pure function of holdout scores: a paired bootstrap of the metric
  delta (challenger - champion) on the same rows; promote when the lower confidence bound beats
  the margin, calibration did not get worse beyond a tolerance and the sanity checks
  (:func:`sanity_checks`) pass. With no champion, an absolute floor decides.
* :func:`decision_report` renders a :class:`Decision` as offline HTML (with the holdout's ROC and
  calibration curves of champion and challenger when given their scores).

Nothing here touches MLflow: :func:`tasks.registry.gate` loads and scores both models, asks
:func:`decide` and records the decision on the version.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from driftloop_config.usecase import ERROR_METRICS
from tasks import report
from tasks.model import calibration_table, expected_calibration_error
from tasks.report import img, png_data_uri
from tasks.training_report import calibration_figure, roc_figure

Metric = Literal["roc_auc", "pr_auc", "rmse", "mae"]


# ---- the gate -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateInfo:
    """What the sanity checks look at for one model version."""

    version: str | None
    inputs: Mapping[str, str]  # signature input column -> type
    feature_service: str | None
    scores: np.ndarray | None = None  # its probabilities on the holdout


def probabilities_valid(scores: np.ndarray | None) -> bool:
    """Non-empty, no NaN/inf, all within [0, 1]."""
    if scores is None:
        return False
    arr = np.asarray(scores, dtype=np.float64)
    return bool(arr.size > 0 and np.isfinite(arr).all() and (arr >= 0).all() and (arr <= 1).all())


def predictions_valid(scores: np.ndarray | None) -> bool:
    """Non-empty, no NaN/inf (a regression's predicted outcomes)."""
    if scores is None:
        return False
    arr = np.asarray(scores, dtype=np.float64)
    return bool(arr.size > 0 and np.isfinite(arr).all())


def sanity_checks(
    champion_info: CandidateInfo | None,
    challenger_info: CandidateInfo,
    *,
    expected_feature_service: str | None = None,
    regression: bool = False,
) -> dict[str, bool]:
    """Checks that must hold before a challenger may replace the champion.

    ``signature_compatible``: the challenger has a signature with the champion's input columns
    and types; ``same_feature_service``: both read the same feature service (and the expected one
    when given); ``probabilities_valid``: its holdout scores are probabilities without NaN
    (``predictions_valid`` for a regression: finite predicted outcomes).
    """
    inputs_ok = bool(challenger_info.inputs) and (
        champion_info is None or dict(champion_info.inputs) == dict(challenger_info.inputs)
    )
    service = challenger_info.feature_service
    service_ok = bool(service) and (
        (champion_info is None or champion_info.feature_service == service)
        and (expected_feature_service is None or expected_feature_service == service)
    )
    return {
        "signature_compatible": inputs_ok,
        "same_feature_service": service_ok,
        **(
            {"predictions_valid": predictions_valid(challenger_info.scores)}
            if regression
            else {"probabilities_valid": probabilities_valid(challenger_info.scores)}
        ),
    }


@dataclass(frozen=True)
class Decision:
    """The gate's verdict and the evidence behind it."""

    promote: bool
    reason: str
    metric: str
    challenger_value: float
    champion_value: float | None
    delta_ci: tuple[float, float] | None
    challenger_ece: float
    champion_ece: float | None
    sanity: dict[str, bool]
    samples: int  # bootstrap resamples used (those with both classes)
    compared_with: str | None = None  # the champion version the challenger was measured against
    delta: float | None = None
    margin: float = 0.0
    floor: float = 0.0
    confidence: float = 0.95
    calibration_tolerance: float = 0.0
    n: int = 0
    positives: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["delta_ci"] = list(self.delta_ci) if self.delta_ci is not None else None
        return out


def _resample_counts(rng: np.random.Generator, n: int, rows: int) -> np.ndarray:
    """``rows`` bootstrap resamples of n rows, as multiplicities (rows x n)."""
    idx = rng.integers(0, n, size=(rows, n)) + (np.arange(rows) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)


@dataclass(frozen=True)
class _Ranked:
    """Scores sorted once, with the boundaries of their tie groups."""

    order: np.ndarray
    y_sorted: np.ndarray
    starts: np.ndarray

    @classmethod
    def of(cls, y: np.ndarray, scores: np.ndarray) -> _Ranked:
        order = np.argsort(scores, kind="mergesort")
        s_sorted = scores[order]
        starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
        return cls(order, y[order].astype(np.float64), starts)


def _weighted_metric(
    ranked: _Ranked, counts: np.ndarray, metric: Metric
) -> tuple[np.ndarray, np.ndarray]:
    """The metric on each weighted resample (rows of ``counts``), ties handled like scikit-learn:
    ROC AUC via ranks (a tie counts half), average precision over distinct thresholds. Returns
    (values, valid) where valid marks resamples holding both classes."""
    w = counts[:, ranked.order]
    pos = np.add.reduceat(w * ranked.y_sorted, ranked.starts, axis=1)
    neg = np.add.reduceat(w, ranked.starts, axis=1) - pos
    n_pos = pos.sum(axis=1)
    n_neg = neg.sum(axis=1)
    valid = (n_pos > 0) & (n_neg > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "roc_auc":
            neg_below = np.cumsum(neg, axis=1) - neg
            values = (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
        elif metric == "pr_auc":
            pos_desc = pos[:, ::-1]
            tp = np.cumsum(pos_desc, axis=1)
            predicted = tp + np.cumsum(neg[:, ::-1], axis=1)
            precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
            values = (pos_desc * precision).sum(axis=1) / n_pos
        else:
            raise ValueError(f"unknown metric {metric!r} (roc_auc or pr_auc)")
    return np.where(valid, values, np.nan), valid


def _row_errors(y: np.ndarray, predicted: np.ndarray, metric: Metric) -> np.ndarray:
    """Per row: the squared error (rmse) or the absolute error (mae)."""
    err = np.asarray(predicted, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    return err**2 if metric == "rmse" else np.abs(err)


def _weighted_error(errors: np.ndarray, counts: np.ndarray, metric: Metric) -> np.ndarray:
    """The error on each weighted resample (rows of ``counts``) from per-row errors."""
    mean = counts @ errors / counts.sum(axis=1)
    return np.sqrt(mean) if metric == "rmse" else mean


def metric_value(y: np.ndarray, scores: np.ndarray, metric: Metric) -> float:
    """The metric on the full sample (NaN with a single class; NaN without rows for an
    error metric)."""
    if metric in ERROR_METRICS:
        if len(y) == 0:
            return math.nan
        errors = _row_errors(np.asarray(y), np.asarray(scores), metric)
        return float(_weighted_error(errors, np.ones((1, len(errors))), metric)[0])
    y = np.asarray(y)
    ranked = _Ranked.of(y, np.asarray(scores, dtype=np.float64))
    values, _ = _weighted_metric(ranked, np.ones((1, len(y))), metric)
    return float(values[0])


def bootstrap_deltas(
    champion_scores: np.ndarray,
    challenger_scores: np.ndarray,
    y: np.ndarray,
    *,
    metric: Metric,
    samples: int,
    seed: int,
    max_cells: int = 2_000_000,
) -> np.ndarray:
    """Paired bootstrap: the metric's improvement on ``samples`` resamples of the rows (the same
    resampled rows for both): challenger - champion, or champion - challenger for an error
    metric (rmse, mae); resamples with a single class are dropped (a ranking metric)."""
    y = np.asarray(y)
    a = np.asarray(champion_scores, dtype=np.float64)
    b = np.asarray(challenger_scores, dtype=np.float64)
    n = len(y)
    if not (len(a) == len(b) == n):
        raise ValueError(f"score lengths {len(a)}, {len(b)} do not match {n} labels")
    rng = np.random.default_rng(seed)
    chunk = max(1, min(samples, max_cells // max(n, 1)))
    out: list[np.ndarray] = []
    done = 0
    if metric in ERROR_METRICS:
        err_a, err_b = _row_errors(y, a, metric), _row_errors(y, b, metric)
        while done < samples:
            rows = min(chunk, samples - done)
            counts = _resample_counts(rng, n, rows)
            out.append(
                _weighted_error(err_a, counts, metric) - _weighted_error(err_b, counts, metric)
            )
            done += rows
        return np.concatenate(out) if out else np.empty(0)
    ranked_a, ranked_b = _Ranked.of(y, a), _Ranked.of(y, b)
    while done < samples:
        rows = min(chunk, samples - done)
        counts = _resample_counts(rng, n, rows)
        champ, valid = _weighted_metric(ranked_a, counts, metric)
        chall, _ = _weighted_metric(ranked_b, counts, metric)
        out.append((chall - champ)[valid])
        done += rows
    return np.concatenate(out) if out else np.empty(0)


def decide(
    champion_scores: np.ndarray | None,
    challenger_scores: np.ndarray,
    y: np.ndarray,
    *,
    margin: float,
    floor: float,
    metric: Metric,
    samples: int,
    confidence: float,
    calibration_tolerance: float,
    seed: int,
    sanity: Mapping[str, bool],
    champion_version: str | None = None,
) -> Decision:
    """The promotion gate (pure). With a champion: promote iff the lower bound of the
    ``confidence`` percentile CI of the paired-bootstrap delta exceeds ``margin``, the
    challenger's ECE is at most the champion's + ``calibration_tolerance`` and every sanity check
    passed. Without one: promote iff the challenger's metric reaches ``floor`` and the checks
    pass. ``champion_version`` is recorded as ``compared_with`` (promotion refuses a decision
    whose champion is no longer the champion).

    With an error metric (rmse, mae: a regression's predicted outcomes) the delta is the
    decrease of the error, there is no calibration check, and the floor is a skill: the
    challenger's error must be at most ``1 - floor`` times the error of predicting the holdout's
    mean (rmse) or median (mae) for every row."""
    if metric in ERROR_METRICS:
        return _decide_error(
            champion_scores,
            challenger_scores,
            y,
            margin=margin,
            floor=floor,
            metric=metric,
            samples=samples,
            confidence=confidence,
            seed=seed,
            sanity=sanity,
            champion_version=champion_version,
        )
    y = np.asarray(y).astype(np.int64)
    ch = np.asarray(challenger_scores, dtype=np.float64)
    checks = {str(k): bool(v) for k, v in sanity.items()}
    checks["challenger_scores_valid"] = len(ch) == len(y) and probabilities_valid(ch)
    if champion_scores is not None:
        champ = np.asarray(champion_scores, dtype=np.float64)
        checks["champion_scores_valid"] = len(champ) == len(y) and bool(np.isfinite(champ).all())
    else:
        champ = None
    base: dict[str, Any] = {
        "metric": metric,
        "sanity": checks,
        "compared_with": champion_version,
        "margin": float(margin),
        "floor": float(floor),
        "confidence": float(confidence),
        "calibration_tolerance": float(calibration_tolerance),
        "n": len(y),
        "positives": int(y.sum()),
    }
    # a champion that cannot be scored is judged like no champion: the floor decides
    champion_usable = champ is not None and checks["champion_scores_valid"]
    failed = sorted(k for k, ok in checks.items() if not ok and k != "champion_scores_valid")
    problems = [f"sanity checks failed: {', '.join(failed)}"] if failed else []
    both_classes = len(y) > 0 and y.min() != y.max()
    if not both_classes or not checks["challenger_scores_valid"]:  # nothing to measure
        if not both_classes:
            problems.append(
                f"the holdout has a single class ({len(y)} rows, {int(y.sum())} positives)"
            )
        return Decision(
            promote=False,
            reason="rejected: " + "; ".join(problems),
            challenger_value=math.nan,
            champion_value=None,
            delta_ci=None,
            challenger_ece=math.nan,
            champion_ece=None,
            samples=0,
            **base,
        )

    ch_value = metric_value(y, ch, metric)
    ch_ece = expected_calibration_error(y, ch)
    if champ is None or not champion_usable:
        context = "no champion" if champ is None else "the champion's scores are unusable"
        reaches = ch_value >= floor
        if not reaches:
            problems.append("below the floor")
        evidence = f"{context}; {metric} {ch_value:.4f} vs floor {floor:.4f}"
        return Decision(
            promote=reaches and not failed,
            reason=_reason(problems, evidence),
            challenger_value=ch_value,
            champion_value=None,
            delta_ci=None,
            challenger_ece=ch_ece,
            champion_ece=None,
            samples=0,
            **base,
        )

    champ_value = metric_value(y, champ, metric)
    champ_ece = expected_calibration_error(y, champ)
    deltas = bootstrap_deltas(champ, ch, y, metric=metric, samples=samples, seed=seed)
    alpha = 1 - confidence
    if len(deltas):
        lo, hi = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
        ci: tuple[float, float] | None = (float(lo), float(hi))
    else:
        ci = None
    better = ci is not None and ci[0] > margin
    calibrated = ch_ece <= champ_ece + calibration_tolerance
    if not better:
        problems.append("not better beyond noise")
    if not calibrated:
        problems.append("calibration got worse")
    ci_text = f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "undefined"
    evidence = (
        f"{metric} {ch_value:.4f} vs champion {champ_value:.4f}; "
        f"{confidence:.0%} CI of the delta {ci_text} vs margin {margin:+.4f}; "
        f"ECE {ch_ece:.4f} vs champion {champ_ece:.4f} (+{calibration_tolerance:.4f} allowed)"
    )
    return Decision(
        promote=better and calibrated and not failed,
        reason=_reason(problems, evidence),
        challenger_value=ch_value,
        champion_value=champ_value,
        delta_ci=ci,
        challenger_ece=ch_ece,
        champion_ece=champ_ece,
        samples=len(deltas),
        delta=ch_value - champ_value,
        **base,
    )


def _decide_error(
    champion_scores: np.ndarray | None,
    challenger_scores: np.ndarray,
    y: np.ndarray,
    *,
    margin: float,
    floor: float,
    metric: Metric,
    samples: int,
    confidence: float,
    seed: int,
    sanity: Mapping[str, bool],
    champion_version: str | None,
) -> Decision:
    """:func:`decide` for an error metric (see there)."""
    y = np.asarray(y, dtype=np.float64)
    ch = np.asarray(challenger_scores, dtype=np.float64)
    checks = {str(k): bool(v) for k, v in sanity.items()}
    checks["challenger_scores_valid"] = len(ch) == len(y) and predictions_valid(ch)
    champ = None if champion_scores is None else np.asarray(champion_scores, dtype=np.float64)
    if champ is not None:
        checks["champion_scores_valid"] = len(champ) == len(y) and predictions_valid(champ)
    base: dict[str, Any] = {
        "metric": metric,
        "sanity": checks,
        "compared_with": champion_version,
        "margin": float(margin),
        "floor": float(floor),
        "confidence": float(confidence),
        "calibration_tolerance": 0.0,
        "n": len(y),
        "positives": int((y > 0).sum()),
        "challenger_ece": math.nan,
        "champion_ece": None,
    }
    failed = sorted(k for k, ok in checks.items() if not ok and k != "champion_scores_valid")
    problems = [f"sanity checks failed: {', '.join(failed)}"] if failed else []
    varies = len(y) > 0 and y.min() != y.max()
    if not varies or not checks["challenger_scores_valid"]:
        if not varies:
            problems.append(f"the holdout's outcomes do not vary ({len(y)} rows)")
        return Decision(
            promote=False,
            reason="rejected: " + "; ".join(problems),
            challenger_value=math.nan,
            champion_value=None,
            delta_ci=None,
            samples=0,
            **base,
        )
    ch_value = metric_value(y, ch, metric)
    if champ is None or not checks["champion_scores_valid"]:
        context = "no champion" if champ is None else "the champion's scores are unusable"
        centre = float(y.mean() if metric == "rmse" else np.median(y))
        constant = metric_value(y, np.full(len(y), centre), metric)
        skill = 1.0 - ch_value / constant
        reaches = skill >= floor
        if not reaches:
            problems.append("below the floor")
        evidence = (
            f"{context}; {metric} {ch_value:.4f} vs {constant:.4f} predicting the holdout's "
            f"{'mean' if metric == 'rmse' else 'median'}: skill {skill:.4f} vs floor {floor:.4f}"
        )
        return Decision(
            promote=reaches and not failed,
            reason=_reason(problems, evidence),
            challenger_value=ch_value,
            champion_value=None,
            delta_ci=None,
            samples=0,
            **base,
        )
    champ_value = metric_value(y, champ, metric)
    deltas = bootstrap_deltas(champ, ch, y, metric=metric, samples=samples, seed=seed)
    alpha = 1 - confidence
    lo, hi = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    better = float(lo) > margin
    if not better:
        problems.append("not better beyond noise")
    evidence = (
        f"{metric} {ch_value:.4f} vs champion {champ_value:.4f}; {confidence:.0%} CI of its "
        f"decrease [{lo:+.4f}, {hi:+.4f}] vs margin {margin:+.4f}"
    )
    return Decision(
        promote=better and not failed,
        reason=_reason(problems, evidence),
        challenger_value=ch_value,
        champion_value=champ_value,
        delta_ci=(float(lo), float(hi)),
        samples=len(deltas),
        delta=champ_value - ch_value,
        **{**base, "champion_ece": math.nan},
    )


def _reason(problems: list[str], evidence: str) -> str:
    return f"rejected: {'; '.join(problems)}: {evidence}" if problems else f"promoted: {evidence}"


# ---- report -------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def decision_report(
    decision: Decision,
    *,
    name: str,
    version: str,
    y: np.ndarray | None = None,
    champion_scores: np.ndarray | None = None,
    challenger_scores: np.ndarray | None = None,
    details: Mapping[str, Any] | None = None,
) -> str:
    """Offline HTML for one gate decision; with the holdout labels and scores it adds ROC and
    calibration plots of champion vs challenger."""
    status = "validated" if decision.promote else "rejected"
    verdict = "promoted" if decision.promote else "rejected"
    ci = decision.delta_ci
    parts = [
        report.cards(
            [
                ("decision", verdict),
                (f"challenger {decision.metric}", _fmt(decision.challenger_value)),
                (f"champion {decision.metric}", _fmt(decision.champion_value)),
                (
                    f"{decision.confidence:.0%} CI of the delta",
                    f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "n/a",
                ),
                ("holdout rows", decision.n),
            ]
        ),
        f"<p>{html.escape(decision.reason)}</p>",
        "<h2>Evidence</h2>",
        report.table(
            [
                {"measure": "metric", "value": decision.metric},
                {"measure": "challenger", "value": f"{name} v{version}"},
                {"measure": "compared with", "value": decision.compared_with or "no champion"},
                {"measure": "delta (point)", "value": _fmt(decision.delta)},
                {"measure": "margin", "value": _fmt(decision.margin)},
                {"measure": "floor (no champion)", "value": _fmt(decision.floor)},
                {"measure": "bootstrap resamples used", "value": decision.samples},
                {"measure": "ECE challenger", "value": _fmt(decision.challenger_ece)},
                {"measure": "ECE champion", "value": _fmt(decision.champion_ece)},
                {"measure": "calibration tolerance", "value": _fmt(decision.calibration_tolerance)},
                {"measure": "holdout positives", "value": decision.positives},
            ]
        ),
        "<h2>Sanity checks</h2>",
        report.table(
            [
                {"check": k, "result": report.badge("validated" if ok else "rejected")}
                for k, ok in sorted(decision.sanity.items())
            ],
            raw_html=("result",),
        ),
    ]
    if details:
        parts += [
            "<h2>Details</h2>",
            report.table([{"field": k, "value": str(v)} for k, v in details.items()]),
        ]
    if y is not None and challenger_scores is not None and decision.metric not in ERROR_METRICS:
        y_arr = np.asarray(y)
        curves: dict[str, tuple[np.ndarray, np.ndarray]] = {
            f"challenger v{version}": (y_arr, np.asarray(challenger_scores))
        }
        calib = {f"challenger v{version}": calibration_table(y_arr, challenger_scores)}
        if champion_scores is not None:
            label = f"champion v{decision.compared_with or '?'}"
            curves[label] = (y_arr, np.asarray(champion_scores))
            calib[label] = calibration_table(y_arr, champion_scores)
        parts += [
            "<h2>Holdout curves</h2>",
            img(png_data_uri(roc_figure(curves)), "ROC curves"),
            img(png_data_uri(calibration_figure(calib)), "calibration curves"),
        ]
    return report.page(
        f"Promotion decision — {name} v{version}", "".join(parts), report.badge(status)
    )
