"""The point-in-time training set: labelled snapshots joined with the features known then.

A *snapshot* is taken at midnight UTC of a day ``s``. Its population is every entity (a
customer, in the telco use case) with a row of the feature source dataset on day ``s - 1`` and
no target event before ``s``; its label says whether the event (a churn) happens within
``horizon_days`` from ``s``. Features come from Feast's point-in-time join: the newest feature
row with ``event_timestamp <= s`` — the features of day ``s - 1`` at the latest.

Column names come from the use case (:meth:`SnapshotColumns.of`); the defaults are the telco
use case's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from feast import FeatureStore

    from driftloop.usecase import UseCase

ROW_ID = "__driftloop_row"


@dataclass(frozen=True)
class SnapshotColumns:
    """The columns :func:`entity_frame` reads and writes (by default the telco use case's)."""

    entity: str = "customer_id"  # the entity id, in the active rows, the labels and the output
    day: str = "date"  # the active rows' day
    event: str = "churn_date"  # the labels' day the event happened
    reported: str = "reported_date"  # the labels' day the event became known
    label: str = "churned"  # the output's 0/1 label

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
) -> pd.DataFrame:
    """Labelled snapshots ``[<entity>, event_timestamp, <label>]`` known at ``as_of``.

    With the default :class:`SnapshotColumns` (the telco use case's): ``active`` has one row
    per customer and day with usage (``customer_id``, ``date``); ``labels`` the churn events
    (``customer_id``, ``churn_date``, ``reported_date``). Snapshot days run every
    ``snapshot_every_days`` from ``first`` (default: the day after the first active day) up to
    the last day ``s`` with ``s + horizon_days - 1 + label_delay_days <= as_of``; only labels
    reported on or before ``as_of`` are used. A snapshot holds every customer active on
    ``s - 1`` who had no churn before ``s``; ``churned`` is 1 when a churn date falls in
    ``[s, s + horizon_days)``. ``event_timestamp`` is ``s`` at 00:00 UTC. Sorted by
    event_timestamp, then the entity. Pure.
    """
    if horizon_days < 1 or label_delay_days < 0 or snapshot_every_days < 1:
        raise ValueError("horizon_days >= 1, label_delay_days >= 0, snapshot_every_days >= 1")
    cols = columns
    empty = pd.DataFrame(
        {
            cols.entity: pd.Series(dtype="object"),
            "event_timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
            cols.label: pd.Series(dtype="int64"),
        }
    )
    if active.empty:
        return empty
    act = pd.DataFrame({"entity": active[cols.entity].astype(str), "snap": _days(active[cols.day])})
    act["snap"] = act["snap"] + pd.Timedelta(days=1)  # active on s - 1 → member of snapshot s
    act = act.drop_duplicates()

    start = pd.Timestamp(first) if first is not None else act["snap"].min()
    last = pd.Timestamp(
        last_snapshot_day(as_of, horizon_days=horizon_days, label_delay_days=label_delay_days)
    )
    offset = (act["snap"] - start).dt.days
    on_grid = (offset >= 0) & (offset % snapshot_every_days == 0) & (act["snap"] <= last)
    act = act.loc[on_grid].reset_index(drop=True)
    if act.empty:
        return empty

    known = labels.loc[_days(labels[cols.reported]) <= pd.Timestamp(_as_day(as_of))]
    churns = pd.DataFrame(
        {"entity": known[cols.entity].astype(str), "churn": _days(known[cols.event])}
    ).drop_duplicates()
    pairs = act.reset_index(names="row").merge(churns, on="entity", how="inner")
    horizon = pd.Timedelta(days=horizon_days)
    before = pairs.loc[pairs["churn"] < pairs["snap"], "row"].unique()
    within = pairs.loc[
        (pairs["churn"] >= pairs["snap"]) & (pairs["churn"] < pairs["snap"] + horizon), "row"
    ].unique()

    churned = np.zeros(len(act), dtype=np.int64)
    churned[within] = 1
    keep = np.ones(len(act), dtype=bool)
    keep[before] = False
    out = pd.DataFrame(
        {
            cols.entity: act["entity"].to_numpy(dtype=object)[keep],
            "event_timestamp": act["snap"].dt.tz_localize(UTC).to_numpy()[keep],
            cols.label: churned[keep],
        }
    )
    out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], utc=True)
    return out.sort_values(["event_timestamp", cols.entity], ignore_index=True)


def training_frame(
    store: FeatureStore, entity_df: pd.DataFrame, service: str, *, entity: str = "customer_id"
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

    feature_service = store.get_feature_service(service)
    job = store.get_historical_features(entity_df=entities, features=feature_service)
    result: pd.DataFrame = job.to_df()

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
