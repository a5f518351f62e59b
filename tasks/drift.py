"""Drift monitoring: a window of live features and predictions against the champion's reference.

The reference is the training window's distributions, stored with the model at training time
(``reference.json``, see ``tasks.train.reference_profile``). Every model input is compared with
the statistics of :mod:`tasks.drift_stats` (PSI with a sample-size-calibrated threshold; chi-square
for categoricals), and so is the prediction distribution. Model performance is tracked once the
delayed labels arrive: predictions are joined with the labels of their snapshot.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from tasks.drift_stats import DriftScore, categorical_drift, numeric_drift
from tasks.features import feature_key
from tasks.storage import read_parquet

if TYPE_CHECKING:
    from driftloop.usecase import DriftSpec
    from tasks.storage import Lake

DETECTED_EVENT = "driftloop.drift.detected"
#: a check's outcome: drift detected, none detected, or nothing to compare (no data in the window)
DriftStatus = Literal["drift", "no-drift", "no-data"]


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
    performance: list[dict[str, Any]] = field(default_factory=list)
    #: the window had no feature rows: nothing was compared (never reported as "no drift")
    no_data: bool = False

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


def read_feature_window(lake: Lake, first: date, last: date) -> pd.DataFrame:
    """The feature rows of days ``first``..``last`` (missing days are skipped)."""
    zone = lake.zone("features")
    frames = []
    day = first
    while day <= last:
        if zone.exists(feature_key(day)):
            frames.append(read_parquet(zone, feature_key(day)))
        day += timedelta(days=1)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def check_window(
    reference: dict[str, Any],
    features: pd.DataFrame,
    predictions: np.ndarray | None,
    spec: DriftSpec,
) -> tuple[list[DriftScore], DriftScore | None]:
    """Compare every referenced feature (and the predictions) with the reference profile.

    ``alpha`` is split across the checks of this window (Bonferroni), so a window without drift
    raises a false alarm with probability at most ``spec.alpha``. The features can also be
    checked in groups (:func:`feature_groups`, :func:`check_features` per group, results
    concatenated in group order): the scores are the same.
    """
    alpha = window_alpha(reference, spec, with_predictions=predictions is not None)
    scores = check_features(reference, features, alpha=alpha, spec=spec)
    return scores, check_predictions(reference, predictions, alpha=alpha, spec=spec)


def window_alpha(reference: dict[str, Any], spec: DriftSpec, *, with_predictions: bool) -> float:
    """The false-alarm rate of each check of a window: ``spec.alpha`` over all its checks."""
    checks = len(reference.get("numeric", {})) + len(reference.get("categorical", {}))
    return spec.alpha / max(checks + with_predictions, 1)


def checked_features(reference: dict[str, Any], columns: Iterable[str]) -> list[str]:
    """The referenced features present in ``columns``, in check order (numerics first)."""
    present = set(columns)
    ordered = [*reference.get("numeric", {}), *reference.get("categorical", {})]
    return [name for name in ordered if name in present]


def feature_groups(
    reference: dict[str, Any], columns: Iterable[str], parts: int
) -> list[list[str]]:
    """The checked features cut into at most ``parts`` contiguous groups of about equal size."""
    names = checked_features(reference, columns)
    parts = max(1, min(parts, len(names)))
    size, extra = divmod(len(names), parts)
    groups, start = [], 0
    for i in range(parts):
        stop = start + size + (i < extra)
        groups.append(names[start:stop])
        start = stop
    return [g for g in groups if g]


def reference_subset(reference: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The reference profile of only these features (what one group's check needs)."""
    wanted = set(names)
    return {
        kind: {n: ref for n, ref in reference.get(kind, {}).items() if n in wanted}
        for kind in ("numeric", "categorical")
    }


