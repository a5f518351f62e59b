"""When the closed loop trains: pure decisions over what is known on a day, and their record.

* With no champion: train as soon as enough labelled snapshot days exist to fill the training,
  validation and holdout splits.
* After drift is detected: wait until ``min_post_change_days`` labelled snapshot days exist since
  the change (labels arrive late), then train on data since the change only, so the new model
  learns the new reality; the gate still has to accept it. Each drift-started attempt the gate
  rejects (or that finds too little evidence) doubles the post-change days wanted before the
  next one (:data:`MAX_WIDENING` times the first wait at most). A change with a rejected attempt
  that no drift event has signalled for ``retrain.drift_quiet_days`` is over
  (:func:`quiet_change`): the loop stops waiting for it, and the next detection is a new change.
* Otherwise: retrain when ``new_labelled_days`` more snapshot days have been labelled since the
  last training.

Whatever asks (the features flow's ``driftloop.training.due``, a drift event, reconcile, a
schedule), three rules keep the loop from storming:

* **one training per as_of**: a second request for a day a training was already tried for is
  a recorded no-op ("already trained as of D: v7 rejected");
* **back-off**: after a rejected challenger or insufficient evidence, nothing is tried again
  until ``retrain.backoff_rows`` newly labelled rows *and* ``retrain.backoff_positives`` newly
  labelled positives exist beyond what that attempt saw (:func:`labelled_after`);
* **switches per signal**: a drift event carries ``signals`` (:data:`SIGNALS`) and a
  ``severity``; ``retrain.on_drift`` enables input and prediction drift,
  ``retrain.on_estimated_drop`` the estimated drop, ``retrain.on_realised_drop`` the realised
  one. An event with none of its signals enabled (or of severity ``watch``) is noted, not
  acted on. An event without ``signals`` (sent before they existed) is input drift.

This module keeps the decisions: what is newly labelled, the state completed with what the data
says (:func:`current_state`), drift events, :func:`should_train`, a train run's plan and its
recorded outcome, the ``driftloop.training.due`` check, and when to re-base a drift reference.
What the loop remembers between runs (:class:`tasks.loop_state.LoopState`) and its storage in
the lake's ledger zone as ``loop-state.json`` (so deployments started by different events, and
the demo, share one state) are in :mod:`tasks.loop_state`.
Only train runs write it (under the per-model training lock): they record drift events
(:func:`note_drift`), their decision (:func:`plan_run`) and its outcome
(:func:`record_training`, :func:`record_insufficient`); the train flow does it through
:func:`plan_training`, :func:`record_insufficient_run` and :func:`record_judged_run`. Every
decision is appended to a bounded log (:data:`tasks.loop_state.DECISION_LOG` entries,
:func:`tasks.loop_state.log`) that ``driftloop status`` shows. The features flow
(:func:`training_check`) and reconcile only ask :func:`should_train`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from driftloop_config.usecase import ModelSpec, RetrainSpec, TargetSpec
from tasks.artifacts import Markdown
from tasks.loop_state import (
    Attempt,
    Backoff,
    Entry,
    Labelled,
    LoopState,
    Outcome,
    log,
    read_state,
    write_state,
)
from tasks.training_set import last_snapshot_day

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pandas as pd

    from driftloop_config.usecase import UseCase
    from tasks.gate import Decision
    from tasks.storage import Lake, Storage

MIN_TRAIN_DAYS = 3
TRAINING_DUE_EVENT = "driftloop.training.due"
#: a drift-started attempt waits for at most this many times the first wait's post-change days
MAX_WIDENING = 8
#: what a drift event may say it saw
SIGNALS = ("input-drift", "prediction-drift", "estimated-drop", "realised-drop")
#: what an event without ``signals`` saw (it was sent before signals existed)
LEGACY_SIGNALS = ("input-drift",)
SEVERITIES = ("watch", "drift", "severe")

Trigger = Literal["manual", "schedule", "new-labels", "drift"]


# ---- newly labelled evidence --------------------------------------------------------------------


def labelled_after(entities: pd.DataFrame, *, after: date, label: str) -> Labelled:
    """Rows and positives of the labelled snapshots (an :func:`tasks.training_set.entity_frame`)
    taken after ``after``. Pure."""
    import pandas as pd

    if entities.empty:
        return Labelled()
    day = pd.to_datetime(entities["event_timestamp"], utc=True).dt.tz_localize(None)
    newer = entities.loc[day.dt.normalize() > pd.Timestamp(after)]
    return Labelled(rows=len(newer), positives=int((newer[label] > 0).sum()))


def newly_labelled(lake: Lake, usecase: UseCase, *, as_of: date, after: date) -> Labelled:
    """The labelled snapshot rows and positives known at ``as_of`` that were taken after
    ``after`` (read from the lake; the snapshots :func:`tasks.training.build_training_set` would
    build, on a grid starting the day after ``after``)."""
    from tasks.ingest import read_validated
    from tasks.training_set import SnapshotColumns, entity_frame

    loop = usecase.loop()
    target = loop.target
    columns = SnapshotColumns.of(usecase)
    source = usecase.datasets[loop.features.source_dataset]
    active = read_validated(
        lake, source, first=after, last=as_of, columns=[columns.entity, columns.day]
    )
    labels = read_validated(lake, usecase.datasets[target.labels_dataset], last=as_of)
    frame = entity_frame(
        active,
        labels,
        as_of=as_of,
        horizon_days=target.horizon_days,
        label_delay_days=target.label_delay_days,
        snapshot_every_days=loop.model.snapshot_every_days,
        first=after + timedelta(days=1),
        columns=columns,
        recurring=target.recurring,
    )
    return labelled_after(frame, after=after, label=columns.label)


def current_state(
    lake: Lake, usecase: UseCase, *, has_champion: bool, day: date | None = None
) -> LoopState:
    """The stored state completed with what the data says: the first snapshot day whose
    feature windows are complete (first validated day of the feature source + min history),
    and, during a back-off, the labelled evidence known on ``day`` (default: the pipeline's
    newest day) after what the attempt saw."""
    from tasks.ingest import validated_partitions

    loop = usecase.loop()
    days = validated_partitions(lake, usecase.datasets[loop.features.source_dataset])
    first = min(days) + timedelta(days=max(loop.model.min_history_days, 1)) if days else None
    state = replace(read_state(lake.ledger), has_champion=has_champion, first_snapshot=first)
    if state.backoff is not None:
        if day is None:
            from tasks.training import latest_day

            day = latest_day(lake, usecase)
        if day is not None:
            evidence = newly_labelled(lake, usecase, as_of=day, after=state.backoff.after)
            state = replace(state, evidence=evidence)
    return state


# ---- drift events -------------------------------------------------------------------------------


def enabled_signals(signals: Sequence[str] | None, retrain: RetrainSpec) -> list[str]:
    """The signals of a drift event that the use case lets start a training (missing signals:
    :data:`LEGACY_SIGNALS`)."""
    switch = {
        "input-drift": retrain.on_drift,
        "prediction-drift": retrain.on_drift,
        "estimated-drop": retrain.on_estimated_drop,
        "realised-drop": retrain.on_realised_drop,
    }
    seen = LEGACY_SIGNALS if signals is None else tuple(signals)
    return [s for s in seen if switch.get(s, False)]


def quiet_change(state: LoopState, day: date, retrain: RetrainSpec) -> bool:
    """Whether the pending change is over on ``day``: an attempt at it was rejected (or found
    too little evidence) and no drift event has signalled it for more than
    ``retrain.drift_quiet_days`` days. A model trained on the data since the change was no
    better, and the checks find the data like the champion's reference again: a passing
    episode, or a false alarm. Without that, the loop would keep widening its wait for a
    change that is gone, and take the next real change for part of it."""
    if state.drift_since is None or state.drift_seen is None or state.drift_attempts == 0:
        return False  # (a state stored before drift_seen existed: as before, never quiet)
    return (day - state.drift_seen).days > retrain.drift_quiet_days


def record_drift(
    state: LoopState,
    window_start: date,
    *,
    signals: Sequence[str] | None = None,
    retrain: RetrainSpec | None = None,
    day: date | None = None,
) -> LoopState:
    """A change starting at ``window_start``, detected on ``day`` (default: ``window_start``).
    Ignored when none of its ``signals`` is switched on in ``retrain`` (default: every switch
    on) and when the current training data already starts at or after it. While an earlier
    change is pending it is that change, seen again; once the pending change is quiet
    (:func:`quiet_change`) it is a new change, with the first wait. Touches only the drift
    fields (see :func:`note_drift` for the recorded decision)."""
    retrain = retrain or RetrainSpec()
    seen = day or window_start
    enabled = enabled_signals(signals, retrain)
    if not enabled:
        return state
    if state.drift_since is not None and not quiet_change(state, seen, retrain):
        newest = max(seen, state.drift_seen or seen)
        return state if state.drift_seen == newest else replace(state, drift_seen=newest)
    if state.train_since is not None and window_start <= state.train_since:
        return state
    return replace(
        state,
        drift_since=window_start,
        drift_seen=seen,
        drift_signals=tuple(enabled),
        drift_attempts=0,
    )


def note_drift(
    state: LoopState,
    *,
    day: date,
    window_start: date,
    signals: Sequence[str] | None,
    severity: str | None,
    retrain: RetrainSpec,
) -> LoopState:
    """A drift event, recorded as a change to retrain on (:func:`record_drift`) or noted with
    the reason it is not acted on; either way a decision in the log."""
    seen = list(LEGACY_SIGNALS if signals is None else signals)
    said = f"signals {', '.join(seen) or 'none'}; severity {severity or 'drift'}"
    enabled = enabled_signals(signals, retrain)
    after = record_drift(state, window_start, signals=signals, retrain=retrain, day=day)
    if severity == "watch":
        after = state
        why = f"noted, not retraining: a change from {window_start} to watch ({said})"
    elif not enabled:
        why = (
            f"noted, not retraining: a change from {window_start} ({said}), and retraining on "
            "these signals is switched off (retrain.on_drift / on_estimated_drop / "
            "on_realised_drop)"
        )
    elif after.drift_since == window_start and after.drift_since != state.drift_since:
        over = (
            f"; the change from {state.drift_since} was over (no drift signal since "
            f"{state.drift_seen or state.drift_since})"
            if state.drift_since is not None
            else ""
        )
        entry = Entry(day, "drift", f"recorded a change from {window_start} ({said}){over}")
        return log(after, entry)
    elif state.drift_since is not None:
        why = f"noted: a change from {state.drift_since} is pending already ({said})"
    else:
        why = (
            f"noted, not retraining: the training data already starts on {state.train_since}, "
            f"after the change from {window_start} ({said})"
        )
    return log(after, Entry(day, "drift-noted", why))


# ---- the decision -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainDecision:
    """Whether to train now; ``reason`` is the trigger when training, else why not."""

    train: bool
    reason: str
    since: date | None = None
    #: what was decided when not training: defer, back-off or duplicate
    action: Literal["defer", "back-off", "duplicate"] = "defer"
    detail: str = ""  # why, when training (e.g. "17/17 post-change labelled days")

    @property
    def trigger(self) -> Literal["new-labels", "drift"]:
        return "drift" if self.reason == "drift" else "new-labels"

    @property
    def kind(self) -> str:
        return "train" if self.train else self.action

    @property
    def why(self) -> str:
        return f"{self.reason}: {self.detail}" if self.train and self.detail else self.reason


def post_change_days_wanted(state: LoopState, *, model: ModelSpec, retrain: RetrainSpec) -> int:
    """Labelled snapshot days after a change a drift-started training waits for: the first
    wait doubled per rejected (or too thin) attempt, :data:`MAX_WIDENING` times at most."""
    needed = model.holdout_days + model.validation_days + MIN_TRAIN_DAYS
    base = max(retrain.min_post_change_days, needed)
    return min(base * 2 ** min(state.drift_attempts, 30), base * MAX_WIDENING)


def backoff_progress(state: LoopState, retrain: RetrainSpec) -> dict[str, Any] | None:
    """The pending back-off with what it waits for and what exists (None: no back-off)."""
    if state.backoff is None:
        return None
    seen = state.evidence or Labelled()
    b = state.backoff
    return {
        "since": b.day.isoformat(),
        "as_of": b.as_of.isoformat(),
        "after": b.after.isoformat(),
        "why": b.why,
        "rows": seen.rows,
        "rows_needed": retrain.backoff_rows,
        "positives": seen.positives,
        "positives_needed": retrain.backoff_positives,
        "counted": state.evidence is not None,
        "over": seen.rows >= retrain.backoff_rows and seen.positives >= retrain.backoff_positives,
    }


def should_train(
    day: date, state: LoopState, *, target: TargetSpec, model: ModelSpec, retrain: RetrainSpec
) -> TrainDecision:
    """The policy's verdict for a training as of ``day`` (see the module docstring)."""
    if state.first_snapshot is None:
        return TrainDecision(False, "no data yet")
    if state.last_attempt is not None and day <= state.last_attempt.as_of:
        return TrainDecision(False, state.last_attempt.describe(), action="duplicate")
    progress = backoff_progress(state, retrain)
    if progress is not None and not progress["over"]:
        return TrainDecision(
            False,
            f"backing off after {progress['why']} as of {progress['as_of']}: "
            f"{progress['rows']}/{progress['rows_needed']} newly labelled rows and "
            f"{progress['positives']}/{progress['positives_needed']} positives after "
            f"{progress['after']}",
            action="back-off",
        )
    last = last_snapshot_day(
        day, horizon_days=target.horizon_days, label_delay_days=target.label_delay_days
    )
    needed = model.holdout_days + model.validation_days + MIN_TRAIN_DAYS
    if (
        state.drift_since is not None
        and enabled_signals(state.drift_signals or None, retrain)
        and not quiet_change(state, day, retrain)
    ):
        post = (last - state.drift_since).days + 1
        wanted = post_change_days_wanted(state, model=model, retrain=retrain)
        widened = (
            f", widened after {state.drift_attempts} unsuccessful attempts"
            if state.drift_attempts
            else ""
        )
        if post >= wanted:
            return TrainDecision(
                True,
                "drift",
                since=state.drift_since,
                detail=f"{post}/{wanted} labelled days since the change from "
                f"{state.drift_since}{widened}",
            )
        return TrainDecision(
            False,
            f"drift: waiting for labels after the change ({max(post, 0)}/{wanted} days{widened})",
        )
    start = state.train_since or state.first_snapshot
    available = (last - start).days + 1
    if not state.has_champion:
        if available >= needed:
            return TrainDecision(
                True,
                "new-labels",
                since=state.train_since,
                detail=f"no champion; {available} labelled snapshot days",
            )
        return TrainDecision(
            False,
            f"no champion: waiting for labelled snapshots ({max(available, 0)}/{needed} days)",
        )
    if state.last_trained_through is not None:
        new = (last - state.last_trained_through).days
        if new >= retrain.new_labelled_days:
            return TrainDecision(
                True,
                "new-labels",
                since=state.train_since,
                detail=f"{new} newly labelled snapshot days since {state.last_trained_through}",
            )
    return TrainDecision(False, "champion is current")


