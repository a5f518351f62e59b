"""Replay a feed through the closed loop, day by day, with the real flows.

A *feed* is a folder (any :class:`tasks.storage.Storage`) holding the files a data provider
delivers, each named with the day it is delivered on (``activity/2026-01-05.csv``,
``events/2026-01-07.csv``, ``activity/week-2026-01-11-reexport.parquet``: the last
``YYYY-MM-DD`` in the key is its day). :func:`replay` plays the days ``first``..``last`` as the deployments of
``prefect.yaml`` would, in process:

1. the day's files are copied into ``landing/``;
2. ``ingest`` validates them;
3. ``features`` builds the changed feature days (no online materialisation) and asks the
   retraining policy; when it announces ``driftloop.training.due``, the event is read back from
   the Prefect API and ``train`` is started with the parameters the event carries (as the
   deployment trigger does);
4. ``score`` scores the day when there is a champion;
5. ``drift`` checks the window ending on the day; when it emits ``driftloop.drift.detected``,
   the event is read back and ``train`` is started with ``reason="drift"`` and the window's
   first day as ``drift_start`` (and the event's ``signals`` when the train flow takes them).

Every day ends with a :class:`DayOutcome`, also written to the lake's reports zone as
``replay/<use case>/<day>.json``; a replay started again skips the days whose outcome is
recorded, so an interrupted replay resumes where it stopped (a day stopped half-way is played
again: ingest takes only what it has not seen, features rebuild only changed days, and the train
flow does not train twice for the same ``as_of``). :func:`backfill` lands a range of
history days at once (one ingest run, one features run) before the live days.

The flows read their settings from the ``DRIFTLOOP_*`` environment: ``settings`` and
``usecase`` must be the ones that environment gives (checked).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from driftloop.settings import Settings
    from driftloop.usecase import UseCase
    from tasks.storage import Lake, Storage

DAY_IN_KEY = re.compile(r"(\d{4}-\d{2}-\d{2})")
OUTCOME_PREFIX = "replay"
#: how long to wait for an event the flow emitted to be readable from the Prefect API
EVENT_TIMEOUT = 30.0


@dataclass(frozen=True)
class TrainingRun:
    """One train run the loop started: what triggered it and what came of it."""

    trigger: str  # the event that started it: "training.due" or "drift.detected"
    reason: str  # the train flow's reason parameter (new-labels, drift, ...)
    as_of: str | None
    trained: bool
    since: str | None = None  # the first snapshot day it trained on (after a change)
    version: str | None = None
    promoted: bool | None = None
    deferred: str | None = None  # why the run did not train (the policy, too little evidence)

    @classmethod
    def from_result(cls, trigger: str, reason: str, out: dict[str, Any]) -> TrainingRun:
        if not out.get("trained"):
            return cls(
                trigger=trigger,
                reason=reason,
                as_of=out.get("as_of"),
                trained=False,
                deferred=str(out.get("reason", "")),
            )
        return cls(
            trigger=trigger,
            reason=str(out.get("reason", reason)),
            as_of=out.get("as_of"),
            trained=True,
            since=out.get("since"),
            version=str(out["version"]),
            promoted=bool(out["promoted"]),
        )


@dataclass
class DayOutcome:
    """What one replayed day did."""

    day: date
    objects: list[str] = field(default_factory=list)  # feed keys landed on the day
    rows_validated: int = 0
    rows_quarantined: int = 0
    files_rejected: int = 0
    training_due: dict[str, Any] | None = None  # the features flow's policy answer
    champion: str | None = None  # the champion at the end of the day
    scored: int | None = None  # rows scored (None: no champion, nothing scored)
    drift_status: str | None = None  # "drift", "no-drift", "no-data", "skipped"
    drift_detected: bool = False
    drift_severity: Any = None  # whatever the drift flow reports, when it does
    drift_signals: Any = None
    drift_drifted: list[str] = field(default_factory=list)
    trainings: list[TrainingRun] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def trained(self) -> list[TrainingRun]:
        """The runs that trained a challenger."""
        return [t for t in self.trainings if t.trained]

    @property
    def deferred(self) -> list[TrainingRun]:
        """The runs that were started but did not train."""
        return [t for t in self.trainings if not t.trained]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["day"] = self.day.isoformat()
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DayOutcome:
        values = dict(raw)
        values["day"] = date.fromisoformat(values["day"])
        values["trainings"] = [TrainingRun(**t) for t in values.get("trainings", [])]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


def day_of_key(key: str) -> date | None:
    """The day a feed object is delivered on: the last ``YYYY-MM-DD`` in its key (None when the
    key names no valid day)."""
    for text in reversed(DAY_IN_KEY.findall(key)):
        try:
            return date.fromisoformat(text)
        except ValueError:
            continue
    return None


def feed_by_day(feed: Storage) -> dict[date, list[str]]:
    """The feed's objects grouped by their day, keys sorted within a day."""
    days: dict[date, list[str]] = {}
    for info in feed.list():
        day = day_of_key(info.key)
        if day is not None:
            days.setdefault(day, []).append(info.key)
    return {d: sorted(keys) for d, keys in sorted(days.items())}