def check_features(
    reference: dict[str, Any], features: pd.DataFrame, *, alpha: float, spec: DriftSpec
) -> list[DriftScore]:
    """Drift scores of the referenced features present in ``features``, in check order.

    Pure: a group of features can be scored on any worker, given its columns and its part of
    the reference (:func:`reference_subset`) and the window's ``alpha``
    (:func:`window_alpha`).
    """
    numeric = reference.get("numeric", {})
    categorical = reference.get("categorical", {})
    scores: list[DriftScore] = []
    for name in checked_features(reference, features.columns):
        if name in numeric:
            ref = numeric[name]
            scores.append(
                numeric_drift(
                    name,
                    pd.to_numeric(features[name], errors="coerce").to_numpy(dtype="float64"),
                    edges=ref["edges"],
                    reference_shares=ref["proportions"],
                    n_reference=int(ref["count"] * (1 - ref.get("null_share", 0.0))),
                    alpha=alpha,
                    psi_min=spec.psi_min,
                    null_share_reference=ref.get("null_share", 0.0),
                )
            )
        else:
            ref = categorical[name]
            scores.append(
                categorical_drift(
                    name,
                    features[name],
                    reference_shares=ref["proportions"],
                    n_reference=int(ref["count"] * (1 - ref.get("null_share", 0.0))),
                    alpha=alpha,
                    psi_min=spec.psi_min,
                )
            )
    return scores


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
        kind="prediction",
    )


def verdict(
    scores: list[DriftScore], prediction: DriftScore | None, spec: DriftSpec
) -> tuple[bool, list[str]]:
    """Drift is declared when at least ``spec.min_drifted_features`` inputs drift, or the
    predictions do."""
    drifted = [s.feature for s in sorted(scores, key=lambda s: -s.psi) if s.drifted]
    detected = len(drifted) >= spec.min_drifted_features or bool(prediction and prediction.drifted)
    if prediction is not None and prediction.drifted:
        drifted.append("prediction")
    return detected, drifted


def performance_by_day(
    predictions: pd.DataFrame, labelled: pd.DataFrame, label: str, *, entity: str = "customer_id"
) -> list[dict[str, Any]]:
    """ROC AUC per scoring day, for the predictions whose snapshot labels are known.

    ``predictions``: <entity>, event_timestamp, churn_probability; ``labelled``: the entity
    frame of known labels (<entity>, event_timestamp, <label>).
    """
    from sklearn.metrics import roc_auc_score

    from tasks.score import PROBABILITY

    if predictions.empty or labelled.empty:
        return []
    p = predictions.assign(event_timestamp=pd.to_datetime(predictions["event_timestamp"], utc=True))
    lab = labelled.assign(event_timestamp=pd.to_datetime(labelled["event_timestamp"], utc=True))
    joined = p.merge(lab[[entity, "event_timestamp", label]], on=[entity, "event_timestamp"])
    out = []
    for ts, rows in joined.groupby("event_timestamp", sort=True):
        y = rows[label].to_numpy()
        auc = float(roc_auc_score(y, rows[PROBABILITY])) if 0 < y.sum() < len(y) else None
        out.append(
            {
                "snapshot": str(ts)[:10],
                "auc": auc,
                "n": len(rows),
                "positives": int(y.sum()),
            }
        )
    return out


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
        },
    }


