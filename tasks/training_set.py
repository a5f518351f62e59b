"""The point-in-time training set: labelled snapshots joined with the features known then.

A *snapshot* is taken at midnight UTC of a day ``s``. Its candidates are the entities (customers,
in the telco use case) with a row of the feature source dataset on day ``s - 1``; its label says
whether the event (a churn) happens within ``horizon_days`` from ``s``. Who of the candidates is
in the snapshot depends on the target (:func:`membership`):

* **terminal** (``target.recurring: false``, e.g. a churn): an entity whose known event lies
  before ``s`` has left; it is in no later snapshot.
* **recurring** (``target.recurring: true``, e.g. a delayed departure): every candidate stays;
  the label is 1 when at least one event falls in ``[s, s + horizon_days)``.

A regression target (``target.kind: regression``, always recurring) labels each snapshot row
with the sum of the events' ``target.value_column`` in ``[s, s + horizon_days)`` instead (0
without an event); a *positive*, for the evidence counts, is a row whose outcome is above 0.

Scoring applies the same rule at its scoring instant (``tasks.score``), and :func:`population`
counts, per snapshot day, who was a candidate, who was kept, who was left out and why.

Features come from Feast's point-in-time join: the newest feature row with
``event_timestamp <= s`` — the features of day ``s - 1`` at the latest. The split by time
(:func:`evidence_split`) takes the newest snapshot days as the holdout and reaches further back
until each split holds enough rows and positives to decide on.

Column names come from the use case (:meth:`SnapshotColumns.of`); the defaults are the telco
use case's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from feast import FeatureStore

    from driftloop_config.usecase import UseCase

ROW_ID = "__driftloop_row"


@dataclass(frozen=True)
class SnapshotColumns:
    """The columns :func:`entity_frame` reads and writes (by default the telco use case's)."""

    entity: str = "customer_id"  # the entity id, in the active rows, the labels and the output
    day: str = "date"  # the active rows' day
    event: str = "churn_date"  # the labels' day the event happened
    reported: str = "reported_date"  # the labels' day the event became known
    label: str = "churned"  # the output's 0/1 label (or, with ``value``, the summed outcome)
    value: str | None = None  # regression: the labels' column summed over the horizon

    @classmethod
    def of(cls, usecase: UseCase) -> SnapshotColumns:
        """The columns of a use case: its entity, the feature source dataset's partition
        column, and its target's event, reported and label columns."""
        if usecase.target is None or usecase.features is None:
            raise ValueError(f"use case {usecase.name!r} defines no target and features")
        source = usecase.datasets[usecase.features.source_dataset]
        return cls(
            entity=usecase.entity,
            day=source.partition_by,
            event=usecase.target.event_column,
            reported=usecase.reported_column,
            label=usecase.target.name,
            value=usecase.target.value_column,
        )


class TrainingSetError(RuntimeError):
    """The training set would be wrong (dropped rows, leakage, nothing to train on)."""


def _as_day(value: date | datetime | str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def _days(values: pd.Series) -> pd.Series:
    """A date-like column as naive midnight timestamps."""
    out = pd.to_datetime(values)
    if getattr(out.dt, "tz", None) is not None:
        out = out.dt.tz_convert(UTC).dt.tz_localize(None)
    return out.dt.normalize().astype("datetime64[ns]")


def last_snapshot_day(as_of: date, *, horizon_days: int, label_delay_days: int) -> date:
    """The newest snapshot day whose labels are all known at ``as_of``."""
    return _as_day(as_of) - timedelta(days=horizon_days - 1 + label_delay_days)


#: the two membership rules (``target.recurring`` false / true)
TERMINAL = "terminal"
RECURRING = "recurring"
#: why a candidate is left out of a snapshot, by rule
EVENT_BEFORE = "event before the snapshot (terminal target)"
EXCLUSION_REASONS = (EVENT_BEFORE,)
RULE_DESCRIPTIONS = {
    TERMINAL: "terminal: an entity leaves the snapshots after its first known event",
    RECURRING: "recurring: every active entity stays in every snapshot; label 1 when at least "
    "one event falls in the horizon",
}


def population_rule(recurring: bool) -> str:
    """The name of a target's membership rule (recorded with a model, compared at scoring)."""
    return RECURRING if recurring else TERMINAL


def _known_events(labels: pd.DataFrame, known_by: date, columns: SnapshotColumns) -> pd.DataFrame:
    """``[entity, event]`` of the events reported on or before ``known_by`` (and ``value``,
    their outcome, when the columns name one; an event's missing value counts as 0)."""
    if labels.empty:
        empty = {"entity": pd.Series(dtype="object"), "event": pd.Series(dtype="M8[ns]")}
        if columns.value is not None:
            empty["value"] = pd.Series(dtype="float64")
        return pd.DataFrame(empty)
    known = labels.loc[_days(labels[columns.reported]) <= pd.Timestamp(_as_day(known_by))]
    out = pd.DataFrame(
        {"entity": known[columns.entity].astype(str), "event": _days(known[columns.event])}
    )
    if columns.value is None:
        return out.drop_duplicates()
    values = pd.to_numeric(known[columns.value], errors="coerce").astype("float64").fillna(0.0)
    return out.assign(value=values.to_numpy())


def _judge(
    candidates: pd.DataFrame, events: pd.DataFrame, *, horizon_days: int, recurring: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(label, excluded) per candidate row ``[entity, snap]``: the label is 1 when an event falls
    in ``[snap, snap + horizon)`` — or, when ``events`` has a ``value`` column, the sum of the
    values of those events (0.0 without one); a terminal target excludes a row whose entity has
    an event before ``snap``."""
    summed = "value" in events.columns
    label = np.zeros(len(candidates), dtype=np.float64 if summed else np.int64)
    excluded = np.zeros(len(candidates), dtype=bool)
    if candidates.empty or events.empty:
        return label, excluded
    pairs = candidates.reset_index(drop=True).reset_index(names="row")
    pairs = pairs.merge(events, on="entity", how="inner")
    horizon = pd.Timedelta(days=horizon_days)
    within = (pairs["event"] >= pairs["snap"]) & (pairs["event"] < pairs["snap"] + horizon)
    if summed:
        sums = pairs.loc[within].groupby("row")["value"].sum()
        label[sums.index.to_numpy()] = sums.to_numpy()
    else:
        label[pairs.loc[within, "row"].unique()] = 1
    if not recurring:
        excluded[pairs.loc[pairs["event"] < pairs["snap"], "row"].unique()] = True
    return label, excluded


def membership(
    entities: pd.Series,
    labels: pd.DataFrame,
    *,
    at: date,
    known_by: date,
    recurring: bool,
    columns: SnapshotColumns = SnapshotColumns(),
) -> np.ndarray:
    """Which of ``entities`` belong to a snapshot taken at ``at`` (00:00 UTC), by the rule that
    builds the training snapshots: with a terminal target, no entity whose event (reported on or
    before ``known_by``) lies before ``at``; with a recurring target, every entity. A boolean
    array aligned with ``entities``. Pure."""
    candidates = pd.DataFrame(
        {"entity": entities.astype(str).to_numpy(dtype=object), "snap": pd.Timestamp(_as_day(at))}
    )
    _, excluded = _judge(
        candidates, _known_events(labels, known_by, columns), horizon_days=1, recurring=recurring
    )
    return ~excluded


def _snapshots(
    active: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    as_of: date,
    horizon_days: int,
    label_delay_days: int,
    snapshot_every_days: int,
    first: date | None,
    columns: SnapshotColumns,
    recurring: bool,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The candidate rows ``[entity, snap]`` on the snapshot grid, their labels and whether
    the membership rule excludes them."""
    if horizon_days < 1 or label_delay_days < 0 or snapshot_every_days < 1:
        raise ValueError("horizon_days >= 1, label_delay_days >= 0, snapshot_every_days >= 1")
    none = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    empty = pd.DataFrame({"entity": pd.Series(dtype="object"), "snap": pd.Series(dtype="M8[ns]")})
    if active.empty:
        return empty, *none
    act = pd.DataFrame(
        {"entity": active[columns.entity].astype(str), "snap": _days(active[columns.day])}
    )
    act["snap"] = act["snap"] + pd.Timedelta(days=1)  # active on s - 1 → candidate of snapshot s
    act = act.drop_duplicates()

    start = pd.Timestamp(first) if first is not None else act["snap"].min()
    last = pd.Timestamp(
        last_snapshot_day(as_of, horizon_days=horizon_days, label_delay_days=label_delay_days)
    )
    offset = (act["snap"] - start).dt.days
    on_grid = (offset >= 0) & (offset % snapshot_every_days == 0) & (act["snap"] <= last)
    act = act.loc[on_grid].sort_values(["snap", "entity"], ignore_index=True)
    if act.empty:
        return empty, *none
    label, excluded = _judge(
        act,
        _known_events(labels, as_of, columns),
        horizon_days=horizon_days,
        recurring=recurring,
    )
    return act, label, excluded


def labelled_snapshots(
    active: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    as_of: date,
    horizon_days: int,
    label_delay_days: int,
    snapshot_every_days: int = 1,
    first: date | None = None,
    columns: SnapshotColumns = SnapshotColumns(),
    recurring: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(:func:`entity_frame`, :func:`population`) of the same arguments, computed once."""
    act, label, excluded = _snapshots(
        active,
        labels,
        as_of=as_of,
        horizon_days=horizon_days,
        label_delay_days=label_delay_days,
        snapshot_every_days=snapshot_every_days,
        first=first,
        columns=columns,
        recurring=recurring,
    )
    keep = ~excluded
    out = pd.DataFrame(
        {
            columns.entity: act["entity"].to_numpy(dtype=object)[keep],
            "event_timestamp": pd.to_datetime(act["snap"].to_numpy()[keep]).tz_localize(UTC),
            columns.label: label[keep],
        }
    )
    out["event_timestamp"] = out["event_timestamp"].astype("datetime64[ns, UTC]")
    return out, _count_population(act, label, excluded)


def entity_frame(
    active: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    as_of: date,
    horizon_days: int,
    label_delay_days: int,
    snapshot_every_days: int = 1,
    first: date | None = None,
    columns: SnapshotColumns = SnapshotColumns(),
    recurring: bool = False,
) -> pd.DataFrame:
    """Labelled snapshots ``[<entity>, event_timestamp, <label>]`` known at ``as_of``.

    With the default :class:`SnapshotColumns` (the telco use case's): ``active`` has one row
    per customer and day with usage (``customer_id``, ``date``); ``labels`` the target events
    (``customer_id``, ``churn_date``, ``reported_date``). Snapshot days run every
    ``snapshot_every_days`` from ``first`` (default: the day after the first active day) up to
    the last day ``s`` with ``s + horizon_days - 1 + label_delay_days <= as_of``; only labels
    reported on or before ``as_of`` are used. A snapshot holds every entity active on ``s - 1``
    — with a terminal target (``recurring=False``) except those with an event before ``s``;
    the label is 1 when an event falls in ``[s, s + horizon_days)``. ``event_timestamp`` is
    ``s`` at 00:00 UTC. Sorted by event_timestamp, then the entity. Pure.
    """
    frame, _ = labelled_snapshots(
        active,
        labels,
        as_of=as_of,
        horizon_days=horizon_days,
        label_delay_days=label_delay_days,
        snapshot_every_days=snapshot_every_days,
        first=first,
        columns=columns,
        recurring=recurring,
    )
    return frame


def _excluded_column(reason: str) -> str:
    return f"excluded: {reason}"


def _count_population(act: pd.DataFrame, label: np.ndarray, excluded: np.ndarray) -> pd.DataFrame:
    rows = pd.DataFrame(
        {
            "snapshot": act["snap"].dt.date,
            "active": 1,
            "members": (~excluded).astype(np.int64),
            _excluded_column(EVENT_BEFORE): excluded.astype(np.int64),
            "positives": np.where(excluded | (label <= 0), 0, 1),
        }
    )
    columns = ["snapshot", "active", "members", *map(_excluded_column, EXCLUSION_REASONS)]
    columns += ["positives", "positive_rate"]
    if rows.empty:
        out = pd.DataFrame({c: pd.Series(dtype="int64") for c in columns})
        out["snapshot"] = out["snapshot"].astype("object")
        out["positive_rate"] = out["positive_rate"].astype("float64")
        return out
    out = rows.groupby("snapshot", sort=True).sum().reset_index()
    out["positive_rate"] = out["positives"] / out["members"].where(out["members"] > 0)
    return out[columns]


def population(
    active: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    as_of: date,
    horizon_days: int,
    label_delay_days: int,
    snapshot_every_days: int = 1,
    first: date | None = None,
    columns: SnapshotColumns = SnapshotColumns(),
    recurring: bool = False,
) -> pd.DataFrame:
    """Who the snapshots of :func:`entity_frame` (same arguments) hold, per snapshot day: one
    row per day with ``snapshot`` (a date), ``active`` (entities active the day before: the
    candidates), ``members`` (in the snapshot), ``excluded: <reason>`` (one column per reason in
    :data:`EXCLUSION_REASONS`), ``positives`` (members labelled above 0) and ``positive_rate``
    (positives / members). Pure."""
    _, counts = labelled_snapshots(
        active,
        labels,
        as_of=as_of,
        horizon_days=horizon_days,
        label_delay_days=label_delay_days,
        snapshot_every_days=snapshot_every_days,
        first=first,
        columns=columns,
        recurring=recurring,
    )
    return counts


def population_summary(counts: pd.DataFrame, *, recurring: bool) -> dict[str, Any]:
    """The population of :func:`population` in a few lines (for the training report)."""
    rule = population_rule(recurring)
    out: dict[str, Any] = {"population rule": RULE_DESCRIPTIONS[rule]}
    if counts.empty:
        out["snapshot days"] = 0
        return out
    active = int(counts["active"].sum())
    members = int(counts["members"].sum())
    positives = int(counts["positives"].sum())
    out["snapshot days"] = len(counts)
    out["active entity-days"] = f"{active:,}"
    out["in the population"] = f"{members:,} ({members / active:.1%} of the active)"
    for reason in EXCLUSION_REASONS:
        out[f"left out: {reason}"] = f"{int(counts[_excluded_column(reason)].sum()):,}"
    out["positives"] = (
        f"{positives:,} ({positives / members:.2%} of the population)" if members else "0"
    )
    share = (counts["members"] / counts["active"]).to_numpy()
    days = counts["snapshot"].to_numpy()
    low, high = int(share.argmin()), int(share.argmax())
    out["daily share in the population"] = (
        f"{share[low]:.1%} ({days[low]}) … {share[high]:.1%} ({days[high]})"
    )
    return out


def training_frame(
    store: FeatureStore, entity_df: pd.DataFrame, service: str, *, entity: str
) -> pd.DataFrame:
    """The entity rows with their point-in-time features through a feature service.

    ``entity_df`` holds the entity column (the join key of the service's Feast entity) and
    ``event_timestamp``. Keeps the input's rows and order, adding the service's features (null
    where no feature row lies within the views' TTL). Raises :class:`TrainingSetError` when the
    offline store returns a different number of rows, or when a row's ``features_asof`` is
    later than its ``event_timestamp`` (a feature from the future).
    """
    for col in (entity, "event_timestamp"):
        if col not in entity_df.columns:
            raise TrainingSetError(f"entity frame has no {col!r} column")
    if ROW_ID in entity_df.columns:
        raise TrainingSetError(f"entity frame must not have a {ROW_ID!r} column")
    entities = entity_df.reset_index(drop=True).copy()
    entities["event_timestamp"] = pd.to_datetime(entities["event_timestamp"], utc=True)
    entities[ROW_ID] = np.arange(len(entities), dtype=np.int64)

    from tasks.feature_store import join_context, quiet_offline_reads, service_join

    feature_service = store.get_feature_service(service)
    join = service_join(store, feature_service, entity)
    with quiet_offline_reads():
        result = _historical(store, entities, feature_service, join, join_context)

    if len(result) != len(entities) or set(result[ROW_ID]) != set(entities[ROW_ID]):
        raise TrainingSetError(
            f"the offline store returned {len(result)} rows for {len(entities)} entity rows "
            f"of feature service {service!r}: rows were dropped or duplicated"
        )
    result = result.sort_values(ROW_ID, ignore_index=True).drop(columns=[ROW_ID])
    served = [f.name for p in feature_service.feature_view_projections for f in p.features]
    result = result[[c for c in result.columns if c not in served] + served]
    result["event_timestamp"] = pd.to_datetime(result["event_timestamp"], utc=True).astype(
        "datetime64[ns, UTC]"
    )
    if "features_asof" in result.columns:
        asof = pd.to_datetime(result["features_asof"], utc=True).astype("datetime64[ns, UTC]")
        leaked = asof.notna() & (asof > result["event_timestamp"])
        if leaked.any():
            first = result.loc[leaked].iloc[0]
            raise TrainingSetError(
                f"{int(leaked.sum())} rows got features from after their event_timestamp "
                f"(e.g. {first[entity]} at {first['event_timestamp']}: features_asof "
                f"{asof[leaked].iloc[0]}); the feature table's timestamps are wrong"
            )
        result["features_asof"] = asof
    return result


def time_split(
    df: pd.DataFrame, *, holdout_days: int, validation_days: int
) -> dict[str, pd.DataFrame]:
    """Split by snapshot day: the newest ``holdout_days`` snapshot days are the holdout, the
    ``validation_days`` before them the validation set, the rest the training set."""
    if holdout_days < 1 or validation_days < 0:
        raise ValueError("holdout_days must be >= 1 and validation_days >= 0")
    day = pd.to_datetime(df["event_timestamp"], utc=True).dt.normalize()
    snapshot_days = np.sort(day.unique())
    needed = holdout_days + validation_days + 1
    if len(snapshot_days) < needed:
        raise TrainingSetError(
            f"{len(snapshot_days)} snapshot days cannot fill {holdout_days} holdout + "
            f"{validation_days} validation days and leave any for training (need {needed})"
        )
    holdout_from = snapshot_days[-holdout_days]
    validation_from = snapshot_days[-(holdout_days + validation_days)]
    parts = {
        "train": df.loc[day < validation_from],
        "validation": df.loc[(day >= validation_from) & (day < holdout_from)],
        "holdout": df.loc[day >= holdout_from],
    }
    return {name: part.reset_index(drop=True) for name, part in parts.items()}


class InsufficientEvidence(TrainingSetError):
    """A split cannot hold the rows and positives its decision needs (see :func:`evidence_split`)."""

    def __init__(self, split: str, message: str) -> None:
        super().__init__(message)
        self.split = split


@dataclass(frozen=True)
class EvidenceRule:
    """How much each split must hold: at least the days, and at least the rows and positives
    (the splits reach further back, day by day, until they do)."""

    holdout_days: int
    validation_days: int
    min_holdout_rows: int = 0
    min_holdout_positives: int = 0
    min_validation_positives: int = 0
    min_train_rows: int = 0
    min_train_positives: int = 0

    @classmethod
    def of(cls, model: Any) -> EvidenceRule:
        """The rule of a use case's :class:`~driftloop_config.usecase.ModelSpec`."""
        return cls(
            holdout_days=model.holdout_days,
            validation_days=model.validation_days,
            min_holdout_rows=model.min_holdout_rows,
            min_holdout_positives=model.min_holdout_positives,
            min_validation_positives=model.min_validation_positives,
            min_train_rows=model.min_train_rows,
            min_train_positives=model.min_train_positives,
        )


def _held(rows: int, positives: int) -> str:
    return f"{rows:,} rows / {positives:,} positives"


def evidence_split(df: pd.DataFrame, rule: EvidenceRule, *, label: str) -> dict[str, pd.DataFrame]:
    """Split by snapshot day, newest first, counting evidence in rows and positives.

    The holdout is the newest ``holdout_days`` snapshot days, extended further back one day at a
    time until it holds ``min_holdout_rows`` rows and ``min_holdout_positives`` positives; the
    validation set is the ``validation_days`` days before it, extended until it holds
    ``min_validation_positives`` positives; the rest is the training set, which must hold
    ``min_train_rows`` rows and ``min_train_positives`` positives. Each split stops as soon as it
    holds enough, so the training set keeps every day the others do not need.

    Raises :class:`InsufficientEvidence` (saying what the split holds and what it needs) when a
    split cannot be filled while leaving the later splits their minimum days.
    """
    if rule.holdout_days < 1 or rule.validation_days < 0:
        raise ValueError("holdout_days must be >= 1 and validation_days >= 0")
    day = pd.to_datetime(df["event_timestamp"], utc=True).dt.normalize()
    per_day = (
        pd.DataFrame({"day": day, "y": (df[label] > 0).astype(np.int64)})
        .groupby("day", sort=True)["y"]
        .agg(["size", "sum"])
    )
    days = list(per_day.index)
    n = len(days)
    rows = per_day["size"].to_numpy()[::-1]  # newest first
    positives = per_day["sum"].to_numpy()[::-1]
    needed = rule.holdout_days + rule.validation_days + 1
    if n < needed:
        raise InsufficientEvidence(
            "days",
            f"insufficient evidence: {n} snapshot days cannot fill {rule.holdout_days} holdout + "
            f"{rule.validation_days} validation days and leave any for training (need {needed})",
        )

    def take(start: int, at_least: int, most: int, min_rows: int, min_pos: int) -> int:
        k = at_least
        while k < most and (
            rows[start : start + k].sum() < min_rows or positives[start : start + k].sum() < min_pos
        ):
            k += 1
        return k

    h = take(
        0,
        rule.holdout_days,
        n - rule.validation_days - 1,
        rule.min_holdout_rows,
        rule.min_holdout_positives,
    )
    h_rows, h_pos = int(rows[:h].sum()), int(positives[:h].sum())
    if h_rows < rule.min_holdout_rows or h_pos < rule.min_holdout_positives:
        raise InsufficientEvidence(
            "holdout",
            f"insufficient evidence: the holdout holds {_held(h_rows, h_pos)} over the newest {h} "
            f"of {n} snapshot days, needs >= {rule.min_holdout_rows:,} rows and >= "
            f"{rule.min_holdout_positives:,} positives",
        )
    v = take(h, rule.validation_days, n - h - 1, 0, rule.min_validation_positives)
    v_rows, v_pos = int(rows[h : h + v].sum()), int(positives[h : h + v].sum())
    if v_pos < rule.min_validation_positives:
        raise InsufficientEvidence(
            "validation",
            f"insufficient evidence: the validation split holds {_held(v_rows, v_pos)} over {v} "
            f"snapshot days before the {h}-day holdout, needs >= "
            f"{rule.min_validation_positives:,} positives",
        )
    t_rows, t_pos = int(rows[h + v :].sum()), int(positives[h + v :].sum())
    if t_rows < rule.min_train_rows or t_pos < rule.min_train_positives:
        raise InsufficientEvidence(
            "train",
            f"insufficient evidence: the training split holds {_held(t_rows, t_pos)} over "
            f"{n - h - v} snapshot days (after a {h}-day holdout and {v} validation days), needs "
            f">= {rule.min_train_rows:,} rows and >= {rule.min_train_positives:,} positives",
        )
    holdout_from = days[n - h]
    validation_from = days[n - h - v] if v else holdout_from
    parts = {
        "train": df.loc[day < validation_from],
        "validation": df.loc[(day >= validation_from) & (day < holdout_from)],
        "holdout": df.loc[day >= holdout_from],
    }
    return {name: part.reset_index(drop=True) for name, part in parts.items()}


def _historical(
    store: FeatureStore, entities: pd.DataFrame, service: Any, join: Any, join_context: Any
) -> pd.DataFrame:
    """Feast's point-in-time join of ``entities`` through ``service`` (a FeatureService): one
    retrieval when every view is keyed by the entity, else the entity's views first and each
    context's views with the key they served."""
    if join.single:
        job = store.get_historical_features(entity_df=entities, features=service)
        result: pd.DataFrame = job.to_df()
        return result
    result = store.get_historical_features(entity_df=entities, features=join.steps[0][1]).to_df()
    for key, refs in join.steps[1:]:

        def lookup(known: pd.DataFrame, refs: list[str] = refs) -> pd.DataFrame:
            return store.get_historical_features(entity_df=known, features=refs).to_df()

        result = join_context(result, key, refs, lookup, ROW_ID)
    return result