@dataclass(frozen=True)
class RunRequest:
    """What a train run was asked (its parameters)."""

    trigger: Trigger = "manual"
    since: date | None = None
    drift_start: date | None = None
    signals: Sequence[str] | None = None
    severity: str | None = None


def plan_run(
    state: LoopState,
    *,
    day: date,
    request: RunRequest,
    target: TargetSpec,
    model: ModelSpec,
    retrain: RetrainSpec,
) -> tuple[LoopState, TrainDecision]:
    """A train run's decision, recorded: the drift event it carries (if any) is noted first,
    then a manual run trains now (on ``request.since``), a drift-started run whose change is
    not acted on is deferred with the reason, and every other run asks :func:`should_train`.
    Returns the state to write (the decision appended to the log) and the decision."""
    noted: Entry | None = None
    if request.drift_start is not None:
        before = state
        state = note_drift(
            state,
            day=day,
            window_start=request.drift_start,
            signals=request.signals,
            severity=request.severity,
            retrain=retrain,
        )
        noted = state.decisions[-1]
        if noted.action == "drift-noted" and state.drift_since is not None:
            # the change is pending already (only when it was last seen moved): the run's
            # decision below says all there is, so a daily drift event does not flood the log
            state = replace(before, drift_seen=state.drift_seen)
    if request.trigger == "manual":
        decision = TrainDecision(True, "manual", since=request.since, detail="asked by hand")
    elif (
        request.trigger == "drift"
        and noted is not None
        and noted.action == "drift-noted"
        and state.drift_since is None
    ):
        decision = TrainDecision(False, noted.reason)
        return state, decision  # the note is the decision
    else:
        decision = should_train(day, state, target=target, model=model, retrain=retrain)
    duplicate = not decision.train and decision.action == "duplicate"
    version = state.last_attempt.version if duplicate and state.last_attempt else None
    entry = Entry(
        day, decision.kind, decision.why, as_of=day, version=version, trigger=request.trigger
    )
    return log(state, entry), decision


