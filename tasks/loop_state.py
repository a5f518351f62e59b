"""The closed loop's memory: what the retraining policy remembers between runs, and its storage.

:class:`LoopState` (with the newest attempt, :class:`Attempt`, the pending back-off,
:class:`Backoff`, and the decision log of :class:`Entry`) is kept in the lake's ledger zone as
``loop-state.json`` (:data:`STATE_KEY`), so deployments started by different events (and the
demo) share one state: :func:`read_state` / :func:`write_state` store the fields in
:data:`STORED_FIELDS` (the others are derived), :func:`parse_state` reads any stored version.
:func:`log` appends a decision to the bounded log (:data:`DECISION_LOG` entries). What the
policy decides on this state is in :mod:`tasks.policy`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import date
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from tasks.storage import Storage

STATE_KEY = "loop-state.json"
#: the format written; files without a version (the first format) are read too
STATE_VERSION = 2
#: decisions kept in the loop state (the oldest are dropped)
DECISION_LOG = 100
#: what is stored (``has_champion``, ``first_snapshot`` and ``evidence`` are derived)
STORED_FIELDS = (
    "last_trained_through",
    "drift_since",
    "drift_seen",
    "train_since",
    "drift_signals",
    "drift_attempts",
    "last_attempt",
    "backoff",
    "decisions",
)

Outcome = Literal["promoted", "rejected", "insufficient-evidence"]


def _day(value: object) -> date | None:
    return date.fromisoformat(str(value)[:10]) if value else None


def _iso(value: date | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(frozen=True)
class Labelled:
    """Labelled snapshot rows and positives (e.g. those newer than an attempt saw)."""

    rows: int = 0
    positives: int = 0


@dataclass(frozen=True)
class Attempt:
    """The newest training attempt: what it was as of, what it saw, how it ended."""

    as_of: date
    through: date  # the newest labelled snapshot day it could use
    outcome: Outcome
    version: str | None = None
    trigger: str = "manual"
    since: date | None = None

    def describe(self) -> str:
        if self.outcome == "insufficient-evidence":
            return f"already tried as of {self.as_of}: insufficient evidence"
        return f"already trained as of {self.as_of}: v{self.version} {self.outcome}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "as_of": _iso(self.as_of),
            "through": _iso(self.through),
            "outcome": self.outcome,
            "version": self.version,
            "trigger": self.trigger,
            "since": _iso(self.since),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Attempt:
        as_of = _day(raw["as_of"])
        assert as_of is not None
        return cls(
            as_of=as_of,
            through=_day(raw.get("through")) or as_of,
            outcome=raw["outcome"],
            version=raw.get("version"),
            trigger=str(raw.get("trigger") or "manual"),
            since=_day(raw.get("since")),
        )


@dataclass(frozen=True)
class Backoff:
    """No automatic training until enough newly labelled evidence exists after ``after``."""

    day: date  # when the back-off started
    as_of: date  # the attempt that caused it
    after: date  # the newest labelled snapshot day that attempt saw
    why: str  # e.g. "v7 rejected", "insufficient evidence"

    def to_dict(self) -> dict[str, Any]:
        return {
            "day": _iso(self.day),
            "as_of": _iso(self.as_of),
            "after": _iso(self.after),
            "why": self.why,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Backoff:
        after = _day(raw["after"])
        assert after is not None
        return cls(
            day=_day(raw.get("day")) or after,
            as_of=_day(raw.get("as_of")) or after,
            after=after,
            why=str(raw.get("why", "")),
        )


@dataclass(frozen=True)
class Entry:
    """One decision of the loop: on ``day``, ``action`` because ``reason``."""

    day: date
    action: str  # train, defer, back-off, duplicate, promoted, rejected, insufficient-evidence,
    # drift (a change recorded), drift-noted (seen, not acted on)
    reason: str
    as_of: date | None = None
    version: str | None = None
    trigger: str | None = None
    times: int = 1  # the same decision repeated in a row is one entry

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["day"], out["as_of"] = _iso(self.day), _iso(self.as_of)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Entry:
        day = _day(raw["day"])
        assert day is not None
        return cls(
            day=day,
            action=str(raw["action"]),
            reason=str(raw.get("reason", "")),
            as_of=_day(raw.get("as_of")),
            version=raw.get("version"),
            trigger=raw.get("trigger"),
            times=int(raw.get("times", 1)),
        )

    def line(self) -> str:
        """``2026-02-03 rejected (drift) as of 2026-02-03 v7: <reason>``"""
        parts = [self.day.isoformat(), self.action]
        if self.trigger:
            parts.append(f"({self.trigger})")
        if self.as_of:
            parts.append(f"as of {self.as_of}")
        if self.version:
            parts.append(f"v{self.version}")
        text = " ".join(parts) + f": {self.reason}"
        return text + (f" (x{self.times})" if self.times > 1 else "")


@dataclass(frozen=True)
class LoopState:
    """What the loop remembers between days."""

    has_champion: bool = False
    first_snapshot: date | None = None  # the first day with a possible snapshot
    last_trained_through: date | None = None  # newest labelled snapshot day of the last training
    drift_since: date | None = None  # first day of a detected change not yet trained on
    drift_seen: date | None = None  # the newest day a drift event signalled that change
    train_since: date | None = None  # trainings use snapshots from here on (after a change)
    drift_signals: tuple[str, ...] = ()  # what the pending change's event saw
    drift_attempts: int = 0  # drift-started attempts rejected / short of evidence since then
    last_attempt: Attempt | None = None  # the newest training attempt (one per as_of)
    backoff: Backoff | None = None  # set by a rejection or insufficient evidence
    decisions: tuple[Entry, ...] = ()  # the decision log, oldest first
    #: derived: labelled rows/positives after ``backoff.after`` (None: not counted)
    evidence: Labelled | None = field(default=None, compare=False)


def _stored(state: LoopState) -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "last_trained_through": _iso(state.last_trained_through),
        "drift_since": _iso(state.drift_since),
        "drift_seen": _iso(state.drift_seen),
        "train_since": _iso(state.train_since),
        "drift_signals": list(state.drift_signals),
        "drift_attempts": state.drift_attempts,
        "last_attempt": state.last_attempt.to_dict() if state.last_attempt else None,
        "backoff": state.backoff.to_dict() if state.backoff else None,
        "decisions": [e.to_dict() for e in state.decisions[-DECISION_LOG:]],
    }


def parse_state(raw: dict[str, Any]) -> LoopState:
    """The stored state from its JSON (any version; what a file lacks takes its default, and a
    malformed decision entry is skipped rather than failing the loop)."""
    decisions = []
    for item in raw.get("decisions") or []:
        try:
            decisions.append(Entry.from_dict(item))
        except (KeyError, TypeError, ValueError, AssertionError):
            continue
    attempt = raw.get("last_attempt")
    backoff = raw.get("backoff")
    return LoopState(
        last_trained_through=_day(raw.get("last_trained_through")),
        drift_since=_day(raw.get("drift_since")),
        drift_seen=_day(raw.get("drift_seen")),
        train_since=_day(raw.get("train_since")),
        drift_signals=tuple(str(s) for s in raw.get("drift_signals") or ()),
        drift_attempts=int(raw.get("drift_attempts") or 0),
        last_attempt=Attempt.from_dict(attempt) if attempt else None,
        backoff=Backoff.from_dict(backoff) if backoff else None,
        decisions=tuple(decisions[-DECISION_LOG:]),
    )


def read_state(ledger: Storage) -> LoopState:
    """The stored part of the loop state (an empty state when nothing was stored yet)."""
    from tasks.storage import read_json

    if not ledger.exists(STATE_KEY):
        return LoopState()
    return parse_state(read_json(ledger, STATE_KEY))


def write_state(ledger: Storage, state: LoopState) -> None:
    from tasks.storage import write_json

    write_json(ledger, STATE_KEY, _stored(state))


# ---- the decision log ---------------------------------------------------------------------------


def _triggers(*values: str | None) -> str | None:
    seen: list[str] = []
    for value in values:
        for t in (value or "").split(", "):
            if t and t not in seen:
                seen.append(t)
    return ", ".join(seen) or None


def log(state: LoopState, entry: Entry) -> LoopState:
    """``state`` with ``entry`` appended to its decision log. The same decision (action,
    reason, as_of, version) as the newest entry is counted on that entry instead, whoever asked
    (e.g. the features flow's request and a drift event's, both deferred for the same reason);
    the log keeps the newest :data:`DECISION_LOG` entries."""
    decisions = list(state.decisions)
    if decisions:
        last = decisions[-1]
        same = (last.action, last.reason, last.as_of, last.version)
        if same == (entry.action, entry.reason, entry.as_of, entry.version):
            decisions[-1] = replace(
                last,
                day=entry.day,
                times=last.times + entry.times,
                trigger=_triggers(last.trigger, entry.trigger),
            )
            return replace(state, decisions=tuple(decisions))
    decisions.append(entry)
    return replace(state, decisions=tuple(decisions[-DECISION_LOG:]))
