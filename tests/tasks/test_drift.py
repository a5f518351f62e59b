"""The drift verdict: empirical-null thresholds from the reference, per-input roles and weights,
estimated and realised performance, persistence across checks and versions, severity.

The performance signals' own tests are in ``test_drift_performance.py``, the stored checks' in
``test_drift_history.py``."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from driftloop_config.usecase import DriftSpec, InputSpec, PersistenceSpec
from tasks.drift import (
    DriftInputs,
    check_features,
    check_predictions,
    detected_event,
    effective_spec,
    feature_checks,
    feature_groups,
    input_role,
    input_votes,
    persistence,
    read_input_window,
    reference_subset,
    severity,
    window_alpha,
    window_verdict,
)
from tasks.drift_stats import DriftScore, bin_counts, expected_auc, psi
from tasks.model import FeatureSchema
from tasks.reference import input_importance, reference_profile
from tasks.storage import LocalStorage

START = pd.Timestamp("2026-01-02", tz="UTC")
SCHEMA = FeatureSchema(
    categorical=("plan",), numeric=("usage", "tenure", "temperature"), label="churned"
)


def world_day(rng: np.random.Generator, day: int, rows: int, **shift: float) -> pd.DataFrame:
    """One snapshot day: ``temperature`` has a shared part (one shock per day for every row, e.g.
    the weather at a location) and a per-row part; ``usage`` and ``tenure`` vary per row;
    ``shift`` moves a column's mean."""
    plan = rng.choice(["basic", "plus", "premium"], rows, p=[0.5, 0.3, 0.2])
    usage = rng.gamma(2.0, 10.0, rows) + shift.get("usage", 0.0)
    return pd.DataFrame(
        {
            "plan": plan,
            "usage": usage,
            "tenure": rng.integers(0, 60, rows).astype(float) + shift.get("tenure", 0.0),
            "temperature": rng.normal(10.0 + shift.get("temperature", 0.0), 1.5)
            + rng.normal(0.0, 2.0, rows),
            "churned": (rng.random(rows) < 1 / (1 + np.exp((usage - 10) / 5))).astype(int),
            "event_timestamp": START + pd.Timedelta(days=day),
        }
    )