class TrainOutcome(TypedDict, total=False):
    """What a train run returns: whether it trained, and why (not); for a trained challenger
    its version, the gate's decision, metrics, rows, population and reports
    (:meth:`tasks.training.Judged.outcome`); and what it recovered of a stopped run."""

    trained: bool
    reason: str
    as_of: str
    version: str
    why: str
    since: str | None
    promoted: bool
    decision: dict[str, Any]
    rebaselined: dict[str, Any] | None
    previous_champion: str | None
    metrics: dict[str, dict[str, Any]]
    rows: dict[str, int]
    population: dict[str, Any]
    reports: dict[str, str]
    recovered: dict[str, Any]


@dataclass(frozen=True)
class Deferral:
    """A train run that does not train now: why (also the run's message) and as of which day."""

    reason: str
    as_of: date | None  # None: nothing validated yet, so no day to train as of
    #: the run ends in its error instead (one asked by hand: the error is the answer)
    fails: bool = False

    def to_dict(self) -> TrainOutcome:
        """What the train flow returns for it."""
        out: TrainOutcome = {"trained": False, "reason": self.reason}
        if self.as_of is not None:
            out["as_of"] = str(self.as_of)
        return out

    def markdown(self, model: str) -> str:
        return f"**{model}: not training now** ({self.reason})"

    def artifact(self, model: str) -> Markdown:
        return Markdown("training-deferred", self.markdown(model))


