"""The deployments' triggers applied outside a server: the runs an event starts, with the
parameters prefect.yaml renders for them (a changed trigger changes the answer)."""

from __future__ import annotations

from pathlib import Path

from driftloop.triggers import triggered
from driftloop_config.settings import PROJECT_ROOT

DRIFT = {
    "event": "driftloop.drift.detected",
    "resource": {"prefect.resource.id": "driftloop.model.telco_churn"},
    "payload": {"window": ["2026-02-01", "2026-02-03"], "signals": ["input-drift"]},
}


def test_a_drift_event_starts_train_with_the_parameters_its_trigger_renders() -> None:
    assert triggered(PROJECT_ROOT / "prefect.yaml", "train", DRIFT) == {
        "params": {
            "reason": "drift",
            "as_of": "2026-02-03",
            "drift_start": "2026-02-01",
            "signals": ["input-drift"],
            "severity": None,
        }
    }


def test_an_event_no_trigger_of_a_deployment_expects_starts_nothing() -> None:
    assert triggered(PROJECT_ROOT / "prefect.yaml", "score", DRIFT) is None
    other = {**DRIFT, "resource": {"prefect.resource.id": "driftloop.landing.x"}}
    assert triggered(PROJECT_ROOT / "prefect.yaml", "train", other) is None


def test_the_parameters_come_from_the_file(tmp_path: Path) -> None:
    text = (PROJECT_ROOT / "prefect.yaml").read_text("utf-8")
    changed = text.replace(
        'drift_start: "{{ event.payload.window[0] }}"',
        'drift_start: "{{ event.payload.window[1] }}"',
    )
    assert changed != text
    (tmp_path / "prefect.yaml").write_text(changed, "utf-8")
    rendered = triggered(tmp_path / "prefect.yaml", "train", DRIFT)
    assert rendered is not None and rendered["params"]["drift_start"] == "2026-02-03"
    disabled = text.replace("enabled: true", "enabled: false")
    (tmp_path / "prefect.yaml").write_text(disabled, "utf-8")
    assert triggered(tmp_path / "prefect.yaml", "train", DRIFT) is None
