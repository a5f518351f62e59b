"""A run that decided not to do its work shows its decision in the Prefect UI: its badge reads
"Skipped", not "Completed" (it keeps Completed's colour; the reason is the state's message). Real
headless Chromium against the stack's server; a screenshot is kept."""

from __future__ import annotations

import pytest

from driftloop_config.settings import PROJECT_ROOT, Settings
from tests.browser.test_prefect_ui import chromium
from tests.support.prefect_server import stack_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ARTIFACTS = PROJECT_ROOT / "test-artifacts"


def test_a_skipped_run_shows_its_state_name(local_settings: Settings) -> None:
    from playwright.sync_api import sync_playwright
    from prefect.states import Completed, Pending, Running, State

    executable = chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    reason = "no champion yet: telco_churn has no promoted model to score with"
    with stack_server(local_settings) as server:
        with server.client() as client:
            flow_id = client.create_flow_from_name("score")
            dep_id = client.create_deployment(flow_id, "score")
            run = client.create_flow_run_from_deployment(dep_id, state=Pending())
            assert client.set_flow_run_state(run.id, Running()).status.value == "ACCEPT"
            # what the score flow's return value becomes (flows/outcomes.py)
            done: State[None] = Completed(name="Skipped", message=reason)
            assert client.set_flow_run_state(run.id, done).status.value == "ACCEPT"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"{server.url}/runs/flow-run/{run.id}")
                page.get_by_text(run.name).first.wait_for(timeout=60_000)
                page.get_by_text("Skipped", exact=True).first.wait_for(timeout=60_000)
                assert page.get_by_text("Completed", exact=True).count() == 0
                page.screenshot(path=str(ARTIFACTS / "prefect-ui-skipped-run.png"), full_page=True)
            finally:
                browser.close()
