"""Nothing lost: the lake's pending work compared with the runs that are on their way.

Events start the chain (landed → ingest → features → train), but an event's action can fail (a
busy API answers 503), a run can crash on submission, and a run started while another one of
the same deployment is active is cancelled (prefect.yaml: ``CANCEL_NEW``, because the active
run does the same work). The lake is the record of what is left to do, so the reconcile step
looks there and starts what is missing:

* landed objects the ledger has no record of → an **ingest** run (it takes everything pending);
* validated days whose features were not built from their current inputs → a **features** run;
* a drift detection the loop state has not recorded, or a training the retraining policy wants
  for labels no training has seen yet → a **train** run.

Only the earliest stage with work is started: the later ones follow from its events, and the
next reconcile looks again. A deployment that already has a run scheduled to start now, pending,
running or paused is not started twice.

The ingest run's own drain loop (take what landed while it worked) is ``tasks.drain``.
Everything is plain and typed; talking to the Prefect API is left to ``flows/reconcile.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict

from tasks.drain import settled, shortlist

if TYPE_CHECKING:
    from driftloop_config.usecase import RetrainSpec, UseCase
    from tasks.loop_state import LoopState
    from tasks.policy import TrainDecision
    from tasks.storage import Lake

INGEST = "ingest"
FEATURES = "features"
TRAIN = "train"
#: the deployments reconcile may start, in chain order (prefect.yaml names them after the flows)
CHAIN = (INGEST, FEATURES, TRAIN)
#: run states that mean "on its way": another run of the deployment would only duplicate it
ACTIVE_STATES = ("SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING")
#: a scheduled run counts as on its way when it is due within this long (the daily cron's runs
#: for the coming days do not)
DUE_WITHIN = timedelta(minutes=2)


# ---- what is left to do -------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """A deployment run to start, with its parameters (``params`` of the flow) and why."""

    deployment: str
    reason: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PendingWork:
    """What the lake says is not done yet (see the module docstring)."""

    objects: list[str]  # landed keys without a ledger record, settled
    recent: list[str]  # landed keys without a record that changed a moment ago (left alone)
    feature_days: list[date]  # validated days whose features are missing or stale
    day: date | None  # the pipeline's "today" (newest delivered day)
    state: LoopState | None  # the retraining loop's memory, None without a model
    decision: TrainDecision | None  # the retraining policy's verdict for ``day``
    training_due: bool  # the verdict is "train" and no training has seen these labels
    unrecorded_drift: date | None  # start of a detected change the loop has not recorded
    drift_signals: tuple[str, ...] = ()  # what that detection saw (see tasks.drift)
    drift_severity: str | None = None
    drift_end: date | None = None  # the last day of that detection's window

    def actions(self) -> list[Action]:
        """The run to start: the earliest stage with work (the others follow by events)."""
        if self.objects:
            return [
                Action(
                    INGEST,
                    f"{len(self.objects)} landed objects not ingested: {shortlist(self.objects)}",
                    {"trigger": "reconcile"},
                )
            ]
        if self.feature_days:
            days = [d.isoformat() for d in self.feature_days]
            return [
                Action(
                    FEATURES,
                    f"{len(days)} validated days without current features: {shortlist(days)}",
                    {"trigger": "reconcile"},
                )
            ]
        if self.unrecorded_drift is not None:
            start = self.unrecorded_drift.isoformat()
            return [
                Action(
                    TRAIN,
                    f"drift detected from {start} is not recorded in the loop state",
                    {
                        "reason": "drift",
                        "as_of": _iso(self.drift_end),
                        "drift_start": start,
                        "signals": list(self.drift_signals) or None,
                        "severity": self.drift_severity,
                    },
                )
            ]
        if self.training_due and self.decision is not None and self.day is not None:
            return [
                Action(
                    TRAIN,
                    f"the retraining policy wants a model as of {self.day} ({self.decision.reason})",
                    {"reason": self.decision.trigger, "as_of": self.day.isoformat()},
                )
            ]
        return []


def training_due(day: date, state: LoopState, decision: TrainDecision, usecase: UseCase) -> bool:
    """The policy says train, and the newest labelled snapshot is newer than what the last
    training used: one training per set of labels, even when the gate rejected it (with no
    champion the policy keeps saying "train" until new labels make a better try possible)."""
    from tasks.training_set import last_snapshot_day

    if not decision.train:
        return False
    target = usecase.loop().target
    last = last_snapshot_day(
        day, horizon_days=target.horizon_days, label_delay_days=target.label_delay_days
    )
    return state.last_trained_through is None or last > state.last_trained_through


@dataclass(frozen=True)
class Detection:
    """The newest drift check, when it detected drift."""

    start: date  # first day of its window
    reported: datetime  # when its result was written
    signals: tuple[str, ...] = ()  # what it saw: input-drift, estimated-drop, ...
    severity: str | None = None
    end: date | None = None  # last day of its window


def last_detection(lake: Lake) -> Detection | None:
    """The newest drift check result in reports/drift/, when it detected drift."""
    from tasks.storage import read_json

    results = [i for i in lake.reports.list("drift/") if i.key.endswith(".json")]
    if not results:
        return None
    newest = max(results, key=lambda i: (i.modified, i.key))
    result: dict[str, Any] = read_json(lake.reports, newest.key)
    if not result.get("detected") or not result.get("window"):
        return None
    return Detection(
        date.fromisoformat(str(result["window"][0])[:10]),
        newest.modified,
        signals=tuple(str(s) for s in result.get("signals") or ()),
        severity=result.get("severity"),
        end=date.fromisoformat(str(result["window"][-1])[:10]),
    )


def unrecorded_drift(
    state: LoopState,
    detection: Detection | None,
    state_written: datetime | None,
    retrain: RetrainSpec | None = None,
) -> date | None:
    """The start of a detected change whose event never reached a train run (e.g. the run it
    started was cancelled): the detection is newer than the loop state's last write and
    recording it would change the state. None otherwise."""
    from tasks.policy import record_drift

    if detection is None:
        return None
    if state_written is not None and detection.reported <= state_written:
        return None
    recorded = record_drift(
        state, detection.start, signals=detection.signals or None, retrain=retrain
    )
    return detection.start if recorded != state else None


def find_work(
    lake: Lake,
    usecase: UseCase,
    *,
    has_champion: bool,
    now: datetime,
    settle_seconds: float = 60.0,
) -> PendingWork:
    """Compare the lake's zones: what landed, what the ledger holds, what features were built
    from, and what the retraining policy wants (see the module docstring). Reads only."""
    from tasks import policy
    from tasks.features import plan_features
    from tasks.ingest import find_pending, newest_day, open_ledger
    from tasks.loop_state import STATE_KEY

    ledger = open_ledger(lake.ledger)
    pending = find_pending(lake.landing, ledger)
    ready = [o.key for o in pending if settled(o, now, settle_seconds)]
    recent = [o.key for o in pending if not settled(o, now, settle_seconds)]
    feature_days: list[date] = []
    if usecase.features is not None:  # in any feature table: the entity's or a context's
        feature_days = sorted(
            {d for t in usecase.feature_tables for d in plan_features(lake, usecase, table=t).todo}
        )
    day = newest_day(ledger, usecase)
    state = decision = None
    due = False
    drift = None
    detection: Detection | None = None
    if usecase.model is not None and usecase.target is not None and usecase.features is not None:
        state = policy.current_state(lake, usecase, has_champion=has_champion)
        written = lake.ledger.info(STATE_KEY).modified if lake.ledger.exists(STATE_KEY) else None
        detection = last_detection(lake)
        drift = unrecorded_drift(state, detection, written, usecase.retrain)
        if day is not None:
            decision = policy.should_train(
                day, state, target=usecase.target, model=usecase.model, retrain=usecase.retrain
            )
            due = training_due(day, state, decision, usecase)
    return PendingWork(
        objects=ready,
        recent=recent,
        feature_days=feature_days,
        day=day,
        state=state,
        decision=decision,
        training_due=due,
        unrecorded_drift=drift,
        drift_signals=detection.signals if drift is not None and detection else (),
        drift_severity=detection.severity if drift is not None and detection else None,
        drift_end=detection.end if drift is not None and detection else None,
    )


# ---- what is on its way -------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """A flow run of one of the chain's deployments, as the Prefect API lists it."""

    deployment: str
    state_type: str  # StateType value, e.g. "SCHEDULED"
    state_name: str
    expected_start: datetime | None
    name: str = ""


