"""What a train run shows of the recovery of a stopped run (the recovery itself, against a real
MLflow registry and a killed train flow, is in tests/flows/test_train_crash.py)."""

from __future__ import annotations

from tasks.artifacts import Markdown, Table
from tasks.recovery import Recovery


def test_nothing_left_unfinished_is_said_in_one_line() -> None:
    assert Recovery().artifact() == Markdown(
        "recovery", "**Recovery:** the previous train runs left nothing unfinished."
    )


def test_each_thing_finished_is_one_row() -> None:
    recovered = Recovery(
        killed_runs=["abc123"],
        judged={"4": "rejected"},
        completed=["3"],
        removed=["training/telco_churn-v4.html.tmp"],
    )
    assert recovered.artifact() == Table(
        "recovery",
        [
            {"what": "MLflow run left RUNNING", "id": "abc123", "action": "marked KILLED"},
            {"what": "version registered but never judged", "id": "v4", "action": "rejected"},
            {"what": "decision without report/event", "id": "v3", "action": "completed"},
            {
                "what": "half-written file",
                "id": "training/telco_churn-v4.html.tmp",
                "action": "removed",
            },
        ],
        description="Left unfinished by a stopped train run, finished by this one",
    )
