"""Estimators a use case can name in ``model.estimator`` (``tests.support.estimators:<function>``).

Each follows the contract of :func:`tasks.model.build_estimator`: called with the keyword
arguments ``seed``, ``categorical`` and ``numeric``, it returns an unfitted classifier that
takes the model-input frame (categoricals as strings with NaN, numerics as floats with NaN).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from driftloop_config.settings import PROJECT_ROOT


def telco_usecase_file(folder: Path, estimator: object) -> Path:
    """The shipped telco use case with ``model.estimator`` set, written under ``folder``
    (load it with ``project_root=PROJECT_ROOT`` so that its suites resolve)."""
    raw = yaml.safe_load((PROJECT_ROOT / "usecases" / "telco_churn.yaml").read_text())
    raw["model"]["estimator"] = estimator
    path = folder / "usecases" / "telco_churn.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _one_hot() -> OneHotEncoder:
    # as the built-in pipeline: unseen categories score as "none of the known ones"
    return OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float64)


def logistic(*, seed: int, categorical: Sequence[str], numeric: Sequence[str]) -> Pipeline:
    """One-hot categoricals, imputed and standardised numerics, a logistic regression."""
    prep = ColumnTransformer(
        [
            ("cat", _one_hot(), list(categorical)),
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), list(numeric)),
        ],
        remainder="drop",
    )
    clf = LogisticRegression(max_iter=1000, class_weight="balanced", random_state=seed)
    return Pipeline([("prep", prep), ("clf", clf)])


def forest(*, seed: int, categorical: Sequence[str], numeric: Sequence[str]) -> Pipeline:
    """One-hot categoricals and raw numerics (NaN included) into a small random forest."""
    prep = ColumnTransformer(
        [("cat", _one_hot(), list(categorical)), ("num", "passthrough", list(numeric))],
        remainder="drop",
    )
    clf = RandomForestClassifier(n_estimators=20, min_samples_leaf=5, random_state=seed)
    return Pipeline([("prep", prep), ("clf", clf)])


def not_an_estimator(**_: Any) -> str:
    """A mistake: returns no estimator at all."""
    return "a string has no fit"


def wrong_arguments(seed: int) -> LogisticRegression:
    """A mistake: does not accept the keyword arguments the contract passes."""
    return LogisticRegression(random_state=seed)