def on_its_way(run: RunInfo, now: datetime) -> bool:
    """Pending, running, paused or cancelling; or scheduled to start now (a Late run and one
    waiting for its concurrency slot included, tomorrow's cron run not)."""
    if run.state_type not in ACTIVE_STATES:
        return False
    if run.state_type != "SCHEDULED":
        return True
    return run.expected_start is None or run.expected_start <= now + DUE_WITHIN


def active_deployments(runs: Iterable[RunInfo], now: datetime) -> dict[str, list[RunInfo]]:
    """The deployments with a run on its way, and those runs."""
    out: dict[str, list[RunInfo]] = {}
    for run in runs:
        if on_its_way(run, now):
            out.setdefault(run.deployment, []).append(run)
    return out


def to_start(actions: Iterable[Action], active: dict[str, list[RunInfo]]) -> list[Action]:
    """The actions whose deployment has no run on its way (the others would only duplicate)."""
    return [a for a in actions if a.deployment not in active]


# ---- the Prefect API (the reconcile flow and `driftloop reconcile`) -----------------------------


@dataclass(frozen=True)
class Started:
    """A run reconcile started."""

    deployment: str
    flow_run_id: str
    flow_run_name: str
    reason: str


def chain_deployments(client: Any) -> dict[str, Any]:
    """``{name: deployment id}`` of the chain's deployments the API knows (one call)."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowFilter,
        FlowFilterName,
    )

    found = client.read_deployments(
        flow_filter=FlowFilter(name=FlowFilterName(any_=list(CHAIN))),
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=list(CHAIN))),
    )
    return {d.name: d.id for d in found}


def active_runs(client: Any, deployments: dict[str, Any]) -> list[RunInfo]:
    """The runs of ``deployments`` in an active state type (one call)."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    if not deployments:
        return []
    names = {v: k for k, v in deployments.items()}
    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType(s) for s in ACTIVE_STATES])
            )
        ),
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=list(deployments.values()))),
        limit=200,
    )
    return [
        RunInfo(
            deployment=names[r.deployment_id],
            state_type=r.state.type.value if r.state else "SCHEDULED",
            state_name=r.state.name if r.state else "",
            expected_start=r.expected_start_time,
            name=r.name,
        )
        for r in runs
        if r.deployment_id in names
    ]


