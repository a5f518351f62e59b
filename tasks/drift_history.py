"""Where drift check results are stored and read back: the reports zone.

Each check of the window ending a day is stored as its HTML report
(:func:`report_key`) and its result (:func:`result_key`, the JSON of
``tasks.drift.DriftResult.to_dict``) by :func:`write_check`. The next days' checks count
persistence on the stored results (:func:`previous_results`), the train run reads the newest
(:func:`latest_check`), and :func:`report_link` says where a browser can open a report.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from tasks.storage import write_json

if TYPE_CHECKING:
    from tasks.drift import DriftResult
    from tasks.storage import Storage


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
