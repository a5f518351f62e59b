"""Drift monitoring: a window of live features and predictions against the champion's reference.

The reference is the training window's distributions, stored with the model at training time
(``reference.json``, see ``tasks.train.reference_profile``). Every model input is compared with
the statistics of :mod:`tasks.drift_stats` (PSI with a sample-size-calibrated threshold; chi-square
for categoricals), and so is the prediction distribution. Model performance is tracked once the
delayed labels arrive: predictions are joined with the labels of their snapshot.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tasks.drift_stats import DriftScore, categorical_drift, numeric_drift
from tasks.features import feature_key
from tasks.storage import read_parquet

if TYPE_CHECKING:
    from driftloop.usecase import DriftSpec
    from tasks.storage import Lake

DETECTED_EVENT = "driftloop.drift.detected"


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

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["window"] = list(self.window)
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
    raises a false alarm with probability at most ``spec.alpha``.
    """
    numeric = reference.get("numeric", {})
    categorical = reference.get("categorical", {})
    checks = len(numeric) + len(categorical) + (predictions is not None)
    alpha = spec.alpha / max(checks, 1)
    scores: list[DriftScore] = []
    for name, ref in numeric.items():
        if name not in features:
            continue
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
    for name, ref in categorical.items():
        if name not in features:
            continue
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
    prediction = None
    if predictions is not None and "prediction" in reference:
        ref = reference["prediction"]
        prediction = numeric_drift(
            "prediction",
            np.asarray(predictions, dtype="float64"),
            edges=ref["edges"],
            reference_shares=ref["proportions"],
            n_reference=int(ref["count"]),
            alpha=alpha,
            psi_min=spec.psi_min,
            kind="prediction",
        )
    return scores, prediction


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


def run_check(settings: Any, usecase: Any, lake: Lake, day: date) -> tuple[DriftResult, str] | None:
    """The drift check of the window ending ``day`` against the champion's reference, with
    performance over time; returns (result, report HTML), or None without a champion."""
    from tasks import registry
    from tasks.ingest import read_validated
    from tasks.score import PROBABILITY, read_predictions
    from tasks.training_set import SnapshotColumns, entity_frame

    name = usecase.model.registered_name
    version = registry.champion_version(settings.tracking_uri, name)
    if version is None:
        return None
    reference = registry.load_reference(settings.tracking_uri, name, version)
    first = day - timedelta(days=usecase.drift.window_days - 1)
    features = read_feature_window(lake, first, day)
    columns = SnapshotColumns.of(usecase)
    window_preds = read_predictions(lake, name, first=first, last=day, entity=columns.entity)
    window_preds = window_preds[window_preds["model_version"].astype(str) == str(version)]
    scores, prediction = check_window(
        reference,
        features,
        window_preds[PROBABILITY].to_numpy() if len(window_preds) else None,
        usecase.drift,
    )
    detected, drifted = verdict(scores, prediction, usecase.drift)

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
        read_predictions(lake, name, last=day, entity=columns.entity),
        labelled,
        columns.label,
        entity=columns.entity,
    )

    result = DriftResult(
        model=name,
        model_version=version,
        window=(first.isoformat(), day.isoformat()),
        scores=scores,
        prediction=prediction,
        detected=detected,
        drifted=drifted,
        performance=performance,
    )
    return result, drift_report(result, reference, features)
