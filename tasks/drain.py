"""The ingest run's drain loop: take what is pending, then what landed while the run worked,
until nothing new is pending, so a burst of arrivals is one run.

:func:`drain` is the loop the ingest flow runs (the flow passes its Prefect tasks for the steps:
the checks go to the settings' task runner, the records stay in the flow's process); called
with its defaults it runs the same steps in this process. :func:`next_round` decides each
round, :func:`batch_validated_event` is the run-level event (one features run per ingest run).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict

from tasks.ingest import (
    CheckedObject,
    IngestOutcome,
    Ledger,
    check_object,
    event_for,
    find_pending,
    record_object,
    summary_rows,
    totals,
)
from tasks.storage import ObjectInfo

if TYPE_CHECKING:
    from driftloop_config.usecase import UseCase
    from tasks.storage import Lake

BATCH_VALIDATED_EVENT = "driftloop.data.batch-validated"
#: objects per drain round at most (bounds one round's memory and the time to the next look)
MAX_ROUND_OBJECTS = 200
SHOWN = 10  # items listed by name in a summary; the rest are counted


def shortlist(items: Sequence[str], limit: int = SHOWN) -> str:
    """``a, b, c`` or ``a, b, +3 more``: every item accounted for, at most ``limit`` named."""
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit]) + f", +{len(items) - limit} more"


def settled(obj: ObjectInfo, now: datetime, settle_seconds: float) -> bool:
    """The object has not changed for ``settle_seconds`` (a file still being copied in has)."""
    return obj.modified <= now - timedelta(seconds=settle_seconds)


@dataclass(frozen=True)
class Round:
    """What the ingest flow does next: ingest ``take``; else wait ``wait_seconds`` for objects
    still changing; else stop (``take`` empty and ``wait_seconds`` None)."""

    take: list[ObjectInfo]
    wait_seconds: float | None = None
    unsettled: int = 0

    @property
    def stop(self) -> bool:
        return not self.take and self.wait_seconds is None


def next_round(
    pending: Iterable[ObjectInfo],
    attempted: set[tuple[str, str]],
    *,
    now: datetime,
    settle_seconds: float = 0.0,
    waited_seconds: float = 0.0,
    max_wait_seconds: float = 120.0,
    max_objects: int = MAX_ROUND_OBJECTS,
) -> Round:
    """The next round of an ingest run that drains the landing zone.

    ``pending`` is what the ledger has not seen now; ``attempted`` the (key, etag) pairs this run
    already ingested (an object that gained no ledger record, e.g. a read error, is not tried
    again in the same run, so the loop always ends). Settled objects are taken (at most
    ``max_objects``, oldest first); when only objects still changing are left, the run waits
    for the first of them to settle, as long as it has not waited ``max_wait_seconds`` in all.
    """
    fresh = [o for o in pending if (o.key, o.etag) not in attempted]
    ready = [o for o in fresh if settled(o, now, settle_seconds)]
    changing = [o for o in fresh if not settled(o, now, settle_seconds)]
    if ready:
        ready.sort(key=lambda o: (o.modified, o.key))
        return Round(take=ready[:max_objects], unsettled=len(changing))
    if not changing or waited_seconds >= max_wait_seconds:
        return Round(take=[], unsettled=len(changing))
    first = min(o.modified for o in changing) + timedelta(seconds=settle_seconds)
    wait = max((first - now).total_seconds(), 0.1)
    return Round(
        take=[], wait_seconds=min(wait, max_wait_seconds - waited_seconds), unsettled=len(changing)
    )


def batch_validated_event(
    outcomes: Sequence[IngestOutcome], landing_uri: str, *, rounds: int, run: str | None = None
) -> dict[str, Any] | None:
    """The run-level event of an ingest run that validated rows (None when it validated none):
    the features deployment's trigger starts one features run per such ingest run."""
    accepted = [o for o in outcomes if o.status in ("validated", "partial")]
    rows = sum(o.rows_valid for o in accepted)
    if rows == 0:
        return None
    partitions: dict[str, list[str]] = {}
    for o in accepted:
        if o.rows_valid:
            days = partitions.setdefault(o.dataset or "", [])
            days.extend(p for p in o.partitions if p not in days)
    partitions = {name: sorted(days) for name, days in sorted(partitions.items())}
    all_days = sorted({d for days in partitions.values() for d in days})
    span = all_days[0] if len(all_days) == 1 else f"{all_days[0]}..{all_days[-1]}"
    what = (
        f"{len(accepted)} objects, {rows:,} rows validated ({span})"
        if all_days
        else f"{len(accepted)} objects, {rows:,} rows validated"
    )
    return {
        "event": BATCH_VALIDATED_EVENT,
        "resource": {
            "prefect.resource.id": f"driftloop.landing.{landing_uri}",
            "prefect.resource.name": (f"ingest {run}: " if run else "ingest: ") + what,
        },
        "payload": {
            "objects": len(outcomes),
            "accepted": len(accepted),
            "rejected": sum(o.status == "rejected" for o in outcomes),
            "ignored": sum(o.status == "ignored" for o in outcomes),
            "rows_validated": rows,
            "rows_quarantined": sum(o.rows_quarantined for o in outcomes),
            "partitions": partitions,
            "rounds": rounds,
            "keys": shortlist([o.key for o in accepted]),
        },
    }