def world(seed: int, days: int, rows: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.concat([world_day(rng, d, rows) for d in range(days)], ignore_index=True)


def scores_of(frame: pd.DataFrame) -> np.ndarray:
    """A calibrated-looking probability that falls with usage."""
    return np.asarray(1 / (1 + np.exp((frame["usage"].to_numpy() - 10) / 5)), dtype="float64")


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    train = world(1, 30)
    return reference_profile(
        train,
        SCHEMA,
        scores_of(train),
        importance={"usage": 0.6, "tenure": 0.02, "plan": 0.38, "temperature": -0.1},
        expected_metric=0.8,
    )


# ---- the reference --------------------------------------------------------------------------------


def test_the_reference_holds_one_leave_one_window_out_psi_per_window(
    reference: dict[str, Any],
) -> None:
    train = world(1, 30)
    null = reference["null"]
    assert [w["rows"] for w in null["windows"]] == [300] * 30
    assert null["windows"][0] == {"first": "2026-01-02", "last": "2026-01-02", "rows": 300}
    assert set(null["psi"]) == {"plan", "usage", "tenure", "temperature"}
    assert all(len(v) == 30 for v in null["psi"].values()) and len(null["prediction"]) == 30
    # window 4 against the other 29, over the reference's bins
    edges = reference["numeric"]["usage"]["edges"]
    day = train["event_timestamp"] == START + pd.Timedelta(days=4)
    now = bin_counts(train.loc[day, "usage"].to_numpy(), edges)
    rest = bin_counts(train.loc[~day, "usage"].to_numpy(), edges)
    assert null["psi"]["usage"][4] == pytest.approx(psi(rest / rest.sum(), now / now.sum()))
    # the shared context column varies far more between days than the others
    assert np.median(null["psi"]["temperature"]) > 10 * np.median(null["psi"]["tenure"])
    assert json.loads(json.dumps(reference)) == reference


def test_windows_of_several_days_and_the_estimated_auc() -> None:
    train = world(2, 12, rows=100)
    p = scores_of(train)
    profile = reference_profile(train, SCHEMA, p, window_days=5, expected_metric=0.75)
    windows = profile["null"]["windows"]
    assert [(w["first"], w["last"], w["rows"]) for w in windows] == [
        ("2026-01-02", "2026-01-06", 500),
        ("2026-01-07", "2026-01-11", 500),
        ("2026-01-12", "2026-01-13", 200),
    ]
    assert all(len(v) == 3 for v in profile["null"]["psi"].values())
    assert profile["estimated"]["auc"] == pytest.approx(expected_auc(p))
    assert profile["estimated"]["windows"][2] == pytest.approx(expected_auc(p[-200:]))
    assert profile["expected_metric"] == 0.75
    assert profile["estimated"]["rows"] == "reference"
    assert "importance" not in profile  # none given: equal votes at check time
    # estimated on rows the model was not fitted on, when given
    unseen = world(3, 4, rows=100)
    q = scores_of(unseen) * 0.5
    again = reference_profile(train, SCHEMA, p, unseen=unseen, unseen_predictions=q)
    assert again["estimated"]["rows"] == "unseen" and again["estimated"]["n"] == 400
    assert again["estimated"]["auc"] == pytest.approx(expected_auc(q))
    assert again["estimated"]["windows"][3] == pytest.approx(expected_auc(q[-100:]))
    assert len(again["estimated"]["windows"]) == 4


def test_the_reference_sample_is_deterministic_and_bounded(reference: dict[str, Any]) -> None:
    train = world(1, 30)
    sample = reference["numeric"]["usage"]["sample"]
    assert len(sample) == 1000 and sample == sorted(sample)
    assert set(sample) <= set(train["usage"].tolist())
    again = reference_profile(train, SCHEMA, scores_of(train))
    assert again["numeric"]["usage"]["sample"] == sample
    small = reference_profile(train.head(50), SCHEMA, scores_of(train.head(50)))
    assert sorted(small["numeric"]["usage"]["sample"]) == sorted(train["usage"].head(50))


def test_importance_is_normalised_without_negative_votes(reference: dict[str, Any]) -> None:
    importance = reference["importance"]
    assert importance == pytest.approx(
        {"usage": 0.6, "tenure": 0.02, "plan": 0.38, "temperature": 0.0}
    )


def test_input_importance_ranks_the_input_the_model_uses() -> None:
    from tasks.model import fit
    from tasks.reference import feature_importance

    train, validation = world(3, 10), world(4, 4)
    model = fit(train, validation, SCHEMA, seed=0, max_iter=30)
    holdout = world(5, 3)
    importance = input_importance(model, holdout, SCHEMA, max_rows=500)
    # the permutation importances, negative ones as 0, normalised to sum 1
    raw = feature_importance(model, holdout, SCHEMA, max_rows=500, seed=0)
    clipped = {
        str(f): max(0.0, float(v)) for f, v in zip(raw["feature"], raw["importance"], strict=True)
    }
    assert importance == pytest.approx({f: v / sum(clipped.values()) for f, v in clipped.items()})
    assert sum(importance.values()) == pytest.approx(1.0)
    assert max(importance, key=lambda k: importance[k]) == "usage"
    assert importance["usage"] > 0.5
    # a table measured already gives the same weights without measuring again
    assert input_importance(model, holdout.iloc[:0], SCHEMA, table=raw) == importance
    single_class = holdout.assign(churned=0)
    assert input_importance(model, single_class, SCHEMA) == {f: 0.25 for f in SCHEMA.features}


# ---- thresholds, roles, weights -----------------------------------------------------------------


def test_a_shared_context_column_is_quiet_under_the_empirical_null() -> None:
    """Over training periods, a stable day exceeds the largest of 30 windows about 1 / 31 of the
    time (a single period's largest value is itself noisy, so several are averaged); the i.i.d.
    bound flags nearly every day; a real shift is flagged against the empirical threshold."""
    spec = DriftSpec(psi_min=0.0)
    sampling_only = DriftSpec(psi_min=0.0, empirical_null=False)
    rates: dict[bool, list[float]] = {True: [], False: []}
    for seed in range(4):
        train = world(20 + seed, 30)
        reference = reference_profile(train, SCHEMA, scores_of(train))
        rng = np.random.default_rng(200 + seed)
        days = [world_day(rng, 40 + d, 300) for d in range(40)]
        for s in (spec, sampling_only):
            hits = [
                {x.feature: x for x in check_features(reference, d, alpha=0.01 / 5, spec=s)}[
                    "temperature"
                ].drifted
                for d in days
            ]
            rates[s.empirical_null].append(float(np.mean(hits)))
    assert min(rates[False]) >= 0.8  # the i.i.d. bound: nearly every ordinary day
    assert np.mean(rates[True]) <= 0.08  # about 1 / 31 on average
    moved = check_features(
        reference, world_day(rng, 90, 300, temperature=8.0), alpha=0.01 / 5, spec=spec
    )
    temperature = {x.feature: x for x in moved}["temperature"]
    assert temperature.drifted and temperature.threshold_source == "empirical"
    assert temperature.null_windows == 30


def test_ks_is_computed_against_the_stored_sample(reference: dict[str, Any]) -> None:
    from scipy import stats

    day = world_day(np.random.default_rng(3), 50, 300, usage=5.0)
    usage = {s.feature: s for s in check_features(reference, day, alpha=0.01, spec=DriftSpec())}[
        "usage"
    ]
    expected = stats.ks_2samp(reference["numeric"]["usage"]["sample"], day["usage"]).statistic
    assert usage.ks == pytest.approx(expected)
    assert {s.feature: s for s in check_features(reference, day, alpha=0.01, spec=DriftSpec())}[
        "plan"
    ].ks is None


def test_an_old_reference_falls_back_to_the_sampling_bound_and_equal_votes(
    reference: dict[str, Any],
) -> None:
    old = {k: reference[k] for k in ("numeric", "categorical", "prediction")}
    day = world_day(np.random.default_rng(4), 50, 300)
    scores = check_features(old, day, alpha=0.01, spec=DriftSpec(psi_min=0.0))
    assert {s.threshold_source for s in scores} == {"sampling"}
    assert {s.weight for s in scores} == {1.0}
    assert all(s.null_windows == 0 for s in scores)
    pred = check_predictions(old, scores_of(day), alpha=0.01, spec=DriftSpec(psi_min=0.0))
    assert pred is not None and pred.threshold_source == "sampling"


def test_an_unmonitored_input_is_not_checked(reference: dict[str, Any]) -> None:
    spec = DriftSpec(inputs={"temperature": InputSpec(monitor=False)})
    day = world_day(np.random.default_rng(5), 50, 300, temperature=30.0)
    scores = check_features(reference, day, alpha=0.01, spec=spec)
    assert [s.feature for s in scores] == ["usage", "tenure", "plan"]
    assert window_alpha(reference, spec, with_predictions=True) == pytest.approx(0.01 / 4)
    assert window_alpha(reference, DriftSpec(), with_predictions=True) == pytest.approx(0.01 / 5)
    groups = feature_groups(reference, day.columns, parts=2, spec=spec)
    assert groups == [["usage", "tenure"], ["plan"]]


def score(name: str, drifted: bool, *, role: str = "vote", weight: float = 1.0) -> DriftScore:
    return DriftScore(
        feature=name,
        kind="numeric",
        psi=0.5 if drifted else 0.01,
        threshold=0.2,
        drifted=drifted,
        n_reference=1000,
        n_current=100,
        role=role,
        weight=weight,
    )


def test_context_inputs_do_not_vote() -> None:
    spec = DriftSpec(min_drifted_features=1, min_drifted_share=0.3)
    scores = [
        score("weather", True, role="context"),
        score("wind", True, role="context"),
        score("usage", False),
        score("tenure", False),
    ]
    votes = input_votes(scores, spec)
    assert (votes["signal"], votes["voting"], votes["share"]) == (False, 2, 0.0)
    votes = input_votes([*scores[:3], score("tenure", True)], spec)
    assert (votes["signal"], votes["share"], votes["drifted"]) == (True, 0.5, ["tenure"])


def test_a_drifting_unimportant_input_alone_does_not_signal(reference: dict[str, Any]) -> None:
    spec = DriftSpec(min_drifted_features=1, min_drifted_share=0.3, importance_share=1.0)
    rng = np.random.default_rng(6)
    tenure_moves = check_features(
        reference, world_day(rng, 50, 300, tenure=40.0), alpha=0.01, spec=spec
    )
    by_name = {s.feature: s for s in tenure_moves}
    assert by_name["tenure"].drifted and by_name["tenure"].weight == pytest.approx(0.02)
    assert not input_votes(tenure_moves, spec)["signal"]
    # by default half of each vote is equal for every input (4 here): 0.5 * 0.02 + 0.5 / 4
    blended = check_features(
        reference, world_day(rng, 50, 300, tenure=40.0), alpha=0.01, spec=DriftSpec()
    )
    assert {s.feature: s.weight for s in blended}["tenure"] == pytest.approx(0.135)
    usage_moves = check_features(
        reference, world_day(rng, 51, 300, usage=25.0), alpha=0.01, spec=spec
    )
    votes = input_votes(usage_moves, spec)
    assert votes["signal"] and votes["share"] >= 0.6
    # a configured weight overrides the importance: tenure alone now carries the vote
    weighted = DriftSpec(min_drifted_features=1, inputs={"tenure": InputSpec(weight=10.0)})
    again = check_features(
        reference, world_day(rng, 52, 300, tenure=40.0), alpha=0.01, spec=weighted
    )
    assert input_votes(again, weighted)["signal"]


def test_the_count_bar_is_capped_at_the_voting_inputs() -> None:
    spec = DriftSpec(min_drifted_features=3, min_drifted_share=0.3)
    two = [score("a", True), score("b", False), score("c", True, role="context")]
    votes = input_votes(two, spec)
    assert votes["min_count"] == 2 and not votes["signal"]  # 1 of 2 drifted
    assert input_votes([score("a", True), score("b", True)], spec)["signal"]
    assert not input_votes([score("a", False)], spec)["signal"]


def test_reference_subset_carries_the_null_and_importance(reference: dict[str, Any]) -> None:
    part = reference_subset(reference, ["usage", "plan"])
    assert set(part["numeric"]) == {"usage"} and set(part["categorical"]) == {"plan"}
    assert set(part["null"]["psi"]) == {"usage", "plan"}
    assert part["importance"] == reference["importance"]  # votes depend on the whole model
    day = world_day(np.random.default_rng(7), 50, 300, temperature=30.0)
    whole = {s.feature: s for s in check_features(reference, day, alpha=0.01, spec=DriftSpec())}
    alone = check_features(part, day[["usage", "plan"]], alpha=0.01, spec=DriftSpec())
    assert [whole[s.feature] for s in alone] == alone


# ---- persistence and severity ---------------------------------------------------------------------


def stored(day: int, version: str, signals: list[str], status: str = "no-drift") -> dict[str, Any]:
    """A stored check of the window of 2026-03-<day>."""
    d = date(2026, 3, day).isoformat()
    return {"window": [d, d], "model_version": version, "signals": signals, "status": status}


def test_persistence_counts_k_of_n_checks_of_the_same_version() -> None:
    rule = PersistenceSpec(k=2, n=3)
    now = ("2026-03-10", "2026-03-10")
    one_before = [stored(9, "2", ["input-drift"]), stored(8, "2", [])]
    out = persistence(["input-drift"], now, "2", one_before, rule)
    assert (out["persistent"], out["count"], out["since"]) == (True, 2, "2026-03-09")
    assert out["windows"] == ["2026-03-09", "2026-03-10"]
    two_back = [stored(9, "2", []), stored(8, "2", ["prediction-drift"])]
    out = persistence(["input-drift"], now, "2", two_back, rule)
    assert out["persistent"] and out["since"] == "2026-03-08"
    # older than n - 1 checks: not counted
    three_back = [stored(9, "2", []), stored(8, "2", []), stored(7, "2", ["input-drift"])]
    assert not persistence(["input-drift"], now, "2", three_back, rule)["persistent"]
    # signals of the previous champion do not count for the new one
    promoted = [stored(9, "1", ["input-drift"]), stored(8, "1", ["input-drift"])]
    out = persistence(["input-drift"], now, "2", promoted, rule)
    assert (out["persistent"], out["count"]) == (False, 1)
    # a no-data check never signals, and a window without signal is never persistent
    nodata = [stored(9, "2", ["input-drift"], status="no-data")]
    assert not persistence(["input-drift"], now, "2", nodata, rule)["persistent"]
    assert not persistence([], now, "2", [*one_before, stored(7, "2", ["x"])], rule)["persistent"]
    assert persistence(["input-drift"], now, "2", [], PersistenceSpec(k=1, n=1))["persistent"]


def test_severity_levels() -> None:
    assert severity([], persistent=False) == "none"
    assert severity(["input-drift"], persistent=False) == "watch"
    assert severity(["input-drift", "prediction-drift"], persistent=True) == "drift"
    assert severity(["input-drift", "estimated-drop"], persistent=True) == "severe"
    assert severity(["realised-drop"], persistent=True) == "severe"
    assert severity(["realised-drop"], persistent=False) == "watch"


def test_the_window_is_cut_into_one_check_per_group_of_inputs(reference: dict[str, Any]) -> None:
    spec = DriftSpec(inputs={"tenure": InputSpec(monitor=False)})
    day = world_day(np.random.default_rng(12), 60, 300)
    inputs = DriftInputs(
        model="m",
        model_version="3",
        reference=reference,
        first=date(2026, 3, 10),
        day=date(2026, 3, 10),
        features=day,
        predictions=None,
    )
    checks = feature_checks(inputs, spec, alpha=0.004, parts=2)
    groups = [["usage", "temperature"], ["plan"]]  # numerics first; tenure is not monitored
    assert [list(c["features"].columns) for c in checks] == groups
    for check, names in zip(checks, groups, strict=True):
        assert set(check) == {"reference", "features", "alpha", "spec"}
        assert check["reference"] == reference_subset(reference, names)
        assert check["features"].equals(day[names])
        assert check["alpha"] == 0.004 and check["spec"] is spec
    scored = [s.feature for c in checks for s in check_features(**c)]
    assert scored == ["usage", "temperature", "plan"]
    # one part: one group; an input missing from the window is not checked
    [whole] = feature_checks(inputs, spec, alpha=0.004, parts=1)
    assert list(whole["features"].columns) == ["usage", "temperature", "plan"]
    without = replace(inputs, features=day.drop(columns="usage"))
    cut = feature_checks(without, spec, alpha=0.004, parts=4)
    assert [list(c["features"].columns) for c in cut] == [["temperature"], ["plan"]]


def test_judge_detects_persistent_drift_and_the_event_says_why(
    reference: dict[str, Any],
) -> None:
    spec = DriftSpec(persistence=PersistenceSpec(k=2, n=3))
    day = world_day(np.random.default_rng(10), 60, 300, usage=25.0, tenure=40.0)
    inputs = DriftInputs(
        model="m",
        model_version="3",
        reference=reference,
        first=date(2026, 3, 10),
        day=date(2026, 3, 10),
        features=day,
        predictions=scores_of(day),
    )
    scores = check_features(reference, day, alpha=0.01 / 5, spec=spec)
    prediction = check_predictions(reference, inputs.predictions, alpha=0.01 / 5, spec=spec)
    first = window_verdict(inputs, scores, prediction, spec, realised=[], previous=[])
    assert "input-drift" in first.signals and "prediction-drift" in first.signals
    assert (first.detected, first.severity, first.status) == (False, "watch", "no-drift")
    before = first.to_dict()
    before["window"] = ["2026-03-09", "2026-03-09"]
    second = window_verdict(inputs, scores, prediction, spec, realised=[], previous=[before])
    assert (second.detected, second.severity, second.status) == (True, "drift", "drift")
    event = detected_event(second)
    payload = event["payload"]
    assert payload["signals"] == second.signals and payload["severity"] == "drift"
    assert payload["since"] == "2026-03-09" and payload["window"] == ["2026-03-10", "2026-03-10"]
    assert "usage" in payload["drifted"]
    assert payload["scores"]["usage"]["psi"] > payload["scores"]["usage"]["threshold"]
    # a realised drop in a persistent window makes it severe
    bad = [{"version": "3", "complete": True, "auc": 0.6, "low": 0.55, "high": 0.65}]
    third = window_verdict(inputs, scores, prediction, spec, realised=bad, previous=[before])
    assert "realised-drop" in third.signals and third.severity == "severe"
    stored_again = json.loads(json.dumps(third.to_dict()))
    assert stored_again["severity"] == "severe" and stored_again["signals"] == third.signals


def test_a_quiet_window_has_no_signal(reference: dict[str, Any]) -> None:
    spec = DriftSpec()
    day = world_day(np.random.default_rng(12), 60, 300)
    inputs = DriftInputs(
        model="m",
        model_version="3",
        reference=reference,
        first=date(2026, 3, 10),
        day=date(2026, 3, 10),
        features=day,
        predictions=scores_of(day),
    )
    scores = check_features(reference, day, alpha=0.01 / 5, spec=spec)
    prediction = check_predictions(reference, inputs.predictions, alpha=0.01 / 5, spec=spec)
    result = window_verdict(inputs, scores, prediction, spec, realised=[], previous=[])
    assert (result.signals, result.severity, result.detected) == ([], "none", False)
    assert result.estimated is not None
    assert result.estimated["auc"] == pytest.approx(expected_auc(scores_of(day)))
    assert result.estimated["reference"] == pytest.approx(expected_auc(scores_of(world(1, 30))))
    assert result.estimated["signal"] is False


def test_the_rare_tail_of_the_reference_is_not_taken_for_new_categories() -> None:
    from tasks.reference import fold_categories

    reference = {
        "categorical": {
            "city": {
                "count": 1000,
                "null_share": 0.0,
                "proportions": {"a": 0.6, "b": 0.3, "__other__": 0.1},
            }
        }
    }
    window = pd.DataFrame({"city": ["a"] * 60 + ["b"] * 30 + ["c"] * 5 + ["d"] * 5})
    spec = DriftSpec(psi_min=0.0)
    [city] = check_features(reference, window, alpha=0.01, spec=spec)
    assert city.psi == pytest.approx(0.0, abs=1e-12) and not city.drifted
    no_tail = {"categorical": {"city": {**reference["categorical"]["city"]}}}
    no_tail["categorical"]["city"]["proportions"] = {"a": 0.6, "b": 0.4}
    [new] = check_features(no_tail, window, alpha=0.01, spec=spec)
    assert new.drifted  # without a tail, c and d are new categories
    folded = fold_categories(pd.Series(["a", None, "zz", 3]), ["a", "__other__"])
    assert folded.tolist()[0] == "a" and folded.tolist()[2:] == ["__other__", "__other__"]
    assert pd.isna(folded.tolist()[1])


def test_the_report_shows_severity_signals_sources_and_performance(
    reference: dict[str, Any],
) -> None:
    from tasks.drift_report import drift_report, summary_markdown

    spec = DriftSpec()
    day = world_day(np.random.default_rng(13), 60, 300, usage=25.0, tenure=40.0)
    inputs = DriftInputs(
        model="m",
        model_version="3",
        reference=reference,
        first=date(2026, 3, 10),
        day=date(2026, 3, 10),
        features=day,
        predictions=scores_of(day),
    )
    scores = check_features(reference, day, alpha=0.01 / 5, spec=spec)
    prediction = check_predictions(reference, inputs.predictions, alpha=0.01 / 5, spec=spec)
    windows = [
        {"version": "3", "first": "2026-02-01", "last": "2026-02-03", "days": 3, "n": 900, "positives": 4,
         "auc": None, "low": None, "high": None, "complete": False},
        {"version": "3", "first": "2026-02-04", "last": "2026-02-06", "days": 3, "n": 900, "positives": 31,
         "auc": 0.71, "low": 0.62, "high": 0.8, "complete": True},
    ]  # fmt: skip
    result = window_verdict(inputs, scores, prediction, spec, realised=windows, previous=[])
    page = drift_report(result, reference, day)
    assert "severity" in page and ">watch<" in page
    assert "input-drift" in page and "empirical" in page
    assert "0.62" in page and "0.8" in page  # the interval of the complete window
    assert "estimated AUC (training)" in page
    line = summary_markdown(result)
    assert "severity **watch**" in line and "input-drift" in line
    assert "realised AUC 0.710 [0.620, 0.800]" in line


# ---- context inputs ---------------------------------------------------------------------------


def test_context_inputs_default_to_the_context_role_unless_configured() -> None:
    spec = DriftSpec(inputs={"outage_minutes_4w": InputSpec(role="vote")})
    effective = effective_spec(spec, ["incidents_4w", "outage_minutes_4w"])
    assert input_role("incidents_4w", effective) == "context"
    assert input_role("outage_minutes_4w", effective) == "vote"  # configured: kept
    assert input_role("seat_utilisation", effective) == "vote"
    assert effective_spec(spec, []) is spec


def test_the_input_window_joins_each_context_row_as_of_the_entity_row(tmp_path: Path) -> None:
    """An account row gets its tier's newest row at or before its time; a tier without a row
    by then, or an account without a tier, gets nulls."""
    from driftloop_config.settings import PROJECT_ROOT
    from driftloop_config.usecase import load_usecase
    from tasks.features import feature_key
    from tasks.storage import Lake, write_parquet

    usecase = load_usecase(PROJECT_ROOT / "usecases" / "saas_retention.yaml")
    lake = Lake(LocalStorage(tmp_path / "lake"))
    features = lake.zone("features")

    def at(day: date) -> pd.Timestamp:
        return pd.Timestamp(day + timedelta(days=1), tz="UTC")

    d1, d2, d3 = date(2026, 1, 4), date(2026, 1, 5), date(2026, 1, 6)
    accounts: dict[date, list[tuple[str, str | None]]] = {
        d2: [("A100001", "team"), ("A100002", "starter"), ("A100003", None)],
        d3: [("A100001", "team"), ("A100002", "starter")],
    }
    for day, account_rows in accounts.items():
        frame = pd.DataFrame(account_rows, columns=["account_id", "plan_tier"])
        frame = frame.assign(date=pd.Timestamp(day), event_timestamp=at(day), seats=3)
        write_parquet(features, feature_key("account_weekly", day), frame)
    tiers = {d1: [("team", 1)], d2: [("team", 2)], d3: [("starter", 7)]}
    for day, tier_rows in tiers.items():
        frame = pd.DataFrame(tier_rows, columns=["plan_tier", "incidents_4w"])
        frame = frame.assign(date=pd.Timestamp(day), event_timestamp=at(day))
        write_parquet(features, feature_key("tier_weekly", day), frame)

    rows, context = read_input_window(lake, usecase, d2, d3)
    assert context == ["incidents_4w"]
    got = [
        (account, when.date(), None if pd.isna(incidents) else int(incidents))
        for account, when, incidents in zip(
            rows["account_id"], rows["date"], rows["incidents_4w"], strict=True
        )
    ]
    assert got == [
        ("A100001", d2, 2),  # the tier's row of the same day
        ("A100002", d2, None),  # the tier has no row yet within the window
        ("A100003", d2, None),  # no tier
        ("A100001", d3, 2),  # the tier's newest row before
        ("A100002", d3, 7),
    ]


# ---- what a drift run returns and announces -----------------------------------------------------


def test_a_finished_check_returns_its_result_and_announces_only_persistent_drift() -> None:
    from tasks.drift import Checked, DriftResult

    window = ("2026-01-01", "2026-01-07")
    quiet = DriftResult("telco_churn", "3", window, [], None, detected=False)
    checked = Checked(quiet, "drift/telco_churn-2026-01-07.html")
    out = checked.outcome()
    assert (out["day"], out["report"], out["status"], out["window"]) == (
        "2026-01-07",
        "drift/telco_churn-2026-01-07.html",
        "no-drift",
        ["2026-01-01", "2026-01-07"],
    )
    assert out == {**quiet.to_dict(), "day": "2026-01-07", "report": checked.report}
    assert checked.events() == []
    persistent = replace(quiet, detected=True, signals=["input-drift"], severity="drift")
    [event] = Checked(persistent, checked.report).events()
    assert event == detected_event(persistent)


def test_a_window_without_data_returns_why_and_no_window() -> None:
    from tasks.drift import Checked, DriftResult

    empty = DriftResult(
        "telco_churn", "3", ("2026-01-01", "2026-01-07"), [], None, False, no_data=True
    )
    out = Checked(empty, "drift/telco_churn-2026-01-07.html", "no data: why").outcome()
    assert out == {
        "day": "2026-01-07",
        "detected": False,
        "status": "no-data",
        "model": "telco_churn",
        "model_version": "3",
        "reason": "no data: why",
        "report": "drift/telco_churn-2026-01-07.html",
    }
    assert Checked(empty, "x").events() == []