@dataclass(frozen=True)
class TrainPlan:
    """A train run's decision as of ``day``, recorded (:func:`plan_training`), with what its
    outcome is recorded against (:func:`record_insufficient_run`, :func:`record_judged_run`)."""

    day: date  # the run's as_of
    request: RunRequest
    decision: TrainDecision
    state: LoopState  # as written: the decision is in its log
    #: the newest snapshot day whose labels are known on ``day``
    trained_through: date
    retrain: RetrainSpec
    #: why the run does not train now; None when it trains
    deferral: Deferral | None = None

    @property
    def since(self) -> date | None:
        """The first snapshot day the training uses (None: all history)."""
        return self.decision.since


def plan_training(
    lake: Lake,
    usecase: UseCase,
    request: RunRequest,
    *,
    day: date,
    tracking_uri: str,
    state_of: Callable[..., LoopState] = current_state,
) -> TrainPlan:
    """A train run's decision as of ``day`` (:func:`plan_run` on the loop state that
    ``state_of`` reads, knowing whether the model has a champion), written to the ledger zone
    before anything is trained. ``state_of`` takes :func:`current_state`'s arguments (the train
    flow passes it as a task)."""
    from tasks import registry

    loop = usecase.loop()
    has_champion = registry.champion_version(tracking_uri, loop.model.registered_name) is not None
    state = state_of(lake, usecase, has_champion=has_champion, day=day)
    state, decision = plan_run(
        state,
        day=day,
        request=request,
        target=loop.target,
        model=loop.model,
        retrain=usecase.retrain,
    )
    write_state(lake.ledger, state)
    return TrainPlan(
        day=day,
        request=request,
        decision=decision,
        state=state,
        trained_through=last_snapshot_day(
            day,
            horizon_days=loop.target.horizon_days,
            label_delay_days=loop.target.label_delay_days,
        ),
        retrain=usecase.retrain,
        deferral=None if decision.train else Deferral(decision.reason, day),
    )


