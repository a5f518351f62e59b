"""When the closed loop trains: a pure decision over what is known on a day.

* With no champion: train as soon as enough labelled snapshot days exist to fill the training,
  validation and holdout splits.
* After drift is detected: wait until ``min_post_change_days`` labelled snapshot days exist since
  the change (labels arrive late), then train on data since the change only, so the new model
  learns the new reality; the gate still has to accept it.
* Otherwise: retrain when ``new_labelled_days`` more snapshot days have been labelled since the
  last training.

What the loop remembers between runs (:class:`LoopState`) is kept in the lake's ledger zone as
``loop-state.json``, so deployments started by different events (and the demo) share one state:
the drift flow's event records a change (:func:`record_drift`), the train flow records what it
trained (:func:`record_training`), and the features flow asks :func:`should_train` after every
build and announces ``driftloop.training.due`` when it is time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Literal

from driftloop.usecase import ModelSpec, RetrainSpec, TargetSpec
from tasks.training_set import last_snapshot_day

if TYPE_CHECKING:
    from driftloop.usecase import UseCase
    from tasks.storage import Lake, Storage

MIN_TRAIN_DAYS = 3
STATE_KEY = "loop-state.json"
TRAINING_DUE_EVENT = "driftloop.training.due"
#: What is stored; has_champion and first_snapshot are derived from the registry and the data.
STORED_FIELDS = ("last_trained_through", "drift_since", "train_since")


@dataclass(frozen=True)
class LoopState:
    """What the loop remembers between days."""

    has_champion: bool = False
    first_snapshot: date | None = None  # the first day with a possible snapshot
    last_trained_through: date | None = None  # newest labelled snapshot day of the last training
    drift_since: date | None = None  # first day of a detected change not yet trained on
    train_since: date | None = None  # trainings use snapshots from here on (after a change)


def _day(value: object) -> date | None:
    return date.fromisoformat(str(value)) if value else None


def read_state(ledger: Storage) -> LoopState:
    """The stored part of the loop state (an empty state when nothing was stored yet)."""
    from tasks.storage import read_json

    if not ledger.exists(STATE_KEY):
        return LoopState()
    raw: dict[str, Any] = read_json(ledger, STATE_KEY)
    return LoopState(
        last_trained_through=_day(raw.get("last_trained_through")),
        drift_since=_day(raw.get("drift_since")),
        train_since=_day(raw.get("train_since")),
    )


def write_state(ledger: Storage, state: LoopState) -> None:
    from tasks.storage import write_json

    write_json(ledger, STATE_KEY, {f: getattr(state, f) for f in STORED_FIELDS})


def current_state(lake: Lake, usecase: UseCase, *, has_champion: bool) -> LoopState:
    """The stored state completed with what the data says: the first snapshot day whose
    feature windows are complete (first validated day of the feature source + min history)."""
    from tasks.ingest import validated_partitions

    assert usecase.features is not None and usecase.model is not None
    days = validated_partitions(lake, usecase.datasets[usecase.features.source_dataset])
    first = min(days) + timedelta(days=max(usecase.model.min_history_days, 1)) if days else None
    return replace(read_state(lake.ledger), has_champion=has_champion, first_snapshot=first)


def record_drift(state: LoopState, window_start: date) -> LoopState:
    """A detected change starting at ``window_start``. Ignored while an earlier change is
    pending, and when the current training data already starts at or after it."""
    if state.drift_since is not None:
        return state
    if state.train_since is not None and window_start <= state.train_since:
        return state
    return replace(state, drift_since=window_start)


def record_training(
    state: LoopState, *, trained_through: date, promoted: bool, since: date | None
) -> LoopState:
    """After a training run: what it was trained through (the newest of what is recorded and
    ``trained_through``: a run finished late by the next one does not move it back); a promoted
    model trained on data since a pending change resolves that change (later trainings start
    there too)."""
    if state.last_trained_through is not None:
        trained_through = max(trained_through, state.last_trained_through)
    state = replace(state, last_trained_through=trained_through)
    if not promoted:
        return state
    state = replace(state, has_champion=True)
    if state.drift_since is not None and since is not None and since >= state.drift_since:
        state = replace(state, train_since=since, drift_since=None)
    return state


@dataclass(frozen=True)
class TrainDecision:
    """Whether to train now; ``reason`` is the trigger when training, else why not."""

    train: bool
    reason: str
    since: date | None = None

    @property
    def trigger(self) -> Literal["new-labels", "drift"]:
        return "drift" if self.reason == "drift" else "new-labels"


def should_train(
    day: date, state: LoopState, *, target: TargetSpec, model: ModelSpec, retrain: RetrainSpec
) -> TrainDecision:
    if state.first_snapshot is None:
        return TrainDecision(False, "no data yet")
    last = last_snapshot_day(
        day, horizon_days=target.horizon_days, label_delay_days=target.label_delay_days
    )
    needed = model.holdout_days + model.validation_days + MIN_TRAIN_DAYS
    if state.drift_since is not None and retrain.on_drift:
        post = (last - state.drift_since).days + 1
        wanted = max(retrain.min_post_change_days, needed)
        if post >= wanted:
            return TrainDecision(True, "drift", since=state.drift_since)
        return TrainDecision(
            False, f"drift: waiting for labels after the change ({max(post, 0)}/{wanted} days)"
        )
    start = state.train_since or state.first_snapshot
    available = (last - start).days + 1
    if not state.has_champion:
        if available >= needed:
            return TrainDecision(True, "new-labels", since=state.train_since)
        return TrainDecision(
            False,
            f"no champion: waiting for labelled snapshots ({max(available, 0)}/{needed} days)",
        )
    if (
        state.last_trained_through is not None
        and (last - state.last_trained_through).days >= retrain.new_labelled_days
    ):
        return TrainDecision(True, "new-labels", since=state.train_since)
    return TrainDecision(False, "champion is current")


def training_due_event(model: str, day: date, decision: TrainDecision) -> dict[str, Any]:
    """The Prefect event announcing that the policy wants a training run (the train
    deployment's trigger renders ``reason``, ``as_of`` and ``since`` into its parameters)."""
    return {
        "event": TRAINING_DUE_EVENT,
        "resource": {
            "prefect.resource.id": f"driftloop.model.{model}",
            "prefect.resource.name": model,
        },
        "payload": {
            "reason": decision.trigger,
            "why": decision.reason,
            "as_of": day.isoformat(),
            "since": decision.since.isoformat() if decision.since else None,
        },
    }
