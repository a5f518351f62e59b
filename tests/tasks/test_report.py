"""The HTML reports people read: offline (no script, no external address), and what came from
data is escaped, so a hostile cell or landing key cannot inject markup."""

from __future__ import annotations

import re

import pandas as pd

from tasks.report import frame_table, page, table, validation_index_page, validation_page

HOSTILE = '<script>alert("x")</script>'


def _record(key: str, status: str, processed: str, **kw: object) -> dict[str, object]:
    return {
        "key": key,
        "status": status,
        "dataset": "usage",
        "sha256": "ab" * 32,
        "size": 120,
        "processed_at": processed,
        "rows_total": 10,
        "rows_valid": 10 if status == "validated" else 0,
        "rows_quarantined": 0 if status == "validated" else 10,
        "partitions": ["2026-01-01"] if status == "validated" else [],
        "reasons": [] if status == "validated" else [f"unreadable {HOSTILE}"],
        "reason_counts": {},
        "outputs": ["usage/2026-01-01/part.parquet"] if status == "validated" else [],
        **kw,
    }


def _offline(text: str) -> None:
    assert "<script" not in text.lower()
    assert not re.search(r"(src|href)=\"(https?:)?//", text), "no external address"


def test_cells_are_escaped_and_numbers_aligned() -> None:
    html = table([{"name": HOSTILE, "rows": 3, "ok": True}])
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert '<td class="num">3</td>' in html and "<td>True</td>" in html
    _offline(html)
    assert table([]) == "<p><em>none</em></p>"


def test_a_frame_shows_its_first_rows_and_says_how_many_it_left_out() -> None:
    frame = pd.DataFrame({"customer_id": [f"C{i}" for i in range(30)], "minutes": [None] * 30})
    html = frame_table(frame, limit=5)
    assert html.count("<tr>") == 6  # the header and 5 rows
    assert "showing 5 of 30 rows" in html
    assert "None" not in html  # missing values are empty cells


def test_a_rejected_object_report_says_why_with_the_reason_escaped() -> None:
    html = validation_page(_record(f"usage/{HOSTILE}.csv", "rejected", "2026-01-02T08:00:00"), None)
    assert "<h2>Why the file was rejected</h2>" in html
    assert "unreadable &lt;script&gt;" in html
    assert html.startswith("<!doctype html>")
    _offline(html)


def test_the_index_lists_the_newest_first_and_links_each_report() -> None:
    records = [
        _record("usage/2026-01-01.csv", "validated", "2026-01-01T08:00:00"),
        _record("usage/2026-01-02.csv", "rejected", "2026-01-02T08:00:00"),
    ]
    html = validation_index_page(records, {"usage/2026-01-01.csv": "usage/2026-01-01.csv.html"})
    assert html.index("usage/2026-01-02.csv") < html.index("usage/2026-01-01.csv")
    assert '<a href="usage/2026-01-01.csv.html">usage/2026-01-01.csv</a>' in html
    assert "<a href" not in html.split("usage/2026-01-02.csv")[0]  # no report: no link
    assert '<div class="card"><b>1</b>files rejected</div>' in html
    _offline(html)


def test_the_page_title_is_escaped_and_the_body_kept() -> None:
    html = page(HOSTILE, "<p>body</p>")
    assert "<title>&lt;script&gt;" in html and "<p>body</p>" in html
