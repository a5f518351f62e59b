"""The Prefect UI of the local stack in a real headless Chromium: find a driftloop deployment,
start a Quick run from its page, and see the run complete (a screenshot is kept)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from driftloop_config.settings import PROJECT_ROOT
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


def quick_run(page: Any, errors: list[str], attempts: int = 8) -> None:
    """Run → Quick run, until the UI confirms with its "View run" toast (it may render the toast
    twice). A local stack on SQLite answers 503 ("retry") when a write collides with another
    writer (workers polling every second write their heartbeats); Prefect's own client retries
    those, the UI shows an error toast: try again after a pause, as a user would."""
    for attempt in range(1, attempts + 1):
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_text("Quick run", exact=True).click()
        view_run = page.get_by_role("button", name="View run").first
        failed = page.get_by_text("Something went wrong").first
        view_run.or_(failed).wait_for(timeout=60_000)
        if not failed.is_visible():
            return
        retryable = errors and errors[-1].split(" -> ", 1)[1].startswith("503")
        if attempt == attempts or not retryable:
            raise AssertionError(
                f"the UI reported an error on {attempt} Quick runs; failed API calls: {errors}"
            )
        page.wait_for_timeout(5_000)
        page.reload()


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
            errors: list[str] = []  # the API calls the UI saw fail, for the failure message
            page.on(
                "response",
                lambda r: (
                    errors.append(f"{r.request.method} {r.url} -> {r.status}: {r.text()[:300]}")
                    if r.status >= 400
                    else None
                ),
            )
            page.goto(f"{url}/deployments")
            # every driftloop deployment is listed
            for name in ("ingest", "features", "train", "score", "drift"):
                page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
            page.goto(f"{url}/deployments/deployment/{local_stack.deployment_id('score')}")
            page.get_by_text("scoring-pool").first.wait_for(timeout=60_000)
            quick_run(page, errors)

            # exactly one run was created by hand (the daily schedule adds auto-scheduled ones)
            def by_hand() -> list[dict[str, Any]] | None:
                runs = local_stack.runs("score")
                return [
                    r for r in runs if r["id"] not in before and not r["auto_scheduled"]
                ] or None

            created = local_stack.wait_for("the quick run to be created", by_hand, timeout=60)
            assert len(created) == 1, created
            run = created[0]
            page.goto(f"{url}/runs/flow-run/{run['id']}")
            page.get_by_text(run["name"]).first.wait_for(timeout=60_000)

            def finished() -> dict[str, Any] | None:
                state: dict[str, Any] = local_stack.http.get(f"/flow_runs/{run['id']}").json()
                return state if state["state_type"] in FINAL else None

            done = local_stack.wait_for("the quick run to finish", finished, timeout=300)
            page.reload()
            # Completed, or a decision named for what it did (Skipped: no champion yet)
            page.get_by_text(done["state"]["name"]).first.wait_for(timeout=60_000)
            shot = ARTIFACTS / "prefect-ui-quick-run.png"
            page.screenshot(path=str(shot), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "prefect-ui-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert done["state_type"] == "COMPLETED", done["state"]
    assert done["state"]["name"] in ("Completed", "Skipped"), done["state"]
    assert done["parameters"] == {}  # a Quick run: the deployment's defaults
    assert Path(shot).stat().st_size > 10_000


#: per deployment, fields its custom-run form must show as soon as it opens
FORM_FIELDS = {
    "ingest": ["Objects"],
    "features": ["Dates", "Force", "Materialize", "Trigger"],
    "train": ["As Of", "Reason", "Drift Start", "Since", "Seed"],
    "score": ["Day", "Shadow Versions"],
    "drift": ["Day"],
}


def test_the_custom_run_form_opens_on_the_typed_fields(local_stack: LocalStack) -> None:
    """The form of every deployment shows its parameters' fields with their defaults at once,
    without switching a "None" toggle first."""
    from playwright.sync_api import sync_playwright

    executable = chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    url = local_stack.stack.prefect_url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        try:
            for deployment, fields in FORM_FIELDS.items():
                dep_id = local_stack.deployment_id(deployment)
                page.goto(f"{url}/deployments/deployment/{dep_id}/run")
                page.get_by_text("Parameters", exact=True).first.wait_for(timeout=60_000)
                for field in fields:
                    label = page.get_by_text(f"{field} (Optional)", exact=True).first
                    label.wait_for(timeout=30_000)
                    assert label.is_visible(), f"{deployment}: {field} is not shown"
                if deployment == "train":
                    # the defaults are filled in: seed 0, reason "manual"
                    seed = page.locator("input[type=number]").first
                    assert seed.input_value() == "0"
                    assert page.get_by_text("manual", exact=True).first.is_visible()
                    page.screenshot(
                        path=str(ARTIFACTS / "prefect-ui-train-form.png"), full_page=True
                    )
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "prefect-ui-form-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