# ---- outcomes -----------------------------------------------------------------------------------


def _drift_attempt(state: LoopState, since: date | None) -> bool:
    """Whether a training on data from ``since`` was an attempt at the pending change."""
    return state.drift_since is not None and since is not None and since >= state.drift_since


def _backoff_terms(retrain: RetrainSpec | None) -> str:
    r = retrain or RetrainSpec()
    return f"{r.backoff_rows} newly labelled rows and {r.backoff_positives} positives"


def record_training(
    state: LoopState,
    *,
    trained_through: date,
    promoted: bool,
    since: date | None,
    as_of: date | None = None,
    version: str | None = None,
    trigger: str = "manual",
    day: date | None = None,
    reason: str = "",
    retrain: RetrainSpec | None = None,
) -> LoopState:
    """After a training run: what it was trained through (the newest of what is recorded and
    ``trained_through``: a run finished late by the next one does not move it back); a promoted
    model trained on data since a pending change resolves that change (later trainings start
    there too) and ends any back-off; a rejected one starts a back-off (and, when it was an
    attempt at a pending change, widens the next attempt's wait). With ``as_of`` it is the
    newest attempt (one training per as_of) and a decision in the log."""
    through = trained_through
    if state.last_trained_through is not None:
        trained_through = max(trained_through, state.last_trained_through)
    state = replace(state, last_trained_through=trained_through)
    outcome: Outcome = "promoted" if promoted else "rejected"
    newest = as_of is not None and (state.last_attempt is None or as_of >= state.last_attempt.as_of)
    if as_of is not None and newest:
        state = replace(
            state,
            last_attempt=Attempt(as_of, through, outcome, version, trigger, since),
        )
    drift_attempt = _drift_attempt(state, since)
    if promoted:
        state = replace(state, has_champion=True, backoff=None)
        if drift_attempt:
            state = replace(
                state,
                train_since=since,
                drift_since=None,
                drift_seen=None,
                drift_signals=(),
                drift_attempts=0,
            )
        note = reason
    else:
        if drift_attempt:
            state = replace(state, drift_attempts=state.drift_attempts + 1)
        note = reason
        if as_of is None or newest:
            start = as_of or through
            state = replace(
                state,
                backoff=Backoff(
                    day=day or start,
                    as_of=start,
                    after=through,
                    why=f"v{version} rejected" if version else "a rejected challenger",
                ),
            )
            note = (reason + "; " if reason else "") + (
                f"backing off until {_backoff_terms(retrain)} after {through}"
            )
    if as_of is None:
        return state
    return log(state, Entry(day or as_of, outcome, note, as_of, version, trigger))


