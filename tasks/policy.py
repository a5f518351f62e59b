"""When the closed loop trains: a pure decision over what is known on a day.

* With no champion: train as soon as enough labelled snapshot days exist to fill the training,
  validation and holdout splits.
* After drift is detected: wait until ``min_post_change_days`` labelled snapshot days exist since
  the change (labels arrive late), then train on data since the change only, so the new model
  learns the new reality; the gate still has to accept it.
* Otherwise: retrain when ``new_labelled_days`` more snapshot days have been labelled since the
  last training.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

from driftloop.usecase import ModelSpec, RetrainSpec, TargetSpec
from tasks.training_set import last_snapshot_day

MIN_TRAIN_DAYS = 3


@dataclass(frozen=True)
class LoopState:
    """What the loop remembers between days."""

    has_champion: bool = False
    first_snapshot: date | None = None  # the first day with a possible snapshot
    last_trained_through: date | None = None  # newest labelled snapshot day of the last training
    drift_since: date | None = None  # first day of a detected change not yet trained on
    train_since: date | None = None  # trainings use snapshots from here on (after a change)


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
