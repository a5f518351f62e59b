"""Drift monitoring: a window of live features and predictions against the champion's reference.

The reference is stored with the model at training time (``reference.json``, see
``tasks.train.reference_profile`` and ``tasks.training.reference_rows``): the distributions of
the newest ``reference_windows`` windows of feature days up to the training's ``as_of`` and of
the model's predictions on them, the natural variation between those windows (the empirical
null) and the model's importance of each input.

A check turns one window into **signals** (:func:`window_signals`):

``input-drift``
    Inputs whose PSI exceeds their threshold (:mod:`tasks.drift_stats`: the largest of the
    sampling bound, ``psi_min`` and the null's ``null_quantile``) carry, between them, at least
    ``min_drifted_share`` of the voting inputs' weight, and there are at least
    ``min_drifted_features`` of them (at most the number of voting inputs). Per input
    (``DriftSpec.inputs``): ``monitor: false`` leaves it out; ``role: context`` (a column shared
    by many entities) is scored and reported but has no vote; ``weight`` is its vote — else the
    model's importance of it stored at training, else equal votes.
``prediction-drift``
    The prediction distribution exceeds its threshold.
``estimated-drop``
    The ROC AUC the calibrated probabilities of the window promise (CBPE,
    :func:`tasks.drift_stats.expected_auc`) lies below the training period's by more than
    ``max(min_performance_drop, training estimate − the low quantile of its windows)``.
``realised-drop``
    Once labels arrive, consecutive labelled snapshot days of the champion's predictions are
    pooled (newest first, each model version apart) into windows of at least
    ``min_window_positives`` positives and one negative (:func:`pooled_performance`); the
    newest complete window of the *current* version has its 95 % interval wholly below its
    holdout AUC minus ``min_performance_drop``. Earlier versions' windows are reported, never
    signalled: after a promotion, the old model's misses are not the new one's. (A version
    replaced more often than labels arrive never has a complete window of its own.)
    A regression model's windows hold its RMSE or MAE (``model.metric``) instead, pooled until
    they hold ``min_window_positives`` rows with an outcome above 0; the signal is an interval
    wholly *above* the holdout error times ``1 + min_performance_drop``. A regression model has
    no label-free estimate, so no ``estimated-drop``.

A window with any signal is at severity "watch". Drift is **detected** only when it persists:
the window signals and at least ``persistence.k`` of the last ``persistence.n`` daily checks
(this one included) of the *same* champion version signal (:func:`persistence`; the earlier
checks are the results stored in the reports zone, a day without one counts as no signal, and
a promotion starts the count afresh). Detected drift is "drift", or "severe" with a performance
drop signal in the window.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from tasks.drift_stats import (
    DriftScore,
    auc_interval,
    categorical_drift,
    expected_auc,
    null_low,
    numeric_drift,
)
from tasks.features import feature_key
from tasks.storage import read_parquet, write_json

if TYPE_CHECKING:
    from driftloop_config.settings import Settings
    from driftloop_config.usecase import DriftSpec, PersistenceSpec, UseCase
    from tasks.storage import Lake, Storage

DETECTED_EVENT = "driftloop.drift.detected"
#: a check's outcome: drift detected, none detected, or nothing to compare (no data in the window)
DriftStatus = Literal["drift", "no-drift", "no-data"]
#: a check's severity: no signal; a signal that does not persist yet; persistent drift;
#: persistent drift with a performance drop
Severity = Literal["none", "watch", "drift", "severe"]
INPUT_DRIFT = "input-drift"
PREDICTION_DRIFT = "prediction-drift"
ESTIMATED_DROP = "estimated-drop"
REALISED_DROP = "realised-drop"
PERFORMANCE_SIGNALS = (ESTIMATED_DROP, REALISED_DROP)
ERROR_METRICS = ("rmse", "mae")  # driftloop_config.usecase.ERROR_METRICS: lower is better
OTHER_CATEGORY = "__other__"  # the reference's folded rare tail (tasks.train.OTHER_CATEGORY)
#: pooled realised-performance windows kept in a result (the newest)
MAX_REALISED_WINDOWS = 60


@dataclass
class DriftResult:
    """One drift check: what was compared, the per-feature evidence, and the verdict."""

    model: str
    model_version: str
    window: tuple[str, str]
    scores: list[DriftScore]
    prediction: DriftScore | None
    detected: bool
    drifted: list[str] = field(default_factory=list)
    #: the window had no feature rows: nothing was compared (never reported as "no drift")
    no_data: bool = False
    #: the window's signals (see the module docstring), in a fixed order
    signals: list[str] = field(default_factory=list)
    severity: Severity = "none"
    #: the estimated ROC AUC of the window against the training period's (see
    #: :func:`estimated_performance`); None without predictions or a stored estimate
    estimated: dict[str, Any] | None = None
    #: the realised ROC AUC of pooled labelled windows (:func:`pooled_performance`)
    realised: list[dict[str, Any]] = field(default_factory=list)
    #: the input votes: weight share of the drifted voting inputs, counts, and the bars
    votes: dict[str, Any] = field(default_factory=dict)
    #: k, n, the windows (their last days) of this version that signalled, and ``since``: the
    #: first day of the oldest of them
    persistence: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> DriftStatus:
        if self.no_data:
            return "no-data"
        return "drift" if self.detected else "no-drift"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["window"] = list(self.window)
        out["status"] = self.status
        return out


def read_feature_window(lake: Lake, table: str, first: date, last: date) -> pd.DataFrame:
    """The rows of feature table ``table`` of days ``first``..``last`` (missing days are
    skipped)."""
    zone = lake.zone("features")
    frames = []
    day = first
    while day <= last:
        if zone.exists(feature_key(table, day)):
            frames.append(read_parquet(zone, feature_key(table, day)))
        day += timedelta(days=1)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def read_input_window(
    lake: Lake, usecase: UseCase, first: date, last: date
) -> tuple[pd.DataFrame, list[str]]:
    """The main feature table's rows of days ``first``..``last`` with each context's features
    joined as the feature service joins them: per row, the newest context row of its key at
    or before its ``event_timestamp`` (from the same days); and the names of the columns that
    came from contexts."""
    rows = read_feature_window(lake, usecase.feature_table, first, last)
    from_context: list[str] = []
    for table in usecase.feature_tables[1:]:
        context = read_feature_window(lake, table.name, first, last)
        if rows.empty or context.empty or table.key not in rows.columns:
            continue
        taken = [c for c in context.columns if c not in rows.columns]
        from_context += taken
        right = context[[table.key, "event_timestamp", *taken]].dropna(subset=[table.key])
        right = right.assign(
            event_timestamp=pd.to_datetime(right["event_timestamp"], utc=True).astype(
                "datetime64[ns, UTC]"
            ),
            **{table.key: right[table.key].astype(str)},
        ).sort_values("event_timestamp", kind="stable")
        left = rows.assign(
            _row=np.arange(len(rows)),
            _at=pd.to_datetime(rows["event_timestamp"], utc=True).astype("datetime64[ns, UTC]"),
            _key=rows[table.key].astype("object").where(rows[table.key].notna(), None),
        )
        keyed = left.loc[left["_key"].notna()].astype({"_key": str}).sort_values("_at")
        joined = pd.merge_asof(
            keyed[["_row", "_at", "_key"]],
            right.rename(columns={"event_timestamp": "_at", table.key: "_key"}),
            on="_at",
            by="_key",
            direction="backward",
        )
        rows = (
            left.merge(joined[["_row", *taken]], on="_row", how="left")
            .sort_values("_row")
            .drop(columns=["_row", "_at", "_key"])
            .reset_index(drop=True)
        )
    return rows, from_context


# ---- per-input settings ---------------------------------------------------------------------------


def monitored(name: str, spec: DriftSpec) -> bool:
    """Whether the input is checked at all (``inputs.<name>.monitor``, default yes)."""
    setting = spec.inputs.get(name)
    return setting is None or setting.monitor


def effective_spec(spec: DriftSpec, context_inputs: Iterable[str]) -> DriftSpec:
    """``spec`` with the inputs that come from context feature tables in the role
    ``context`` unless ``drift.inputs`` says otherwise: shared by many entities, they are
    reported but do not vote."""
    from driftloop_config.usecase import InputSpec

    added = {n: InputSpec(role="context") for n in context_inputs if n not in spec.inputs}
    return spec.model_copy(update={"inputs": {**spec.inputs, **added}}) if added else spec


def input_role(name: str, spec: DriftSpec) -> str:
    setting = spec.inputs.get(name)
    return "vote" if setting is None else setting.role


def input_weight(name: str, reference: Mapping[str, Any], spec: DriftSpec) -> float:
    """The input's vote: its configured weight, else a blend of the stored model importance
    (normalised to sum 1; ``spec.importance_share`` of the vote) and an equal part for every
    input (the rest), else 1."""
    setting = spec.inputs.get(name)
    if setting is not None and setting.weight is not None:
        return float(setting.weight)
    importance = reference.get("importance")
    if isinstance(importance, Mapping) and importance:
        value = importance.get(name)
        own = float(value) if value is not None and math.isfinite(value) else 0.0
        equal = 1.0 / len(importance)
        return spec.importance_share * own + (1.0 - spec.importance_share) * equal
    return 1.0


# ---- the scores -----------------------------------------------------------------------------------


def check_window(
    reference: dict[str, Any],
    features: pd.DataFrame,
    predictions: np.ndarray | None,
    spec: DriftSpec,
) -> tuple[list[DriftScore], DriftScore | None]:
    """Compare every monitored referenced feature (and the predictions) with the reference.

    ``alpha`` is split across the checks of this window (Bonferroni). The features can also be
    checked in groups (:func:`feature_groups`, :func:`check_features` per group, results
    concatenated in group order): the scores are the same.
    """
    alpha = window_alpha(reference, spec, with_predictions=predictions is not None)
    scores = check_features(reference, features, alpha=alpha, spec=spec)
    return scores, check_predictions(reference, predictions, alpha=alpha, spec=spec)


def window_alpha(reference: dict[str, Any], spec: DriftSpec, *, with_predictions: bool) -> float:
    """The false-alarm rate of each check of a window: ``spec.alpha`` over all its checks."""
    names = [*reference.get("numeric", {}), *reference.get("categorical", {})]
    checks = sum(monitored(n, spec) for n in names)
    return spec.alpha / max(checks + with_predictions, 1)


def checked_features(
    reference: dict[str, Any], columns: Iterable[str], spec: DriftSpec | None = None
) -> list[str]:
    """The referenced features present in ``columns``, in check order (numerics first); with
    ``spec``, only the monitored ones."""
    present = set(columns)
    ordered = [*reference.get("numeric", {}), *reference.get("categorical", {})]
    return [name for name in ordered if name in present and (spec is None or monitored(name, spec))]


def feature_groups(
    reference: dict[str, Any], columns: Iterable[str], parts: int, spec: DriftSpec | None = None
) -> list[list[str]]:
    """The checked features cut into at most ``parts`` contiguous groups of about equal size."""
    names = checked_features(reference, columns, spec)
    parts = max(1, min(parts, len(names)))
    size, extra = divmod(len(names), parts)
    groups, start = [], 0
    for i in range(parts):
        stop = start + size + (i < extra)
        groups.append(names[start:stop])
        start = stop
    return [g for g in groups if g]


def reference_subset(reference: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The reference profile of only these features (what one group's check needs): their
    distributions, null statistics and importance."""
    wanted = set(names)
    out: dict[str, Any] = {
        kind: {n: ref for n, ref in reference.get(kind, {}).items() if n in wanted}
        for kind in ("numeric", "categorical")
    }
    null = reference.get("null")
    if isinstance(null, Mapping):
        out["null"] = {"psi": {n: v for n, v in null.get("psi", {}).items() if n in wanted}}
    if isinstance(reference.get("importance"), Mapping):
        # whole: an input's vote depends on how many inputs the model has (input_weight)
        out["importance"] = dict(reference["importance"])
    return out


