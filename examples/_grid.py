"""An entity × day grid for pure, vectorised feature builders with calendar windows.

Rows are placed on a grid of ``lookback - 1`` days before ``start`` up to ``end``; a window sum
over the ``width`` days ending on an output day adds the same cells in the same order whatever
``start`` and ``end`` are, so a day's features do not depend on the range it is built in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, timedelta

import numpy as np
import pandas as pd


def as_day(value: date | str) -> date:
    if isinstance(value, pd.Timestamp):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def naive_days(values: pd.Series) -> pd.Series:
    """A date-like column as naive midnight timestamps."""
    out = pd.to_datetime(values)
    if getattr(out.dt, "tz", None) is not None:
        out = out.dt.tz_convert(UTC).dt.tz_localize(None)
    return out.dt.normalize().astype("datetime64[ns]")


@dataclass(frozen=True)
class DayGrid:
    """Entities (sorted ids) × days ``first``..``end``; output days are ``start``..``end``."""

    ids: np.ndarray  # entity ids, sorted
    first: date  # the grid's first day: start - (lookback - 1)
    base: int  # grid column of ``start``
    n_out: int  # output days

    @property
    def n_days(self) -> int:
        return self.base + self.n_out

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.ids), self.n_days)

    @classmethod
    def of(cls, entities: pd.Series, start: date, end: date, lookback: int) -> DayGrid:
        ids = np.asarray(sorted(set(entities.astype(str))), dtype=object)
        return cls(
            ids=ids,
            first=start - timedelta(days=lookback - 1),
            base=lookback - 1,
            n_out=(end - start).days + 1,
        )

    def place(self, entities: pd.Series, days: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) of every input row; -1 for rows off the grid."""
        row = np.searchsorted(self.ids, entities.astype(str).to_numpy(dtype=object))
        row = np.where(row < len(self.ids), row, -1)
        known = row >= 0
        known[known] = self.ids[row[known]] == entities.astype(str).to_numpy(dtype=object)[known]
        offset = (naive_days(days) - pd.Timestamp(self.first)).dt.days.to_numpy()
        col = np.where((offset >= 0) & (offset < self.n_days), offset, -1)
        ok = known & (col >= 0)
        return np.where(ok, row, -1), np.where(ok, col, -1)

    def window(self, grid: np.ndarray, width: int) -> np.ndarray:
        """Sum over the ``width`` days ending on each output day (fixed summation order)."""
        total = grid[:, self.base : self.base + self.n_out].copy()
        for lag in range(1, width):
            total = total + grid[:, self.base - lag : self.base - lag + self.n_out]
        return total

    def out_day(self, columns: np.ndarray) -> pd.DatetimeIndex:
        """The calendar day of output columns (0 = ``start``)."""
        start = pd.Timestamp(self.first) + pd.Timedelta(days=self.base)
        return pd.DatetimeIndex(start + pd.to_timedelta(columns, unit="D"))


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den is 0 or the result is not finite."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    return np.where((den == 0) | ~np.isfinite(out), np.nan, out)


def known_at(days: pd.DatetimeIndex) -> pd.Series:
    """``event_timestamp`` / ``features_asof`` of feature days: the next midnight, UTC."""
    return pd.Series((days + pd.Timedelta(days=1)).tz_localize(UTC)).astype("datetime64[ns, UTC]")
