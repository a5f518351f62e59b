"""The train flow cannot storm: requests for a day already tried are recorded no-ops, and a
training set with too little evidence backs the loop off instead of being tried every day.
Real flows, Feast repo and MLflow store on a small simulated telco."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypedDict

import pytest

from driftloop_config.settings import Settings
from flows.train import TrainParams, train_flow
from tasks import loop_state, registry
from tasks.storage import Lake
from tests.support.usecases import usecase_with
from tests.support.world import simulated_world

pytestmark = pytest.mark.usefixtures("prefect_harness")

NAME = "telco_churn"
LAST = date(2026, 2, 3)  # the newest delivered day of the 34-day world


class Sections(TypedDict):
    """The use case sections the world is simulated with."""

    model: dict[str, Any]
    retrain: dict[str, Any]


SECTIONS: Sections = {
    "model": {"floor": 0.5, "bootstrap_samples": 100, "min_history_days": 0},
    # about 550 customers a day: one newly labelled day is not enough, two are
    "retrain": {"backoff_rows": 1000, "backoff_positives": 1},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with simulated_world(tmp_path_factory.mktemp("train-once"), **SECTIONS) as settings:
        yield settings


def _versions(settings: Settings) -> list[str]:
    return sorted(str(v.version) for v in registry.versions(settings.tracking_uri, NAME))


def _state(settings: Settings) -> loop_state.LoopState:
    return loop_state.read_state(Lake.from_settings(settings).ledger)


def test_insufficient_evidence_backs_off_instead_of_retrying(
    world: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    two_days_ago = LAST - timedelta(days=2)
    # a use case asking for more training rows than the world holds
    strict = usecase_with(tmp_path, model={**SECTIONS["model"], "min_train_rows": 10**6})
    with monkeypatch.context() as mp:
        mp.setenv("DRIFTLOOP_USECASE", str(strict))
        run = train_flow(TrainParams(reason="new-labels", as_of=two_days_ago), return_state=True)
    assert run.name == "Deferred"
    out = run.result()
    assert out["trained"] is False
    assert out["reason"].startswith("insufficient evidence: the training split holds ")
    assert "needs >= 1,000,000 rows" in out["reason"]
    assert _versions(world) == []
    state = _state(world)
    through = two_days_ago - timedelta(days=13)  # horizon 7 - 1 + label delay 7
    assert state.last_attempt == loop_state.Attempt(
        two_days_ago, through, "insufficient-evidence", None, "new-labels", None
    )
    assert state.backoff == loop_state.Backoff(
        two_days_ago, two_days_ago, through, "insufficient evidence"
    )
    assert [e.action for e in state.decisions] == ["train", "insufficient-evidence"]

    # the same day again: a no-op, even under the use case that would now have enough
    again = train_flow(TrainParams(reason="new-labels", as_of=two_days_ago))
    assert again["reason"] == f"already tried as of {two_days_ago}: insufficient evidence"
    # the next day: one newly labelled day is below the back-off's 1000 rows
    nxt = train_flow(TrainParams(reason="new-labels", as_of=LAST - timedelta(days=1)))
    assert nxt["trained"] is False
    assert nxt["reason"].startswith(
        f"backing off after insufficient evidence as of {two_days_ago}: "
    )
    rows = int(nxt["reason"].split(": ")[1].split("/")[0])
    assert 400 < rows < 1000, nxt["reason"]  # one day of the ~550 active customers
    assert _versions(world) == []
    assert [e.action for e in _state(world).decisions][-2:] == ["duplicate", "back-off"]


def test_two_requests_for_the_same_day_train_one_model(world: Settings) -> None:
    """The features flow's training.due and a drift event both ask for a model as of the same
    day (the order the deployments' queue may run them in): one version, one decision."""
    # two newly labelled days since the attempt: the back-off is over
    first = train_flow(TrainParams(reason="new-labels", as_of=LAST))
    assert first["trained"] is True, first["reason"]
    assert first["version"] == "1"
    verdict = "promoted" if first["promoted"] else "rejected"
    second = train_flow(
        TrainParams(
            reason="drift",
            as_of=LAST,
            drift_start=LAST - timedelta(days=3),
            signals=["input-drift", "estimated-drop"],
            severity="drift",
        ),
        return_state=True,
    )
    assert second.name == "Deferred"
    assert second.result()["reason"] == f"already trained as of {LAST}: v1 {verdict}"
    third = train_flow(TrainParams(reason="new-labels", as_of=LAST))
    assert third["trained"] is False and third["reason"] == second.result()["reason"]
    assert _versions(world) == ["1"]

    state = _state(world)
    assert state.last_attempt is not None and state.last_attempt.version == "1"
    assert state.drift_since == LAST - timedelta(days=3)  # the change is recorded all the same
    assert state.drift_signals == ("input-drift", "estimated-drop")
    tail = [(e.action, e.trigger, e.version, e.times) for e in state.decisions[-4:]]
    assert tail == [
        ("train", "new-labels", None, 1),
        (verdict, "new-labels", "1", 1),
        ("drift", None, None, 1),
        ("duplicate", "drift, new-labels", "1", 2),  # the same no-op, asked twice
    ]
    # a person may still train by hand
    manual = train_flow(TrainParams(seed=3))
    assert manual["trained"] is True and manual["version"] == "2"
