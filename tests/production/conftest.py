"""Show the servers' logs when a production-backend test fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

TAIL_BYTES = 6000


def log_tail(path: Path, limit: int = TAIL_BYTES) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"({exc})"
    text = data[-limit:].decode("utf-8", errors="replace")
    return ("...\n" if len(data) > limit else "") + text


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        logs: list[Path] = getattr(getattr(item, "module", None), "SERVER_LOGS", [])
        for path in logs:
            report.sections.append((f"log {path.name}", log_tail(path)))
