"""Fixtures of the task tests that several modules share: a toy churn problem and the model fit
on it (the model, its reference profile and its report are tested in separate modules)."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.model import fit
from tests.tasks.test_model import SCHEMA, make_frame


@pytest.fixture(scope="session")
def splits() -> dict[str, pd.DataFrame]:
    return {
        "train": make_frame(5000, 1),
        "validation": make_frame(1500, 2),
        "holdout": make_frame(2500, 3),
    }


@pytest.fixture(scope="session")
def model(splits: dict[str, pd.DataFrame]) -> object:
    """Read only: fit once for every module that uses it."""
    return fit(splits["train"], splits["validation"], SCHEMA, seed=0)