def feature_checks(
    inputs: DriftInputs, spec: DriftSpec, *, alpha: float, parts: int
) -> list[dict[str, Any]]:
    """The window's checked inputs cut into at most ``parts`` groups (:func:`feature_groups`),
    each as the arguments of its :func:`check_features` call: the group's reference
    (:func:`reference_subset`) and feature columns, ``alpha`` and ``spec``."""
    groups = feature_groups(inputs.reference, inputs.features.columns, parts=parts, spec=spec)
    return [
        {
            "reference": reference_subset(inputs.reference, names),
            "features": inputs.features[names],
            "alpha": alpha,
            "spec": spec,
        }
        for names in groups
    ]


def _null_of(reference: Mapping[str, Any], name: str | None, spec: DriftSpec) -> list[float] | None:
    """The stored null statistics of an input (``name`` None: of the predictions); None when
    the spec does not use them or the reference has none (an older reference)."""
    null = reference.get("null")
    if not spec.empirical_null or not isinstance(null, Mapping):
        return None
    values = null.get("prediction") if name is None else null.get("psi", {}).get(name)
    return None if values is None else [math.nan if v is None else float(v) for v in values]


def check_features(
    reference: dict[str, Any], features: pd.DataFrame, *, alpha: float, spec: DriftSpec
) -> list[DriftScore]:
    """Drift scores of the monitored referenced features present in ``features``, in check
    order, each with its role and weight.

    Pure: a group of features can be scored on any worker, given its columns and its part of
    the reference (:func:`reference_subset`) and the window's ``alpha``
    (:func:`window_alpha`).
    """
    numeric = reference.get("numeric", {})
    categorical = reference.get("categorical", {})
    scores: list[DriftScore] = []
    for name in checked_features(reference, features.columns, spec):
        null = _null_of(reference, name, spec)
        if name in numeric:
            ref = numeric[name]
            score = numeric_drift(
                name,
                pd.to_numeric(features[name], errors="coerce").to_numpy(dtype="float64"),
                edges=ref["edges"],
                reference_shares=ref["proportions"],
                n_reference=int(ref["count"] * (1 - ref.get("null_share", 0.0))),
                alpha=alpha,
                psi_min=spec.psi_min,
                reference_sample=ref.get("sample"),
                null_share_reference=ref.get("null_share", 0.0),
                null=null,
                null_quantile=spec.null_quantile,
            )
        else:
            ref = categorical[name]
            score = categorical_drift(
                name,
                _fold(features[name], ref["proportions"]),
                reference_shares=ref["proportions"],
                n_reference=int(ref["count"] * (1 - ref.get("null_share", 0.0))),
                alpha=alpha,
                psi_min=spec.psi_min,
                null=null,
                null_quantile=spec.null_quantile,
            )
        scores.append(
            replace(
                score,
                role=input_role(name, spec),
                weight=input_weight(name, reference, spec),
            )
        )
    return scores


