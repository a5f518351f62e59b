"""Test-only pieces of the SaaS use case (``usecases/saas_retention.yaml``, builders and
generator in :mod:`examples.saas_retention`)."""

from __future__ import annotations

from datetime import date

import pandas as pd

from examples.saas_retention import saas_weekly_features


def saas_features_without_tier(activity: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """:func:`examples.saas_retention.saas_weekly_features` without the ``plan_tier`` column (a
    broken builder, for ``driftloop check``'s tests)."""
    return saas_weekly_features(activity, start, end).drop(columns="plan_tier")