def record_insufficient(
    state: LoopState,
    *,
    day: date,
    as_of: date,
    trained_through: date,
    why: str,
    trigger: str,
    since: date | None,
    retrain: RetrainSpec | None = None,
) -> LoopState:
    """An attempt that found too little evidence to train and judge a model: it counts as the
    attempt of its as_of, starts a back-off, and (an attempt at a pending change) widens the
    next attempt's wait. Nothing was trained: what was trained through stays."""
    if state.last_attempt is not None and as_of < state.last_attempt.as_of:
        return log(state, Entry(day, "insufficient-evidence", why, as_of, None, trigger))
    if _drift_attempt(state, since):
        state = replace(state, drift_attempts=state.drift_attempts + 1)
    state = replace(
        state,
        last_attempt=Attempt(as_of, trained_through, "insufficient-evidence", None, trigger, since),
        backoff=Backoff(day=day, as_of=as_of, after=trained_through, why="insufficient evidence"),
    )
    note = f"{why}; backing off until {_backoff_terms(retrain)} after {trained_through}"
    return log(state, Entry(day, "insufficient-evidence", note, as_of, None, trigger))


def record_insufficient_run(ledger: Storage, plan: TrainPlan, error: str) -> Deferral:
    """A planned training whose training set holds too little evidence (``error``: why):
    recorded as the attempt of its as_of, with a back-off (:func:`record_insufficient`), so it
    is not tried again every day. The run defers with the reason, or (asked by hand) fails
    with its error."""
    why = error if error.startswith("insufficient evidence") else f"insufficient evidence: {error}"
    state = record_insufficient(
        plan.state,
        day=plan.day,
        as_of=plan.day,
        trained_through=plan.trained_through,
        why=why,
        trigger=plan.request.trigger,
        since=plan.since,
        retrain=plan.retrain,
    )
    write_state(ledger, state)
    return Deferral(why, plan.day, fails=plan.request.trigger == "manual")


def record_judged_run(
    ledger: Storage, plan: TrainPlan, version: str, decision: Decision
) -> LoopState:
    """A planned training whose challenger ``version`` the gate decided on: recorded
    (:func:`record_training`) and written; returns the state written."""
    state = record_training(
        plan.state,
        trained_through=plan.trained_through,
        promoted=decision.promote,
        since=plan.since,
        as_of=plan.day,
        version=version,
        trigger=plan.request.trigger,
        day=plan.day,
        reason=decision.reason,
        retrain=plan.retrain,
    )
    write_state(ledger, state)
    return state