def _fold(values: pd.Series, categories: Mapping[str, float]) -> pd.Series:
    """Labels outside the reference's categories go to its rare tail, when it has one (so a
    rare category of the training data is not taken for a new one)."""
    if OTHER_CATEGORY not in categories:
        return values
    from tasks.train import fold_categories

    return fold_categories(values, list(categories))


def check_predictions(
    reference: dict[str, Any], predictions: np.ndarray | None, *, alpha: float, spec: DriftSpec
) -> DriftScore | None:
    """Drift of the prediction distribution (None without predictions or their reference)."""
    if predictions is None or "prediction" not in reference:
        return None
    ref = reference["prediction"]
    return numeric_drift(
        "prediction",
        np.asarray(predictions, dtype="float64"),
        edges=ref["edges"],
        reference_shares=ref["proportions"],
        n_reference=int(ref["count"]),
        alpha=alpha,
        psi_min=spec.psi_min,
        reference_sample=ref.get("sample"),
        kind="prediction",
        null=_null_of(reference, None, spec),
        null_quantile=spec.null_quantile,
    )


# ---- the window's signals -------------------------------------------------------------------------


def input_votes(scores: Sequence[DriftScore], spec: DriftSpec) -> dict[str, Any]:
    """How the voting inputs voted: ``share`` of their weight that drifted, ``drifted`` (names)
    and ``voting`` counts, the bars (``min_share``, ``min_count``) and ``signal``.

    Equal weights when the voting inputs' weights sum to 0. ``min_count`` is
    ``min_drifted_features`` capped at the number of voting inputs.
    """
    voting = [s for s in scores if s.role == "vote"]
    weights = np.array([max(0.0, s.weight) for s in voting], dtype="float64")
    if len(voting) and weights.sum() <= 0:
        weights = np.ones(len(voting))
    drifted = np.array([s.drifted for s in voting], dtype=bool)
    share = float(weights[drifted].sum() / weights.sum()) if len(voting) else 0.0
    need = min(spec.min_drifted_features, len(voting))
    count = int(drifted.sum())
    return {
        "voting": len(voting),
        "drifted": [s.feature for s in voting if s.drifted],
        "share": share,
        "min_share": spec.min_drifted_share,
        "min_count": need,
        "signal": bool(count >= max(need, 1) and share >= spec.min_drifted_share),
    }


