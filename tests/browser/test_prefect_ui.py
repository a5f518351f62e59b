"""The Prefect UI of the local stack in a real headless Chromium: find a driftloop deployment,
start a Quick run from its page, and see the run complete (a screenshot is kept)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from driftloop.settings import PROJECT_ROOT
from tests.support.services import services_required
from tests.support.stack import LocalStack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ARTIFACTS = PROJECT_ROOT / "test-artifacts"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def chromium() -> str:
    """Debian's Chromium (``.ci/run`` installs it); skipped without it unless CI requires it."""
    path = os.environ.get("DRIFTLOOP_CHROMIUM") or shutil.which("chromium")
    if not path:
        reason = "no chromium on PATH (apt-get install chromium, or set DRIFTLOOP_CHROMIUM)"
        if services_required():
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def test_quick_run_from_the_ui_completes(local_stack: LocalStack) -> None:
    from playwright.sync_api import sync_playwright

    executable = chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    before = {r["id"] for r in local_stack.runs("score")}
    url = local_stack.stack.prefect_url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/deployments")
            # every driftloop deployment is listed
            for name in ("ingest", "features", "train", "score", "drift"):
                page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
            page.goto(f"{url}/deployments/deployment/{local_stack.deployment_id('score')}")
            page.get_by_text("scoring-pool").first.wait_for(timeout=60_000)
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_text("Quick run", exact=True).click()
            page.get_by_role("button", name="View run").click()

            def started() -> dict[str, Any] | None:
                new = [r for r in local_stack.runs("score") if r["id"] not in before]
                return new[0] if new else None

            run = local_stack.wait_for("the quick run to be created", started, timeout=60)
            page.wait_for_url(f"**/runs/flow-run/{run['id']}*", timeout=30_000)

            def finished() -> dict[str, Any] | None:
                state: dict[str, Any] = local_stack.http.get(f"/flow_runs/{run['id']}").json()
                return state if state["state_type"] in FINAL else None

            done = local_stack.wait_for("the quick run to finish", finished, timeout=300)
            page.reload()
            page.get_by_text("Completed").first.wait_for(timeout=60_000)
            shot = ARTIFACTS / "prefect-ui-quick-run.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert done["state_type"] == "COMPLETED", done["state"]
    assert done["parameters"] == {}  # a Quick run: the deployment's defaults
    assert Path(shot).stat().st_size > 10_000