def training_due_event(model: str, day: date, decision: TrainDecision) -> dict[str, Any]:
    """The Prefect event announcing that the policy wants a training run (the train
    deployment's trigger renders ``reason`` and ``as_of`` into its parameters)."""
    return {
        "event": TRAINING_DUE_EVENT,
        "resource": {
            "prefect.resource.id": f"driftloop.model.{model}",
            "prefect.resource.name": model,
        },
        "payload": {
            "reason": decision.trigger,
            "why": decision.why,
            "as_of": day.isoformat(),
            "since": decision.since.isoformat() if decision.since else None,
        },
    }


@dataclass(frozen=True)
class TrainingCheck:
    """The policy's answer after new data (:func:`training_check`): whether a training as of
    ``day`` is due, and the event that says so."""

    day: date
    decision: TrainDecision
    #: the ``driftloop.training.due`` event to emit; None when no training is due
    event: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The features flow's ``training`` entry."""
        return {
            "due": self.decision.train,
            "reason": self.decision.why,
            "decision": self.decision.kind,
        }


def training_check(
    lake: Lake,
    usecase: UseCase,
    day: date | None,
    *,
    tracking_uri: str,
    state_of: Callable[..., LoopState] = current_state,
) -> TrainingCheck | None:
    """Whether new data (usage or labels) makes a training as of ``day`` (the pipeline's
    newest day) due: :func:`should_train` on the loop state that ``state_of`` reads (it takes
    :func:`current_state`'s arguments; the features flow passes it as a task). Only reads: the
    train runs record decisions (one training per as_of, back-off after a rejection or too
    little evidence), so asking twice is harmless. None when the use case trains no model or
    nothing has been validated yet."""
    from tasks import registry

    if usecase.model is None or usecase.target is None or day is None:
        return None
    name = usecase.model.registered_name
    has_champion = registry.champion_version(tracking_uri, name) is not None
    state = state_of(lake, usecase, has_champion=has_champion, day=day)
    decision = should_train(
        day, state, target=usecase.target, model=usecase.model, retrain=usecase.retrain
    )
    event = training_due_event(name, day, decision) if decision.train else None
    return TrainingCheck(day, decision, event)


def rebaseline_reason(
    trigger: str,
    decision: Decision,
    last_check: Mapping[str, Any] | None,
    *,
    as_of: date,
    since: date | None,
) -> str | None:
    """Why the champion's drift reference should now describe the newest inputs, or None.

    A drift-started challenger, trained on the data after the change, was measured against the
    champion on the newest labels and was no better (every sanity check passed: the comparison
    itself holds), and the champion's newest drift check shows no drop of its performance
    (estimated or realised) and holds a complete realised window of the champion made only of
    snapshot days from ``since`` (the change's first day) on: the champion was measured on
    labels after the change, not only on an estimate. The inputs moved, and the champion still
    does its job on them: the change is the new normal. Left as it is, the reference keeps signalling it every day and
    every further attempt meets the same champion (an alarm with no remedy). ``last_check`` is
    the champion's newest stored drift check."""
    if trigger != "drift" or decision.promote or decision.compared_with is None:
        return None
    if decision.delta_ci is None or not all(decision.sanity.values()):
        return None
    if last_check is None or str(last_check.get("model_version")) != str(decision.compared_with):
        return None
    signals = set(last_check.get("signals") or [])
    if since is None or signals & {"estimated-drop", "realised-drop"}:
        return None
    measured = [
        w
        for w in last_check.get("realised") or []
        if w.get("complete")
        and str(w.get("version")) == str(decision.compared_with)
        and str(w.get("first")) >= since.isoformat()
    ]
    if not measured:
        return None
    low, high = decision.delta_ci
    return (
        f"the drift-started challenger was no better than champion v{decision.compared_with} on "
        f"the newest labels (interval of the gain [{low:+.4f}, {high:+.4f}]) and the champion's "
        f"check of {last_check.get('window', ['?', '?'])[-1]} shows no performance drop, "
        f"realised on labels of {measured[-1]['first']} → {measured[-1]['last']} after the "
        f"change of {since}: its drift reference now describes the inputs up to {as_of}"
    )