def start_runs(
    client: Any, deployments: dict[str, Any], actions: list[Action], *, dry_run: bool = False
) -> list[Started]:
    """Create a flow run of each action's deployment (scheduled now; a worker picks it up).
    A dry run starts nothing."""
    started: list[Started] = []
    if dry_run:
        return started
    for action in actions:
        if action.deployment not in deployments:
            continue
        run = client.create_flow_run_from_deployment(
            deployments[action.deployment],
            parameters={"params": action.params},
            tags=["reconcile"],
        )
        started.append(Started(action.deployment, str(run.id), run.name, action.reason))
    return started


def has_champion(tracking_uri: str, usecase: UseCase) -> bool:
    """The use case has a model and its registry names a champion (a train run has something
    to compare with)."""
    from tasks.registry import champion_version

    model = usecase.model
    return model is not None and champion_version(tracking_uri, model.registered_name) is not None


def action_rows(
    wanted: list[Action], active: dict[str, list[RunInfo]], started: list[Started]
) -> list[dict[str, str]]:
    """One row per wanted run: its deployment, why, and what became of it (started, already on
    its way, not started)."""
    return [
        {
            "deployment": a.deployment,
            "reason": a.reason,
            "done": next(
                (f"started {s.flow_run_name}" for s in started if s.deployment == a.deployment),
                "already on its way" if a.deployment in active else "not started",
            ),
        }
        for a in wanted
    ]


class Reconciled(TypedDict):
    """What a reconcile found and did: the pending work, the runs it wanted, those on their
    way, those it started, and the wanted deployments that are not deployed."""

    pending: dict[str, Any]
    wanted: list[dict[str, str]]
    on_its_way: dict[str, list[str]]
    started: list[dict[str, str]]
    not_deployed: list[str]


def summary(
    work: PendingWork,
    wanted: list[Action],
    active: dict[str, list[RunInfo]],
    started: list[Started],
    deployed: Iterable[str],
) -> Reconciled:
    """What a reconcile found and did, as plain values (the flow's result, the CLI's output)."""
    known = set(deployed)
    return {
        "pending": work_summary(work),
        "wanted": [{"deployment": a.deployment, "reason": a.reason} for a in wanted],
        "on_its_way": {
            dep: [f"{r.name} ({r.state_name})" for r in runs]
            for dep, runs in sorted(active.items())
        },
        "started": [
            {
                "deployment": s.deployment,
                "flow_run_id": s.flow_run_id,
                "flow_run_name": s.flow_run_name,
                "reason": s.reason,
            }
            for s in started
        ],
        "not_deployed": sorted({a.deployment for a in wanted} - known),
    }


def work_summary(work: PendingWork) -> dict[str, Any]:
    """The pending work as plain values (also what ``driftloop status`` shows)."""
    state = work.state
    return {
        "objects": work.objects,
        "objects_recent": work.recent,
        "feature_days": [d.isoformat() for d in work.feature_days],
        "day": work.day.isoformat() if work.day else None,
        "training": None
        if work.decision is None
        else {
            "train": work.decision.train,
            "reason": work.decision.reason,
            "due": work.training_due,
        },
        "loop_state": None
        if state is None
        else {
            "has_champion": state.has_champion,
            "last_trained_through": _iso(state.last_trained_through),
            "drift_since": _iso(state.drift_since),
            "drift_seen": _iso(state.drift_seen),
            "train_since": _iso(state.train_since),
        },
        "unrecorded_drift": _iso(work.unrecorded_drift),
    }


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None
