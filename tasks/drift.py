"""Drift monitoring: a window of live features and predictions against the champion's reference.

The reference is stored with the model at training time (``reference.json``, see
``tasks.reference.reference_profile`` and ``tasks.training.reference_rows``): the distributions of
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
    ``min_window_positives`` positives and one negative
    (:func:`tasks.drift_performance.pooled_performance`); the
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

This module is the check itself: the result (:class:`DriftResult`) and the signal names, reading
the window, the inputs' roles and weights, the scores, the votes and verdict, the signals,
persistence and severity, the detection event, and loading, judging and finishing a check
(with its "no data" case). The rest lives beside it: the performance signals' computations
(estimated and pooled realised performance) in :mod:`tasks.drift_performance`; where check
results are stored and read back (the reports zone) in :mod:`tasks.drift_history`; what
renders a finished check for people (the HTML report, the score table, the summary line) in
:mod:`tasks.drift_report`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import numpy as np
import pandas as pd

from tasks.artifacts import Markdown
from tasks.drift_history import previous_results
from tasks.drift_performance import estimated_performance, realised_drop, realised_performance
from tasks.drift_stats import DriftScore, categorical_drift, numeric_drift
from tasks.features import feature_key
from tasks.storage import read_parquet

if TYPE_CHECKING:
    from driftloop_config.settings import Settings
    from driftloop_config.usecase import DriftSpec, PersistenceSpec, UseCase
    from tasks.storage import Lake

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
OTHER_CATEGORY = "__other__"  # the reference's folded rare tail (tasks.reference.OTHER_CATEGORY)


class DriftOutcome(TypedDict, total=False):
    """A drift check as plain values: what a drift run returns (with the ``day`` and its
    ``report``, or the ``reason`` nothing was compared) and what is stored of each check."""

    day: str | None
    report: str
    reason: str
    model: str
    model_version: str
    window: list[str]
    scores: list[dict[str, Any]]
    prediction: dict[str, Any] | None
    detected: bool
    drifted: list[str]
    no_data: bool
    signals: list[str]
    severity: Severity
    estimated: dict[str, Any] | None
    realised: list[dict[str, Any]]
    votes: dict[str, Any]
    persistence: dict[str, Any]
    status: DriftStatus | Literal["skipped"]


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
    #: :func:`tasks.drift_performance.estimated_performance`); None without predictions or a
    #: stored estimate
    estimated: dict[str, Any] | None = None
    #: the realised ROC AUC of pooled labelled windows
    #: (:func:`tasks.drift_performance.pooled_performance`)
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

    def to_dict(self) -> DriftOutcome:
        """The check as plain values (stored as JSON next to its report)."""
        plain = asdict(self)  # deep: the scores as dicts, the dicts copied
        return {
            "model": self.model,
            "model_version": self.model_version,
            "window": list(self.window),
            "scores": plain["scores"],
            "prediction": plain["prediction"],
            "detected": self.detected,
            "drifted": plain["drifted"],
            "no_data": self.no_data,
            "signals": plain["signals"],
            "severity": self.severity,
            "estimated": plain["estimated"],
            "realised": plain["realised"],
            "votes": plain["votes"],
            "persistence": plain["persistence"],
            "status": self.status,
        }


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
    from tasks.reference import fold_categories

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


# ---- events ---------------------------------------------------------------------------------------


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


def load_inputs(settings: Settings, usecase: UseCase, lake: Lake, day: date) -> DriftInputs | None:
    """The champion's reference and the feature rows and predictions of the window ending
    ``day``; None without a champion."""
    from tasks import registry
    from tasks.score import read_predictions
    from tasks.training_set import SnapshotColumns

    name = usecase.loop().model.registered_name
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


def window_verdict(
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


@dataclass(frozen=True)
class NotChecked:
    """A drift run that compares nothing: nothing validated yet, or no champion to compare."""

    day: date | None
    reason: str

    def artifact(self) -> Markdown:
        return Markdown(key="drift-summary", markdown=f"**Not checked**: {self.reason}")

    def outcome(self) -> DriftOutcome:
        return {
            "day": self.day.isoformat() if self.day else None,
            "detected": False,
            "status": "skipped",
            "reason": self.reason,
        }


def window_inputs(
    settings: Settings, usecase: UseCase, lake: Lake, day: date | None = None
) -> DriftInputs | NotChecked:
    """What the check of the window ending ``day`` (default: the newest validated day)
    compares (:func:`load_inputs`), or why there is nothing to compare."""
    from tasks.training import latest_day

    day = day or latest_day(lake, usecase)
    if day is None:
        return NotChecked(None, "nothing validated yet: land and ingest data first")
    inputs = load_inputs(settings, usecase, lake, day)
    if inputs is None:
        return NotChecked(day, "no champion yet: there is no model to compare with")
    return inputs


def _alpha(inputs: DriftInputs, spec: DriftSpec) -> float:
    return window_alpha(inputs.reference, spec, with_predictions=inputs.predictions is not None)


def window_checks(inputs: DriftInputs, usecase: UseCase, *, parts: int) -> list[dict[str, Any]]:
    """The :func:`feature_checks` of the window at its :func:`window_alpha`, cut into at most
    ``parts`` groups; none for a window without feature rows."""
    if inputs.features.empty:
        return []
    spec = inputs.spec(usecase)
    return feature_checks(inputs, spec, alpha=_alpha(inputs, spec), parts=parts)


@dataclass(frozen=True)
class Checked:
    """A finished check, its report written: the result, the report's key in reports/, and for
    a window without data, why nothing was compared."""

    result: DriftResult
    report: str
    message: str = ""

    def outcome(self) -> DriftOutcome:
        """The run's result: the check's result, or for a window without data, what was (not)
        compared and why (no "window" key)."""
        day = self.result.window[1]
        if not self.result.no_data:
            return {**self.result.to_dict(), "day": day, "report": self.report}
        return {
            "day": day,
            "detected": False,
            "status": self.result.status,
            "model": self.result.model,
            "model_version": self.result.model_version,
            "reason": self.message,
            "report": self.report,
        }

    def events(self) -> list[dict[str, Any]]:
        """``driftloop.drift.detected`` when the drift persisted (it starts retraining)."""
        return [detected_event(self.result)] if self.result.detected else []


def finish_check(
    usecase: UseCase, lake: Lake, inputs: DriftInputs, scores: list[DriftScore]
) -> Checked:
    """The verdict of a window from its feature scores (:func:`window_checks`): the prediction
    check, signals, persistence over the stored checks of the preceding days, severity and
    performance; the report is written to the lake. A window without feature rows gets a
    "no data" check (:func:`no_data_check`)."""
    from tasks.drift_history import write_check
    from tasks.drift_report import drift_report

    if inputs.features.empty:
        result, html = no_data_check(inputs)
        return Checked(
            result, write_check(lake.reports, inputs.day, result, html), no_data_message(inputs)
        )
    spec = inputs.spec(usecase)
    prediction = check_predictions(
        inputs.reference, inputs.predictions, alpha=_alpha(inputs, spec), spec=spec
    )
    result = window_verdict(
        inputs,
        scores,
        prediction,
        spec,
        realised=realised_performance(usecase, lake, inputs),
        previous=previous_results(lake.reports, inputs.model, inputs.day, spec.persistence.n),
    )
    html = drift_report(result, inputs.reference, inputs.features)
    return Checked(result, write_check(lake.reports, inputs.day, result, html))


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
