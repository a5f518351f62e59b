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
history days at once (one ingest run, one features run) before the live days; :func:`replay`
takes that bulk path by itself for the feed's days before ``first`` that were never ingested
(:func:`history_to_backfill`), so a long history is not played day by day.

The flows read their settings from the ``DRIFTLOOP_*`` environment: ``settings`` and
``usecase`` must be the ones that environment gives (checked).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from driftloop_config.settings import Settings
    from driftloop_config.usecase import UseCase
    from tasks.policy import TrainOutcome
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
    delta_ci: list[float] | None = None  # the gate's interval of challenger - champion
    rebaselined: str | None = None  # the champion whose drift reference the run re-based

    @classmethod
    def from_result(cls, trigger: str, reason: str, out: TrainOutcome) -> TrainingRun:
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
            delta_ci=_rounded((out.get("decision") or {}).get("delta_ci")),
            rebaselined=(out.get("rebaselined") or {}).get("version"),
        )


def _rounded(values: Any) -> list[float] | None:
    return [round(float(v), 4) for v in values] if values else None


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
    drift_severity: str | None = None  # what the drift flow reports, when it checked
    drift_signals: list[str] | None = None
    drift_drifted: list[str] = field(default_factory=list)
    trainings: list[TrainingRun] = field(default_factory=list)
    seconds: float = 0.0
    #: wall seconds of each stage of the day: land, ingest, features, train, score, drift
    stage_seconds: dict[str, float] = field(default_factory=dict)

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


def land(lake: Lake, feed: Storage | None, keys: Iterable[str]) -> list[str]:
    """Copy feed objects into landing/ under the same keys; returns the keys. With no feed the
    objects are in landing/ already (a replay of landed history)."""
    landed = []
    for key in keys:
        if feed is not None:
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


@contextmanager
def without_heartbeats() -> Iterator[None]:
    """Flow runs in this process send no heartbeats. Each in-process flow run otherwise waits up
    to a second at its end for its heartbeat thread: with four or five flows a replayed day,
    that is most of a day's time. Heartbeats find crashed runs of deployed workers; a replay's
    runs live and die with the replay."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def _check_environment(settings: Settings, usecase: UseCase) -> None:
    from driftloop_config.settings import load_settings
    from driftloop_config.usecase import load_usecase

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


def days_in(lake: Lake, feed: Storage | None) -> dict[date, list[str]]:
    """The feed's objects by day; with no feed, the objects already in landing/."""
    return feed_by_day(feed if feed is not None else lake.landing)


