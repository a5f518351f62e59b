"""Small builders of landed files for tests."""

from __future__ import annotations

import io

import pandas as pd

# the plans usage_rows cycles through: driftloop.simulate.PLANS without flex5g, the plan that
# appears only after the simulated drift (the columns: driftloop.simulate.USAGE_COLUMNS)
PLANS = ["basic", "standard", "premium", "unlimited"]


def usage_rows(n: int, day: str = "2026-01-01", start: int = 0) -> pd.DataFrame:
    """``n`` valid usage rows for one day."""
    return pd.DataFrame(
        {
            "customer_id": [f"C{start + i:07d}" for i in range(n)],
            "date": [day] * n,
            "plan": [PLANS[i % len(PLANS)] for i in range(n)],
            "contract": ["month_to_month"] * n,
            "tenure_months": [12] * n,
            "region": ["north"] * n,
            "payment_method": ["card"] * n,
            "monthly_charge": [45.5] * n,
            "minutes": [30.0 + i for i in range(n)],
            "data_gb": [1.25] * n,
            "dropped_calls": [0] * n,
            "support_tickets": [0] * n,
            "bill_amount": [1.52] * n,
        }
    )


def to_csv(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode("utf-8")


def to_parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()