def verdict(
    scores: list[DriftScore], prediction: DriftScore | None, spec: DriftSpec
) -> tuple[bool, list[str]]:
    """(the window's data signal, the drifted names): the inputs' votes carry
    ``input-drift`` (:func:`input_votes`) or the predictions drift. The names are every input
    over its threshold (context inputs included), largest PSI first, then "prediction"."""
    drifted = [s.feature for s in sorted(scores, key=lambda s: -s.psi) if s.drifted]
    signal = input_votes(scores, spec)["signal"] or bool(prediction and prediction.drifted)
    if prediction is not None and prediction.drifted:
        drifted.append("prediction")
    return signal, drifted


def estimated_performance(
    reference: Mapping[str, Any], predictions: np.ndarray | None, spec: DriftSpec
) -> dict[str, Any] | None:
    """The window's CBPE-estimated ROC AUC against the training period's.

    ``auc`` (the window's), ``reference`` (all training rows'), ``reference_low`` (the low
    ``1 − null_quantile`` quantile of the training windows' estimates, the smallest with few
    windows), ``allowed_drop`` = ``max(min_performance_drop, reference − reference_low)``,
    ``drop`` and ``signal`` (``drop > allowed_drop``). None without predictions or a stored
    estimate.
    """
    stored = reference.get("estimated")
    if predictions is None or not isinstance(stored, Mapping) or stored.get("auc") is None:
        return None
    p = np.asarray(predictions, dtype="float64")
    auc = expected_auc(p)
    ref = float(stored["auc"])
    windows = [math.nan if v is None else float(v) for v in stored.get("windows") or []]
    low = null_low(windows, spec.null_quantile)
    allowed = max(spec.min_performance_drop, ref - low if low is not None else 0.0)
    drop = ref - auc if math.isfinite(auc) else math.nan
    return {
        "auc": auc if math.isfinite(auc) else None,
        "reference": ref,
        "reference_low": low,
        "allowed_drop": allowed,
        "drop": drop if math.isfinite(drop) else None,
        "rows": int(np.isfinite(p).sum()),
        "signal": bool(math.isfinite(drop) and drop > allowed),
    }


def pooled_performance(
    predictions: pd.DataFrame,
    labelled: pd.DataFrame,
    label: str,
    *,
    min_positives: int,
    entity: str,
    prediction: str,
    confidence: float = 0.95,
    metric: str = "roc_auc",
) -> list[dict[str, Any]]:
    """Realised ROC AUC over pooled windows of labelled snapshot days, per model version.

    ``predictions``: <entity>, event_timestamp, <prediction> and, optionally,
    model_version; ``labelled``: the entity frame of known labels (<entity>, event_timestamp,
    <label>). Each version's snapshot days are pooled from the newest backwards: a window
    closes once it holds at least ``min_positives`` positives and one negative (``complete``);
    the oldest days left over form an incomplete window; a window never mixes versions. Per
    window: ``version``, ``first``/``last`` snapshot day, ``days``, ``n``, ``positives``, and
    ``auc`` with its Hanley–McNeil interval ``low``/``high`` — None unless both classes are
    present. Ordered by last day (then version); at most the newest
    :data:`MAX_REALISED_WINDOWS`.

    With ``metric`` "rmse" or "mae" (a regression model: ``label`` holds outcomes) a window
    closes once ``min_positives`` rows have an outcome above 0, and holds that error with a
    normal interval (:func:`error_interval`) instead of the AUC. Every window says its
    ``metric`` and ``value``.
    """
    if predictions.empty or labelled.empty:
        return []
    p = predictions.assign(event_timestamp=pd.to_datetime(predictions["event_timestamp"], utc=True))
    if "model_version" not in p.columns:
        p = p.assign(model_version=None)
    p = p.assign(model_version=p["model_version"].map(lambda v: None if pd.isna(v) else str(v)))
    lab = labelled.assign(event_timestamp=pd.to_datetime(labelled["event_timestamp"], utc=True))
    p = p.drop_duplicates(["model_version", entity, "event_timestamp"], keep="last")
    joined = p.merge(lab[[entity, "event_timestamp", label]], on=[entity, "event_timestamp"])
    out = []
    error = metric in ERROR_METRICS
    for version, rows in joined.groupby("model_version", sort=True, dropna=False):
        days = [
            (
                str(ts)[:10],
                day[label].to_numpy(dtype="float64" if error else "int64"),
                day[prediction].to_numpy("float64"),
            )
            for ts, day in rows.groupby("event_timestamp", sort=True)
        ]
        name = None if pd.isna(version) else str(version)
        for pool, complete in _pool_days(days, min_positives, need_negative=not error):
            if error:
                out.append(_error_window(name, pool, complete, confidence, metric))
            else:
                out.append(_window(name, pool, complete, confidence))
    out.sort(key=lambda w: (w["last"], w["first"], str(w["version"])))
    return out[-MAX_REALISED_WINDOWS:]


def _pool_days(
    days: list[tuple[str, np.ndarray, np.ndarray]], min_positives: int, *, need_negative: bool
) -> list[tuple[list[tuple[str, np.ndarray, np.ndarray]], bool]]:
    """Days pooled from the newest backwards until a pool holds ``min_positives`` positives
    (labels above 0) and, with ``need_negative``, one negative; (days oldest first, complete),
    oldest pool first."""
    pools = []
    current: list[tuple[str, np.ndarray, np.ndarray]] = []
    positives = negatives = 0
    for day in reversed(days):
        current.append(day)
        positives += int((day[1] > 0).sum())
        negatives += int((day[1] == 0).sum())
        if positives >= min_positives and (negatives > 0 or not need_negative):
            pools.append((current[::-1], True))
            current, positives, negatives = [], 0, 0
    if current:
        pools.append((current[::-1], False))
    return pools[::-1]