def drift_report(result: DriftResult, reference: dict[str, Any], features: pd.DataFrame) -> str:
    """Offline HTML: verdict, drift scores, the distributions of the most drifted features, and
    performance over time."""
    from tasks.report import cards, figure, img, page, png_data_uri, table

    scores = sorted(
        result.scores + ([result.prediction] if result.prediction else []), key=lambda s: -s.psi
    )
    rows = [
        {
            "feature": s.feature,
            "kind": s.kind,
            "psi": round(s.psi, 4),
            "threshold": round(s.threshold, 4),
            "drifted": "yes" if s.drifted else "",
            "p-value": "" if s.p_value is None else f"{s.p_value:.2g}",
            "rows now": s.n_current,
            "rows reference": s.n_reference,
        }
        for s in scores
    ]
    fig = figure(7.0, max(2.5, 0.28 * len(scores)))
    ax = fig.add_subplot()
    names = [s.feature for s in scores][::-1]
    ax.barh(
        names,
        [s.psi for s in scores][::-1],
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
    parts = [
        cards(
            [
                ("verdict", "drift" if result.detected else "no drift"),
                ("model", f"v{result.model_version}"),
                ("window", " → ".join(result.window)),
                ("drifted", len(result.drifted)),
            ]
        ),
        "<h2>Drift scores</h2>",
        img(png_data_uri(fig), "PSI per feature"),
        table(rows),
    ]
    for s in [s for s in scores if s.kind != "prediction"][:4]:
        parts.append(f"<h2>{s.feature}</h2>")
        parts.append(
            img(png_data_uri(_distribution_figure(s.feature, reference, features)), s.feature)
        )
    if result.performance:
        perf = [p for p in result.performance if p["auc"] is not None]
        if perf:
            fig = figure(7.0, 3.0)
            ax = fig.add_subplot()
            ax.plot([p["snapshot"] for p in perf], [p["auc"] for p in perf], marker="o")
            ax.set_ylabel("ROC AUC")
            ax.tick_params(axis="x", rotation=60, labelsize=7)
            parts += [
                "<h2>Performance over time (labelled snapshots)</h2>",
                img(png_data_uri(fig), "AUC"),
            ]
        parts.append(table(result.performance))
    return page(
        f"Drift — {result.model}", "".join(parts), "compared with the champion's training window"
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
        shares, labels = category_shares(features[name], list(ref["proportions"]))
        now = list(shares)
        ref_props = [ref["proportions"].get(c, 0.0) for c in labels]
    x = np.arange(len(labels))
    ax.bar(x - 0.2, ref_props, width=0.4, label="reference", color="#9fb3c8")
    ax.bar(x + 0.2, now, width=0.4, label="now", color="#d64545")
    ax.set_xticks(x, labels, rotation=45, fontsize=7)
    ax.set_ylabel("share")
    ax.legend()
    return fig


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


def load_inputs(settings: Any, usecase: Any, lake: Lake, day: date) -> DriftInputs | None:
    """The champion's reference and the feature rows and predictions of the window ending
    ``day``; None without a champion."""
    from tasks import registry
    from tasks.score import PROBABILITY, read_predictions
    from tasks.training_set import SnapshotColumns

    name = usecase.model.registered_name
    version = registry.champion_version(settings.tracking_uri, name)
    if version is None:
        return None
    reference = registry.load_reference(settings.tracking_uri, name, version)
    first = day - timedelta(days=usecase.drift.window_days - 1)
    columns = SnapshotColumns.of(usecase)
    window_preds = read_predictions(lake, name, first=first, last=day, entity=columns.entity)
    window_preds = window_preds[window_preds["model_version"].astype(str) == str(version)]
    return DriftInputs(
        model=name,
        model_version=version,
        reference=reference,
        first=first,
        day=day,
        features=read_feature_window(lake, first, day),
        predictions=window_preds[PROBABILITY].to_numpy() if len(window_preds) else None,
    )


def finish_check(
    usecase: Any,
    lake: Lake,
    inputs: DriftInputs,
    scores: list[DriftScore],
    prediction: DriftScore | None,
) -> tuple[DriftResult, str]:
    """Verdict and performance over time for the scores of a window; (result, report HTML)."""
    from tasks.ingest import read_validated
    from tasks.score import read_predictions
    from tasks.training_set import SnapshotColumns, entity_frame

    day = inputs.day
    detected, drifted = verdict(scores, prediction, usecase.drift)
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
    )
    performance = performance_by_day(
        read_predictions(lake, inputs.model, last=day, entity=columns.entity),
        labelled,
        columns.label,
        entity=columns.entity,
    )
    result = DriftResult(
        model=inputs.model,
        model_version=inputs.model_version,
        window=(inputs.first.isoformat(), day.isoformat()),
        scores=scores,
        prediction=prediction,
        detected=detected,
        drifted=drifted,
        performance=performance,
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
    and a report that says so; (result, report HTML)."""
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
        f"Drift — {result.model}", body, "compared with the champion's training window"
    )


def summary_markdown(result: DriftResult, message: str = "") -> str:
    """One line for the run's artifact: the verdict (or "No data"), model, window, drifted."""
    head = {"drift": "Drift detected", "no-drift": "No drift", "no-data": "No data"}[result.status]
    line = f"**{head}** for {result.model} v{result.model_version} in {' → '.join(result.window)}"
    if result.no_data:
        return f"{line}: {message}"
    return f"{line}; drifted: {', '.join(result.drifted) or 'none'}"


def run_check(settings: Any, usecase: Any, lake: Lake, day: date) -> tuple[DriftResult, str] | None:
    """The drift check of the window ending ``day`` against the champion's reference, with
    performance over time; returns (result, report HTML), or None without a champion. A window
    without feature rows gives a "no-data" result (:func:`no_data_check`).

    :func:`load_inputs`, :func:`check_window`, :func:`finish_check` in this process.
    """
    inputs = load_inputs(settings, usecase, lake, day)
    if inputs is None:
        return None
    if inputs.features.empty:
        return no_data_check(inputs)
    scores, prediction = check_window(
        inputs.reference, inputs.features, inputs.predictions, usecase.drift
    )
    return finish_check(usecase, lake, inputs, scores, prediction)