def backfill(
    settings: Settings,
    usecase: UseCase,
    feed: Storage | None,
    first: date,
    last: date,
    *,
    checks: bool = False,
    on_day: Callable[[date, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Land the feed's days ``first``..``last`` at once (none: they are in landing/ already),
    then one ingest run and one features run (no online materialisation): the bulk path for
    a long history. With ``checks``, the champion then scores each day and the drift check runs
    on it, as the scheduled runs would have; nothing is trained (a drift found is reported, and
    no train run is started). Idempotent: content already ingested is not validated again,
    unchanged feature days are not rebuilt, a day's scores and drift report are rewritten the
    same. Returns the ingest totals, the feature days built and, with ``checks``, the days
    scored and the days with drift."""
    from flows.features import FeaturesParams, features_flow
    from flows.ingest import IngestParams, ingest_flow
    from tasks.drain import Drained
    from tasks.storage import Lake

    if last < first:
        raise ValueError(f"last {last} is before first {first}")
    _check_environment(settings, usecase)
    lake = Lake.from_settings(settings)
    keys = [k for d, ks in days_in(lake, feed).items() if first <= d <= last for k in ks]
    with without_heartbeats():
        land(lake, feed, keys)
        ingested = (
            ingest_flow(IngestParams(objects=keys, today=last)) if keys else Drained().summary()
        )
        built = features_flow(FeaturesParams(materialize=False))
        out: dict[str, Any] = {
            "objects": len(keys),
            "ingest": ingested["totals"],
            "feature_days": len(built.get("dates_built", [])),
            "training": built.get("training"),
        }
        if checks:
            out |= _check_days(settings, usecase, first, last, on_day)
    return out


def _check_days(
    settings: Settings,
    usecase: UseCase,
    first: date,
    last: date,
    on_day: Callable[[date, dict[str, Any]], None] | None,
) -> dict[str, Any]:
    """Score and drift-check each day with the champion of now; trains nothing."""
    from flows.drift import DriftParams, drift_flow
    from flows.score import ScoreParams, score_flow
    from tasks import registry

    champion = registry.champion_version(
        settings.tracking_uri, usecase.loop().model.registered_name
    )
    scored: dict[str, int] = {}
    drifted: list[str] = []
    day = first
    while champion is not None and day <= last:
        count = int(score_flow(ScoreParams(day=day)).get("scored", 0))
        result = drift_flow(DriftParams(day=day))
        done: dict[str, Any] = {
            "scored": count,
            "drift_status": result.get("status"),
            "drift": bool(result.get("detected")),
        }
        scored[day.isoformat()] = count
        if done["drift"]:
            drifted.append(day.isoformat())
        if on_day is not None:
            on_day(day, done)
        day += timedelta(days=1)
    return {"champion": champion, "scored": scored, "drift_days": drifted}


def history_to_backfill(lake: Lake, feed: Storage | None, first: date) -> tuple[date, date] | None:
    """The days of ``feed`` (none: of landing/) before ``first`` to land in bulk: from the first
    day with a file the ingest ledger has never recorded to the day before ``first``; None when
    every earlier file was ingested (a backfill or an earlier replay did it)."""
    from tasks.ingest import open_ledger

    seen = set(open_ledger(lake.ledger).landing_keys())
    new = [d for d, keys in days_in(lake, feed).items() if d < first and set(keys) - seen]
    return (min(new), first - timedelta(days=1)) if new else None


def replay(
    settings: Settings,
    usecase: UseCase,
    feed: Storage | None,
    first: date,
    last: date,
    *,
    on_day: Callable[[DayOutcome], None] | None = None,
    on_history: Callable[[date, date, dict[str, Any]], None] | None = None,
    shadow_first_champion: bool = False,
) -> list[DayOutcome]:
    """Play the days ``first``..``last`` of ``feed`` (none: of what landing/ holds) through the
    loop (see the module's docstring); returns one outcome per day, oldest first. Days already
    recorded in the lake are not played again: their recorded outcome is returned. ``on_day``
    is called with each day's outcome (recorded or new) as it is known. With
    ``shadow_first_champion``, the first champion keeps scoring next to the ones that replace
    it (its predictions are marked shadow), so its decay can be followed.

    The feed's history before ``first`` that was never ingested is first landed in bulk
    (:func:`history_to_backfill`, then :func:`backfill`: one ingest run, one features run,
    nothing trained), as ``driftloop backfill`` would; ``on_history`` is called with its first
    and last day and the backfill's summary."""
    from tasks.storage import Lake, write_json

    if last < first:
        raise ValueError(f"last {last} is before first {first}")
    usecase.loop()  # the whole loop runs: its target, features and model, or a UseCaseError
    _check_environment(settings, usecase)
    lake = Lake.from_settings(settings)
    history = history_to_backfill(lake, feed, first)
    if history is not None:
        filled = backfill(settings, usecase, feed, *history)
        if on_history is not None:
            on_history(*history, filled)
    by_day = days_in(lake, feed)
    outcomes: list[DayOutcome] = []
    earlier = [o for o in recorded_outcomes(lake, usecase) if o.day < first]
    day = first
    with without_heartbeats():
        while day <= last:
            outcome = recorded(lake, usecase, day)
            if outcome is None:
                shadow = first_champion(earlier + outcomes) if shadow_first_champion else None
                outcome = _play_day(settings, usecase, lake, feed, day, by_day.get(day, []), shadow)
                write_json(lake.reports, outcome_key(usecase, day), outcome.to_dict())
            outcomes.append(outcome)
            if on_day is not None:
                on_day(outcome)
            day += timedelta(days=1)
    return outcomes


def first_champion(outcomes: Iterable[DayOutcome]) -> str | None:
    """The first version that was champion in these outcomes."""
    return next((o.champion for o in outcomes if o.champion), None)


def _play_day(
    settings: Settings,
    usecase: UseCase,
    lake: Lake,
    feed: Storage | None,
    day: date,
    keys: list[str],
    shadow: str | None = None,
) -> DayOutcome:
    from flows.drift import DriftParams, drift_flow
    from flows.features import FeaturesParams, features_flow
    from flows.ingest import IngestParams, ingest_flow
    from flows.score import ScoreParams, score_flow
    from tasks import registry
    from tasks.drift import DETECTED_EVENT
    from tasks.ingest import open_ledger
    from tasks.policy import TRAINING_DUE_EVENT

    name = usecase.loop().model.registered_name
    resource = f"driftloop.model.{name}"
    prefect_yaml = settings.project_dir / "prefect.yaml"
    started = time.monotonic()
    out = DayOutcome(day=day, objects=list(keys))
    stage = _StageClock(out.stage_seconds)

    with stage("land"):
        land(lake, feed, keys)
    if keys:
        with stage("ingest"):
            ingest_flow(IngestParams(objects=keys, today=day))
            # counted from the ledger, not from this run: a day played again after a kill finds
            # its files ingested already, and its outcome must read the same
            ledger = open_ledger(lake.ledger)
            for record in filter(None, map(ledger.latest, keys)):
                out.rows_validated += int(record["rows_valid"])
                out.rows_quarantined += int(record["rows_quarantined"])
                out.files_rejected += record["status"] == "rejected"

    built_at = datetime.now(tz=UTC)
    with stage("features"):
        built = features_flow(FeaturesParams(materialize=False))
    out.training_due = built.get("training")
    if (out.training_due or {}).get("due"):
        with stage("train"):
            for event in wait_for_events(TRAINING_DUE_EVENT, built_at, resource=resource)[:1]:
                out.trainings += _train_from(prefect_yaml, "training.due", event)

    champion = registry.champion_version(settings.tracking_uri, name)
    if champion is not None:
        shadows = [shadow] if shadow and shadow != champion else []
        with stage("score"):
            scored = score_flow(ScoreParams(day=day, shadow_versions=shadows))
        out.scored = int(scored.get("scored", 0))
        checked_at = datetime.now(tz=UTC)
        with stage("drift"):
            result = drift_flow(DriftParams(day=day))
        out.drift_status = result.get("status")
        out.drift_detected = bool(result.get("detected"))
        out.drift_severity = result.get("severity")
        out.drift_signals = result.get("signals")
        out.drift_drifted = list(result.get("drifted") or [])
        if out.drift_detected:
            with stage("train"):
                for event in wait_for_events(DETECTED_EVENT, checked_at, resource=resource)[:1]:
                    out.trainings += _train_from(prefect_yaml, "drift.detected", event)
    out.champion = registry.champion_version(settings.tracking_uri, name)
    out.seconds = round(time.monotonic() - started, 2)
    return out


class _StageClock:
    """``with clock("score"): ...`` adds the block's wall seconds to ``totals["score"]``."""

    def __init__(self, totals: dict[str, float]) -> None:
        self.totals = totals

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        began = time.monotonic()
        try:
            yield
        finally:
            spent = self.totals.get(name, 0.0) + time.monotonic() - began
            self.totals[name] = round(spent, 2)


def _train_from(prefect_yaml: Path, trigger: str, event: Any) -> list[TrainingRun]:
    """Start the train flow as the train deployment's trigger in ``prefect_yaml`` would for
    ``event`` (a Prefect event read back from the API): with the parameters it renders, or not
    at all when no trigger of it fires."""
    from driftloop.triggers import triggered
    from flows.train import TrainParams, train_flow

    raw = {"event": event.event, "resource": dict(event.resource), "payload": event.payload}
    rendered = triggered(prefect_yaml, "train", raw)
    if rendered is None:
        return []
    params = TrainParams.model_validate(rendered.get("params") or {})
    return [TrainingRun.from_result(trigger, params.reason, train_flow(params))]


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