def land(lake: Lake, feed: Storage, keys: Iterable[str]) -> list[str]:
    """Copy feed objects into landing/ under the same keys; returns the keys."""
    landed = []
    for key in keys:
        lake.landing.write_bytes(key, feed.read_bytes(key))
        landed.append(key)
    return landed


def outcome_key(usecase: UseCase, day: date) -> str:
    return f"{OUTCOME_PREFIX}/{usecase.name}/{day.isoformat()}.json"


def recorded(lake: Lake, usecase: UseCase, day: date) -> DayOutcome | None:
    """The outcome recorded for ``day`` by an earlier replay, or None."""
    from tasks.storage import read_json

    key = outcome_key(usecase, day)
    if not lake.reports.exists(key):
        return None
    return DayOutcome.from_dict(read_json(lake.reports, key))


def recorded_outcomes(lake: Lake, usecase: UseCase) -> list[DayOutcome]:
    """Every recorded day outcome of this use case, oldest first."""
    from tasks.storage import read_json

    prefix = f"{OUTCOME_PREFIX}/{usecase.name}/"
    keys = sorted(i.key for i in lake.reports.list(prefix) if i.key.endswith(".json"))
    return [DayOutcome.from_dict(read_json(lake.reports, k)) for k in keys]


def wait_for_events(
    name: str, after: datetime, *, resource: str | None = None, timeout: float = EVENT_TIMEOUT
) -> list[Any]:
    """Events called ``name`` (about ``resource``, a ``prefect.resource.id``, when given) that
    the Prefect API received since ``after``, newest first; waits up to ``timeout`` seconds for
    at least one."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventOrder,
        EventResourceFilter,
    )

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            flt = EventFilter(
                event=EventNameFilter(name=[name]),
                resource=EventResourceFilter(id=[resource]) if resource else None,
                order=EventOrder.DESC,
                occurred=EventOccurredFilter(
                    since=after,  # type: ignore[arg-type]
                    until=datetime.now(tz=UTC) + timedelta(minutes=1),  # type: ignore[arg-type]
                ),
            )
            events = client.read_events(filter=flt, limit=50).events
            if events or time.monotonic() > deadline:
                return list(events)
            time.sleep(0.5)


def _check_environment(settings: Settings, usecase: UseCase) -> None:
    from driftloop.settings import load_settings
    from driftloop.usecase import load_usecase

    env = load_settings()
    if env.data_root != settings.data_root:
        raise ValueError(
            f"the flows would use the lake {env.data_root} (DRIFTLOOP_DATA_ROOT), not "
            f"{settings.data_root}: replay with the settings of the environment"
        )
    if load_usecase(env.usecase).name != usecase.name:
        raise ValueError(
            f"the flows would run the use case of {env.usecase} (DRIFTLOOP_USECASE), "
            f"not {usecase.name!r}"
        )


def backfill(
    settings: Settings, usecase: UseCase, feed: Storage, first: date, last: date
) -> dict[str, Any]:
    """Land the feed's days ``first``..``last`` at once, then one ingest run and one features
    run (no online materialisation). Idempotent: content already ingested is not validated
    again and unchanged feature days are not rebuilt. Returns the ingest totals and the feature
    days built."""
    from flows.features import FeaturesParams, features_flow
    from flows.ingest import IngestParams, ingest_flow
    from tasks.storage import Lake

    _check_environment(settings, usecase)
    lake = Lake.from_settings(settings)
    keys = [k for d, ks in feed_by_day(feed).items() if first <= d <= last for k in ks]
    land(lake, feed, keys)
    ingested = ingest_flow(IngestParams(objects=keys)) if keys else {"totals": {}}
    built = features_flow(FeaturesParams(materialize=False))
    return {
        "objects": len(keys),
        "ingest": ingested["totals"],
        "feature_days": len(built.get("dates_built", [])),
        "training": built.get("training"),
    }


def replay(
    settings: Settings,
    usecase: UseCase,
    feed: Storage,
    first: date,
    last: date,
    *,
    on_day: Callable[[DayOutcome], None] | None = None,
) -> list[DayOutcome]:
    """Play the days ``first``..``last`` of ``feed`` through the loop (see the module's
    docstring); returns one outcome per day, oldest first. Days already recorded in the lake are
    not played again: their recorded outcome is returned. ``on_day`` is called with each day's
    outcome (recorded or new) as it is known."""
    from tasks.storage import Lake, write_json

    if last < first:
        raise ValueError(f"last {last} is before first {first}")
    if usecase.model is None or usecase.target is None or usecase.features is None:
        raise ValueError(f"use case {usecase.name!r} defines no target/features/model to loop")
    _check_environment(settings, usecase)
    lake = Lake.from_settings(settings)
    by_day = feed_by_day(feed)
    outcomes: list[DayOutcome] = []
    day = first
    while day <= last:
        outcome = recorded(lake, usecase, day)
        if outcome is None:
            outcome = _play_day(settings, usecase, lake, feed, day, by_day.get(day, []))
            write_json(lake.reports, outcome_key(usecase, day), outcome.to_dict())
        outcomes.append(outcome)
        if on_day is not None:
            on_day(outcome)
        day += timedelta(days=1)
    return outcomes


def _play_day(
    settings: Settings,
    usecase: UseCase,
    lake: Lake,
    feed: Storage,
    day: date,
    keys: list[str],
) -> DayOutcome:
    from flows.drift import DriftParams, drift_flow
    from flows.features import FeaturesParams, features_flow
    from flows.ingest import IngestParams, ingest_flow
    from flows.score import ScoreParams, score_flow
    from tasks import registry
    from tasks.drift import DETECTED_EVENT
    from tasks.policy import TRAINING_DUE_EVENT

    assert usecase.model is not None
    name = usecase.model.registered_name
    resource = f"driftloop.model.{name}"
    started = time.monotonic()
    out = DayOutcome(day=day, objects=list(keys))

    land(lake, feed, keys)
    if keys:
        totals = ingest_flow(IngestParams(objects=keys))["totals"]
        out.rows_validated = int(totals.get("rows_validated", 0))
        out.rows_quarantined = int(totals.get("rows_quarantined", 0))
        out.files_rejected = int(totals.get("rejected", 0))

    built_at = datetime.now(tz=UTC)
    built = features_flow(FeaturesParams(materialize=False))
    out.training_due = built.get("training")
    if (out.training_due or {}).get("due"):
        for event in wait_for_events(TRAINING_DUE_EVENT, built_at, resource=resource)[:1]:
            payload = event.payload
            out.trainings.append(
                _train(
                    "training.due",
                    str(payload["reason"]),
                    as_of=date.fromisoformat(payload["as_of"]),
                )
            )

    champion = registry.champion_version(settings.tracking_uri, name)
    if champion is not None:
        scored = score_flow(ScoreParams(day=day))
        out.scored = int(scored.get("scored", 0))
        checked_at = datetime.now(tz=UTC)
        result = drift_flow(DriftParams(day=day))
        out.drift_status = result.get("status")
        out.drift_detected = bool(result.get("detected"))
        out.drift_severity = result.get("severity")
        out.drift_signals = result.get("signals")
        out.drift_drifted = list(result.get("drifted") or [])
        if out.drift_detected:
            for event in wait_for_events(DETECTED_EVENT, checked_at, resource=resource)[:1]:
                payload = event.payload
                out.trainings.append(
                    _train(
                        "drift.detected",
                        "drift",
                        as_of=day,
                        drift_start=date.fromisoformat(payload["window"][0]),
                        signals=payload.get("signals"),
                    )
                )
    out.champion = registry.champion_version(settings.tracking_uri, name)
    out.seconds = round(time.monotonic() - started, 2)
    return out


def _train(
    trigger: str,
    reason: str,
    *,
    as_of: date,
    drift_start: date | None = None,
    signals: Any = None,
) -> TrainingRun:
    """Start the train flow as the deployment trigger of ``trigger`` would."""
    from flows.train import TrainParams, train_flow

    params: dict[str, Any] = {"as_of": as_of, "reason": reason}
    if drift_start is not None:
        params["drift_start"] = drift_start
    if signals is not None and "signals" in TrainParams.model_fields:
        params["signals"] = signals
    out = train_flow(TrainParams(**params))
    return TrainingRun.from_result(trigger, reason, out)


def summarise(outcomes: list[DayOutcome]) -> dict[str, Any]:
    """Counts over a replay: days, alarm days, trainings run / promoted / rejected / deferred."""
    runs = [t for o in outcomes for t in o.trainings]
    return {
        "days": len(outcomes),
        "rows_validated": sum(o.rows_validated for o in outcomes),
        "rows_quarantined": sum(o.rows_quarantined for o in outcomes),
        "files_rejected": sum(o.files_rejected for o in outcomes),
        "alarm_days": [o.day.isoformat() for o in outcomes if o.drift_detected],
        "trained": sum(t.trained for t in runs),
        "promoted": sum(bool(t.promoted) for t in runs),
        "rejected": sum(t.trained and t.promoted is False for t in runs),
        "deferred": sum(not t.trained for t in runs),
        "champions": sorted({o.champion for o in outcomes if o.champion}, key=int),
    }
