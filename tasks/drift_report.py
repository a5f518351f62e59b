"""What renders a finished drift check for people.

:func:`drift_report` is the offline HTML report of a :class:`tasks.drift.DriftResult` (severity
and signals, drift scores with their thresholds, the distributions of the most drifted
features, estimated against realised performance); :func:`score_rows` is its table of scores
(also a run artifact) and :func:`summary_markdown` the one-line summary of a run.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import pandas as pd

from tasks.artifacts import Artifact, Link, Markdown, Table
from tasks.drift import Checked, DriftResult, _fold
from tasks.drift_history import report_link
from tasks.drift_performance import _metric_label, _value


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


def artifacts(checked: Checked, reports_zone: str) -> list[Artifact]:
    """What a finished check shows on its run: the scores, the summary line and a link to the
    report (when the reports zone has an address people can open); only the summary line for a
    window without data."""
    result = checked.result
    if result.no_data:
        return [Markdown("drift-summary", summary_markdown(result, checked.message))]
    shown: list[Artifact] = [
        Table(
            "drift-scores",
            score_rows(result),
            description=f"drift check of {result.model} v{result.model_version}, window "
            f"{result.window}: severity {result.severity}, signals "
            f"{', '.join(result.signals) or 'none'}",
        ),
        Markdown("drift-summary", summary_markdown(result)),
    ]
    link = report_link(reports_zone, checked.report)
    return shown if link is None else [*shown, Link("drift-report", link)]