class IngestSummary(TypedDict):
    """What an ingest run returns: its totals by status, one row per object, its rounds."""

    totals: dict[str, int]
    objects: list[dict[str, Any]]
    rounds: int


@dataclass(frozen=True)
class Drained:
    """What one drain did: the objects it ingested (in order) and how many rounds it took."""

    outcomes: list[IngestOutcome] = field(default_factory=list)
    rounds: int = 0

    def summary(self) -> IngestSummary:
        return {
            "totals": totals(self.outcomes),
            "objects": summary_rows(self.outcomes),
            "rounds": self.rounds,
        }


def _check_here(calls: Sequence[Mapping[str, Any]]) -> list[CheckedObject]:
    return [check_object(**call) for call in calls]


def _no_events(events: Sequence[dict[str, Any]]) -> None:
    return None


def drain(
    lake: Lake,
    ledger: Ledger,
    usecase: UseCase,
    *,
    max_bytes: int,
    keys: list[str] | None = None,
    settle_seconds: float = 0.0,
    today: date | None = None,
    find: Callable[..., list[ObjectInfo]] = find_pending,
    check: Callable[[Sequence[Mapping[str, Any]]], Iterable[CheckedObject]] = _check_here,
    record: Callable[..., IngestOutcome | None] = record_object,
    announce: Callable[[Sequence[dict[str, Any]]], None] = _no_events,
    clock: Callable[[], datetime] = lambda: datetime.now(tz=UTC),
    sleep: Callable[[float], None] = time.sleep,
) -> Drained:
    """Ingest everything pending (only ``keys`` when given), round after round, until nothing
    new is pending; returns every object ingested, in order.

    Each round's objects are checked through ``check`` (given the keyword arguments of
    :func:`~tasks.ingest.check_object` per object, in order; it may run them anywhere), then
    recorded one by one by ``record`` in this process (the ledger's single writer), and their
    events are handed to ``announce`` before the next round looks again. An object whose content
    the ledger already holds (same bytes, new etag) is recorded but not returned.
    """
    outcomes: list[IngestOutcome] = []
    attempted: set[tuple[str, str]] = set()
    rounds, waited = 0, 0.0
    while True:
        step = next_round(
            find(lake.landing, ledger, keys=keys),
            attempted,
            now=clock(),
            settle_seconds=settle_seconds,
            waited_seconds=waited,
        )
        if step.stop:
            return Drained(outcomes, rounds)
        if step.wait_seconds is not None:
            sleep(step.wait_seconds)
            waited += step.wait_seconds
            continue
        rounds += 1
        attempted |= {(o.key, o.etag) for o in step.take}
        calls = [
            {
                "lake": lake,
                "usecase": usecase,
                "obj": obj,
                "max_bytes": max_bytes,
                "known": ledger.contents(obj.key),
                "today": today,
            }
            for obj in step.take
        ]
        checked = check(calls)
        recorded = [
            record(lake, ledger, usecase, obj, c) for obj, c in zip(step.take, checked, strict=True)
        ]
        done = [o for o in recorded if o is not None]
        announce([event_for(o, lake.landing.uri) for o in done])
        outcomes += done
