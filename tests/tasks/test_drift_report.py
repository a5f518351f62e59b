"""What a finished drift check shows on its run (the report itself is checked with the verdict
in test_drift.py)."""

from __future__ import annotations

from tasks.artifacts import Link, Markdown, Table
from tasks.drift import Checked, DriftResult
from tasks.drift_report import artifacts
from tasks.drift_stats import DriftScore

WINDOW = ("2026-01-01", "2026-01-07")
REPORT = "drift/telco_churn-2026-01-07.html"


def _score(feature: str, psi: float, drifted: bool) -> DriftScore:
    return DriftScore(feature, "numeric", psi, 0.1, drifted, 500, 400)


def _drifted() -> DriftResult:
    return DriftResult(
        model="telco_churn",
        model_version="3",
        window=WINDOW,
        scores=[_score("tenure", 0.31, True), _score("minutes", 0.02, False)],
        prediction=None,
        detected=True,
        drifted=["tenure"],
        signals=["input-drift"],
        severity="drift",
    )


def test_a_check_shows_its_scores_its_summary_and_a_link_a_browser_opens() -> None:
    shown = artifacts(Checked(_drifted(), REPORT), "https://reports.example/lake/reports")
    assert [type(a) for a in shown] == [Table, Markdown, Link]
    table, summary, link = shown
    assert isinstance(table, Table) and isinstance(link, Link)
    assert table.key == "drift-scores"
    assert [row["feature"] for row in table.table] == ["tenure", "minutes"]
    assert table.description == (
        "drift check of telco_churn v3, window ('2026-01-01', '2026-01-07'): severity drift, "
        "signals input-drift"
    )
    assert summary == Markdown(
        "drift-summary",
        "**Drift detected** for telco_churn v3 in 2026-01-01 → 2026-01-07: severity **drift**, "
        "signals: input-drift; drifted: tenure",
    )
    assert link == Link("drift-report", f"https://reports.example/lake/reports/{REPORT}")


def test_a_report_in_a_zone_no_browser_opens_gets_no_link() -> None:
    shown = artifacts(Checked(_drifted(), REPORT), "s3://lake/reports")
    assert [a.key for a in shown] == ["drift-scores", "drift-summary"]


def test_a_window_without_data_shows_why_nothing_was_compared() -> None:
    empty = DriftResult("telco_churn", "3", WINDOW, [], None, detected=False, no_data=True)
    why = "no data: no feature rows for 2026-01-01 → 2026-01-07"
    assert artifacts(Checked(empty, REPORT, why), "https://reports.example") == [
        Markdown(
            "drift-summary",
            f"**No data** for telco_churn v3 in 2026-01-01 → 2026-01-07: {why}",
        )
    ]