def _window(
    version: str | None,
    pool: list[tuple[str, np.ndarray, np.ndarray]],
    complete: bool,
    confidence: float,
) -> dict[str, Any]:
    y = np.concatenate([d[1] for d in pool])
    s = np.concatenate([d[2] for d in pool])
    positives = int(y.sum())
    auc = low = high = None
    if 0 < positives < len(y):
        auc, low, high = auc_interval(y, s, confidence)
    return {
        "version": version,
        "first": pool[0][0],
        "last": pool[-1][0],
        "days": len(pool),
        "n": len(y),
        "positives": positives,
        "metric": "roc_auc",
        "value": auc,
        "auc": auc,
        "low": low,
        "high": high,
        "complete": complete,
    }


def error_interval(
    y: np.ndarray, predicted: np.ndarray, metric: str, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(error, low, high) of predicted outcomes: RMSE with the normal interval of the mean
    squared error (then its root), or MAE with the normal interval of the mean absolute error;
    the low end is at least 0."""
    from statistics import NormalDist

    err = np.asarray(predicted, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    per_row = err**2 if metric == "rmse" else np.abs(err)
    mean = float(per_row.mean())
    half = NormalDist().inv_cdf(0.5 + confidence / 2) * (
        float(per_row.std(ddof=1)) / math.sqrt(len(per_row)) if len(per_row) > 1 else 0.0
    )
    low, high = max(0.0, mean - half), mean + half
    if metric == "rmse":
        return math.sqrt(mean), math.sqrt(low), math.sqrt(high)
    return mean, low, high


def _error_window(
    version: str | None,
    pool: list[tuple[str, np.ndarray, np.ndarray]],
    complete: bool,
    confidence: float,
    metric: str,
) -> dict[str, Any]:
    y = np.concatenate([d[1] for d in pool])
    value, low, high = error_interval(y, np.concatenate([d[2] for d in pool]), metric, confidence)
    return {
        "version": version,
        "first": pool[0][0],
        "last": pool[-1][0],
        "days": len(pool),
        "n": len(y),
        "positives": int((y > 0).sum()),
        "metric": metric,
        "value": value,
        "auc": None,
        "low": low,
        "high": high,
        "complete": complete,
    }


def _value(window: Mapping[str, Any]) -> float | None:
    """A realised window's metric (results stored before windows named theirs hold "auc")."""
    value = window.get("value", window.get("auc"))
    return None if value is None else float(value)


def _metric_label(window: Mapping[str, Any]) -> str:
    return {"rmse": "RMSE", "mae": "MAE", "pr_auc": "PR AUC"}.get(str(window.get("metric")), "AUC")


def realised_drop(
    windows: Sequence[Mapping[str, Any]],
    expected: float | None,
    spec: DriftSpec,
    version: str | None = None,
) -> bool:
    """The newest complete pooled window (of ``version``'s predictions, when given) has its
    interval wholly below ``expected − min_performance_drop`` — for an error metric (rmse,
    mae) wholly above ``expected × (1 + min_performance_drop)`` — (False without an expected
    metric or a complete window)."""
    if expected is None:
        return False
    complete = [
        w
        for w in windows
        if w.get("complete")
        and w.get("high") is not None
        and (version is None or str(w.get("version")) == str(version))
    ]
    if not complete:
        return False
    newest = complete[-1]
    if newest.get("metric") in ERROR_METRICS:
        return bool(newest["low"] > expected * (1 + spec.min_performance_drop))
    return bool(newest["high"] < expected - spec.min_performance_drop)


def window_signals(
    votes: Mapping[str, Any],
    prediction: DriftScore | None,
    estimated: Mapping[str, Any] | None,
    realised: bool,
) -> list[str]:
    """The window's signals, in the order input, prediction, estimated, realised."""
    signals = []
    if votes.get("signal"):
        signals.append(INPUT_DRIFT)
    if prediction is not None and prediction.drifted:
        signals.append(PREDICTION_DRIFT)
    if estimated is not None and estimated.get("signal"):
        signals.append(ESTIMATED_DROP)
    if realised:
        signals.append(REALISED_DROP)
    return signals


# ---- persistence ----------------------------------------------------------------------------------


def signalled(result: Mapping[str, Any], version: str) -> bool:
    """Whether a stored check result of ``version`` had a signal (a no-data check, a result of
    another version, or one stored without signals never has)."""
    return (
        str(result.get("model_version")) == str(version)
        and result.get("status") != "no-data"
        and not result.get("no_data", False)
        and bool(result.get("signals"))
    )


def persistence(
    signals: Sequence[str],
    window: tuple[str, str],
    version: str,
    previous: Sequence[Mapping[str, Any]],
    spec: PersistenceSpec,
) -> dict[str, Any]:
    """Whether the window's signals persist: the window signals, and at least ``spec.k`` of the
    last ``spec.n`` checks (this one and ``previous[: n − 1]``, the preceding checks newest
    first) are of ``version`` and signalled.

    Returns ``k``, ``n``, ``count``, ``windows`` (the last days of the signalling windows,
    oldest first), ``since`` (the first day of the oldest of them; None without any) and
    ``persistent``.
    """
    counted = [r for r in list(previous)[: max(spec.n - 1, 0)] if signalled(r, version)]
    hits = [(str(r["window"][0]), str(r["window"][-1])) for r in reversed(counted)]
    if signals:
        hits.append((window[0], window[-1]))
    return {
        "k": spec.k,
        "n": spec.n,
        "count": len(hits),
        "windows": [last for _, last in hits],
        "since": min(first for first, _ in hits) if hits else None,
        "persistent": bool(signals) and len(hits) >= spec.k,
    }


def severity(signals: Sequence[str], persistent: bool) -> Severity:
    """none: no signal; watch: a signal that does not persist; drift: persistent; severe:
    persistent with a performance drop signal."""
    if not signals:
        return "none"
    if not persistent:
        return "watch"
    return "severe" if any(s in PERFORMANCE_SIGNALS for s in signals) else "drift"


def result_key(model: str, day: date) -> str:
    """Where the check of the window ending ``day`` is stored in the reports zone."""
    return f"drift/{model}-{day.isoformat()}.json"


def previous_results(reports: Storage, model: str, day: date, n: int) -> list[dict[str, Any]]:
    """The stored check results of the ``n − 1`` days before ``day``, newest first (days
    without one are left out: they count as no signal)."""
    from tasks.storage import read_json

    out = []
    for back in range(1, max(n, 1)):
        key = result_key(model, day - timedelta(days=back))
        if reports.exists(key):
            stored = read_json(reports, key)
            if isinstance(stored, dict):
                out.append(stored)
    return out


def latest_check(reports: Storage, model: str, day: date) -> dict[str, Any] | None:
    """The stored check of the window ending ``day``, else of the newest of the two days
    before it; None without one."""
    found = previous_results(reports, model, day + timedelta(days=1), 4)
    return found[0] if found else None


def report_key(model: str, day: date) -> str:
    """Where the HTML report of the check of the window ending ``day`` is in the reports zone."""
    return f"drift/{model}-{day}.html"


def write_check(reports: Storage, day: date, result: DriftResult, html: str) -> str:
    """Store the check of the window ending ``day`` in the reports zone: its HTML report and
    its result (what the next days' checks count persistence on, :func:`previous_results`).
    Returns the report's key."""
    key = report_key(result.model, day)
    reports.write_bytes(key, html.encode("utf-8"))
    write_json(reports, result_key(result.model, day), result.to_dict())
    return key


def report_link(reports_zone: str, key: str) -> str | None:
    """The address of a stored report when a browser can open it (an http(s) reports zone),
    else None."""
    uri = f"{reports_zone}/{key}"
    return uri if uri.startswith(("http://", "https://")) else None


# ---- events and reports ---------------------------------------------------------------------------


def detected_event(result: DriftResult) -> dict[str, Any]:
    by_name = {s.feature: s for s in result.scores}
    if result.prediction is not None:
        by_name["prediction"] = result.prediction
    return {
        "event": DETECTED_EVENT,
        "resource": {
            "prefect.resource.id": f"driftloop.model.{result.model}",
            "driftloop.model": result.model,
            "driftloop.version": result.model_version,
        },
        "payload": {
            "window": list(result.window),
            "model_version": result.model_version,
            "drifted": result.drifted,
            "scores": {
                n: {"psi": round(by_name[n].psi, 4), "threshold": round(by_name[n].threshold, 4)}
                for n in result.drifted
            },
            "signals": list(result.signals),
            "severity": result.severity,
            "since": result.persistence.get("since"),
        },
    }


def _round(value: Any, digits: int = 4) -> Any:
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else ""
    return "" if value is None else value


def score_rows(result: DriftResult) -> list[dict[str, Any]]:
    """One row per score (largest PSI first): PSI, threshold and its source, role and weight,
    KS where computed, the test's p-value and the row counts."""
    scores = sorted(
        result.scores + ([result.prediction] if result.prediction else []),
        key=lambda s: -s.psi if math.isfinite(s.psi) else math.inf,
    )
    return [
        {
            "feature": s.feature,
            "kind": s.kind,
            "role": s.role if s.kind != "prediction" else "",
            "weight": _round(s.weight, 3) if s.kind != "prediction" else "",
            "psi": _round(s.psi),
            "threshold": _round(s.threshold),
            "source": s.threshold_source,
            "null windows": s.null_windows,
            "drifted": "yes" if s.drifted else "",
            "ks": _round(s.ks),
            "p-value": "" if s.p_value is None else f"{s.p_value:.2g}",
            "rows now": s.n_current,
            "rows reference": s.n_reference,
        }
        for s in scores
    ]


def drift_report(result: DriftResult, reference: dict[str, Any], features: pd.DataFrame) -> str:
    """Offline HTML: severity and signals, drift scores with their thresholds, the distributions
    of the most drifted features, and estimated against realised performance."""
    from tasks.report import cards, figure, img, page, png_data_uri, table

    scores = sorted(
        result.scores + ([result.prediction] if result.prediction else []),
        key=lambda s: -s.psi if math.isfinite(s.psi) else math.inf,
    )
    fig = figure(7.0, max(2.5, 0.28 * len(scores)))
    ax = fig.add_subplot()
    names = [s.feature for s in scores][::-1]
    ax.barh(
        names,
        [s.psi if math.isfinite(s.psi) else 0.0 for s in scores][::-1],
        color=["#d64545" if s.drifted else "#9fb3c8" for s in scores][::-1],
    )
    ax.scatter(
        [s.threshold for s in scores][::-1],
        names,
        marker="|",
        color="black",
        s=120,
        label="threshold",
    )
    ax.set_xlabel("PSI")
    ax.legend(loc="lower right")
    est = result.estimated
    votes = result.votes
    persist = result.persistence
    parts = [
        cards(
            [
                ("severity", result.severity),
                ("verdict", "drift" if result.detected else "no drift"),
                ("signals", ", ".join(result.signals) or "none"),
                ("model", f"v{result.model_version}"),
                ("window", " → ".join(result.window)),
                ("drifted", len(result.drifted)),
            ]
        ),
        "<h2>Verdict</h2>",
        table(
            [
                {
                    "what": "input votes",
                    "value": f"{votes.get('share', 0.0):.0%} of the voting weight drifted "
                    f"({len(votes.get('drifted', []))} of {votes.get('voting', 0)} inputs)",
                    "bar": f"≥ {votes.get('min_share', 0.0):.0%} and ≥ "
                    f"{votes.get('min_count', 0)} inputs",
                },
                {
                    "what": "persistence",
                    "value": f"{persist.get('count', 0)} signalling windows of v"
                    f"{result.model_version} ({', '.join(persist.get('windows', [])) or 'none'})",
                    "bar": f"≥ {persist.get('k', '')} of the last {persist.get('n', '')} checks",
                },
            ]
        ),
        "<h2>Drift scores</h2>",
        img(png_data_uri(fig), "PSI per feature"),
        table(score_rows(result)),
    ]
    for s in [s for s in scores if s.kind != "prediction"][:4]:
        parts.append(f"<h2>{html.escape(s.feature)}</h2>")
        parts.append(
            img(png_data_uri(_distribution_figure(s.feature, reference, features)), s.feature)
        )
    parts.append("<h2>Performance: estimated (CBPE) and realised</h2>")
    expected = reference.get("expected_metric")
    if est is not None:
        parts.append(
            table(
                [
                    {
                        "estimated AUC (window)": _round(est["auc"]),
                        "estimated AUC (training)": _round(est["reference"]),
                        "drop": _round(est["drop"]),
                        "allowed drop": _round(est["allowed_drop"]),
                        "holdout AUC": _round(expected),
                        "signal": "yes" if est["signal"] else "",
                    }
                ]
            )
        )
    else:
        parts.append("<p><em>no estimate: no predictions in the window or none stored</em></p>")
    realised = [w for w in result.realised if _value(w) is not None]
    label = _metric_label(realised[0]) if realised else "AUC"
    if realised:
        fig = figure(7.0, 3.0)
        ax = fig.add_subplot()
        for version in sorted({str(w.get("version")) for w in realised}):
            mine = [w for w in realised if str(w.get("version")) == version]
            auc = np.array([_value(w) for w in mine])
            ax.errorbar(
                pd.to_datetime([w["last"] for w in mine]),
                auc,
                yerr=[
                    auc - np.array([w["low"] for w in mine]),
                    np.array([w["high"] for w in mine]) - auc,
                ],
                marker="o",
                capsize=3,
                label=f"v{version} (95 % interval)",
            )
        if expected is not None:
            ax.axhline(
                expected, color="grey", linestyle="--", linewidth=1, label="holdout (current)"
            )
        ax.set_ylabel(f"{label} (by last snapshot day)")
        ax.tick_params(axis="x", rotation=60, labelsize=7)
        ax.legend(loc="lower left", fontsize=7)
        parts.append(img(png_data_uri(fig), f"realised {label} per pooled window"))
    parts.append(
        table(
            [
                {
                    "version": f"v{w['version']}" if w.get("version") else "",
                    "first": w["first"],
                    "last": w["last"],
                    "days": w["days"],
                    "n": w["n"],
                    "positives": w["positives"],
                    label: _round(_value(w)),
                    "95 % low": _round(w["low"]),
                    "95 % high": _round(w["high"]),
                    "complete": "yes" if w["complete"] else "no",
                }
                for w in result.realised
            ]
        )
    )
    return page(
        f"Drift — {result.model}", "".join(parts), "compared with the champion's reference window"
    )


def _distribution_figure(name: str, reference: dict[str, Any], features: pd.DataFrame) -> Any:
    from tasks.drift_stats import bin_proportions, category_shares
    from tasks.report import figure

    fig = figure(6.5, 2.8)
    ax = fig.add_subplot()
    if name in reference.get("numeric", {}):
        ref = reference["numeric"][name]
        now = bin_proportions(
            pd.to_numeric(features[name], errors="coerce").to_numpy(dtype="float64"), ref["edges"]
        )
        labels = [f"≤{e:.3g}" for e in ref["edges"][1:-1]] + ["more"]
        ref_props = ref["proportions"]
    else:
        ref = reference["categorical"][name]
        values = _fold(features[name], ref["proportions"])
        shares, labels = category_shares(values, list(ref["proportions"]))
        now = list(shares)
        ref_props = [ref["proportions"].get(c, 0.0) for c in labels]
    x = np.arange(len(labels))
    ax.bar(x - 0.2, ref_props, width=0.4, label="reference", color="#9fb3c8")
    ax.bar(x + 0.2, now, width=0.4, label="now", color="#d64545")
    ax.set_xticks(x, labels, rotation=45, fontsize=7)
    ax.set_ylabel("share")
    ax.legend()
    return fig


# ---- the check --------------------------------------------------------------------------------------


@dataclass
class DriftInputs:
    """What one drift check compares: the champion's reference and the window's data."""

    model: str
    model_version: str
    reference: dict[str, Any]
    first: date
    day: date
    features: pd.DataFrame
    predictions: np.ndarray | None  # the champion's predictions in the window, if any
    context_inputs: tuple[str, ...] = ()  # the feature columns that come from contexts

    def spec(self, usecase: UseCase) -> DriftSpec:
        """The use case's drift settings for this window (context inputs as context)."""
        return effective_spec(usecase.drift, self.context_inputs)


def load_inputs(settings: Settings, usecase: Any, lake: Lake, day: date) -> DriftInputs | None:
    """The champion's reference and the feature rows and predictions of the window ending
    ``day``; None without a champion."""
    from tasks import registry
    from tasks.score import read_predictions
    from tasks.training_set import SnapshotColumns

    name = usecase.model.registered_name
    version = registry.champion_version(settings.tracking_uri, name)
    if version is None:
        return None
    reference = registry.load_reference(settings.tracking_uri, name, version)
    first = day - timedelta(days=usecase.drift.window_days - 1)
    columns = SnapshotColumns.of(usecase)
    prediction = usecase.prediction_column
    window_preds = read_predictions(
        lake, name, first=first, last=day, entity=columns.entity, prediction=prediction
    )
    window_preds = window_preds[window_preds["model_version"].astype(str) == str(version)]
    features, context_inputs = read_input_window(lake, usecase, first, day)
    return DriftInputs(
        model=name,
        model_version=version,
        reference=reference,
        first=first,
        day=day,
        features=features,
        predictions=window_preds[prediction].to_numpy() if len(window_preds) else None,
        context_inputs=tuple(context_inputs),
    )


def judge(
    inputs: DriftInputs,
    scores: list[DriftScore],
    prediction: DriftScore | None,
    spec: DriftSpec,
    *,
    realised: list[dict[str, Any]],
    previous: Sequence[Mapping[str, Any]],
) -> DriftResult:
    """The verdict of a window from its scores, its realised performance and the preceding
    checks (newest first). Pure."""
    _, drifted = verdict(scores, prediction, spec)
    votes = input_votes(scores, spec)
    estimated = estimated_performance(inputs.reference, inputs.predictions, spec)
    realised_signal = realised_drop(
        realised, inputs.reference.get("expected_metric"), spec, version=inputs.model_version
    )
    signals = window_signals(votes, prediction, estimated, realised_signal)
    window = (inputs.first.isoformat(), inputs.day.isoformat())
    persist = persistence(signals, window, inputs.model_version, previous, spec.persistence)
    return DriftResult(
        model=inputs.model,
        model_version=inputs.model_version,
        window=window,
        scores=scores,
        prediction=prediction,
        detected=persist["persistent"],
        drifted=drifted,
        signals=signals,
        severity=severity(signals, persist["persistent"]),
        estimated=estimated,
        realised=realised,
        votes=votes,
        persistence=persist,
    )


def realised_performance(usecase: Any, lake: Lake, inputs: DriftInputs) -> list[dict[str, Any]]:
    """The champion version's realised ROC AUC over pooled labelled windows known at the
    window's last day (:func:`pooled_performance`)."""
    from tasks.ingest import read_validated
    from tasks.score import read_predictions
    from tasks.training_set import SnapshotColumns, entity_frame

    day = inputs.day
    columns = SnapshotColumns.of(usecase)
    source = usecase.datasets[usecase.features.source_dataset]
    active = read_validated(lake, source, last=day, columns=[columns.entity, columns.day])
    labels = read_validated(lake, usecase.datasets[usecase.target.labels_dataset], last=day)
    labelled = entity_frame(
        active,
        labels,
        as_of=day,
        horizon_days=usecase.target.horizon_days,
        label_delay_days=usecase.target.label_delay_days,
        columns=columns,
        recurring=usecase.target.recurring,
    )
    prediction = usecase.prediction_column
    predictions = read_predictions(
        lake, inputs.model, last=day, entity=columns.entity, prediction=prediction
    )
    return pooled_performance(
        predictions,
        labelled,
        columns.label,
        min_positives=usecase.drift.min_window_positives,
        entity=columns.entity,
        prediction=prediction,
        metric=usecase.model.metric,
    )


def finish_check(
    usecase: UseCase,
    lake: Lake,
    inputs: DriftInputs,
    scores: list[DriftScore],
    prediction: DriftScore | None,
) -> tuple[DriftResult, str]:
    """Verdict (signals, persistence over the stored checks of the preceding days, severity)
    and performance for the scores of a window; (result, report HTML)."""
    spec = inputs.spec(usecase)
    result = judge(
        inputs,
        scores,
        prediction,
        spec,
        realised=realised_performance(usecase, lake, inputs),
        previous=previous_results(lake.reports, inputs.model, inputs.day, spec.persistence.n),
    )
    return result, drift_report(result, inputs.reference, inputs.features)


def no_data_message(inputs: DriftInputs) -> str:
    window = inputs.first.isoformat()
    if inputs.first != inputs.day:
        window += f" → {inputs.day.isoformat()}"
    return (
        f"no data: no feature rows for {window}, so nothing was compared (the day's files were "
        "rejected or have not arrived; see the validation report)"
    )


def no_data_check(inputs: DriftInputs) -> tuple[DriftResult, str]:
    """The check of a window without feature rows: status "no-data" (not "no drift"), no scores,
    no signal, and a report that says so; (result, report HTML)."""
    from tasks.report import cards, page

    result = DriftResult(
        model=inputs.model,
        model_version=inputs.model_version,
        window=(inputs.first.isoformat(), inputs.day.isoformat()),
        scores=[],
        prediction=None,
        detected=False,
        no_data=True,
    )
    body = (
        cards(
            [
                ("verdict", "no data"),
                ("model", f"v{result.model_version}"),
                ("window", " → ".join(result.window)),
            ]
        )
        + f"<h2>No data</h2><p>{html.escape(no_data_message(inputs), quote=False)}.</p>"
    )
    return result, page(
        f"Drift — {result.model}", body, "compared with the champion's reference window"
    )


def summary_markdown(result: DriftResult, message: str = "") -> str:
    """One line for the run's artifact: the verdict (or "No data"), model, window, severity,
    signals and drifted inputs."""
    head = {"drift": "Drift detected", "no-drift": "No drift", "no-data": "No data"}[result.status]
    line = f"**{head}** for {result.model} v{result.model_version} in {' → '.join(result.window)}"
    if result.no_data:
        return f"{line}: {message}"
    est = result.estimated
    perf = ""
    if est is not None and est.get("auc") is not None:
        perf = f"; estimated AUC {est['auc']:.3f} (training {est['reference']:.3f})"
    done = [
        w
        for w in result.realised
        if w["complete"] and _value(w) is not None and w.get("version") == result.model_version
    ]
    if done:
        w = done[-1]
        perf += (
            f"; realised {_metric_label(w)} {_value(w):.3f} [{w['low']:.3f}, {w['high']:.3f}] "
            f"({w['first']} → {w['last']})"
        )
    return (
        f"{line}: severity **{result.severity}**, signals: {', '.join(result.signals) or 'none'}; "
        f"drifted: {', '.join(result.drifted) or 'none'}{perf}"
    )
