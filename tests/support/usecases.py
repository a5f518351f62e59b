"""Variants of the shipped use case for tests (shorter horizons, lower floors, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from driftloop.settings import PROJECT_ROOT


def usecase_with(tmp: Path, **sections: dict[str, Any]) -> Path:
    """Write the telco use case with absolute suite paths and the given sections updated, e.g.
    ``usecase_with(tmp, model={"floor": 0.5}, target={"horizon_days": 3})``; returns its path."""
    raw = yaml.safe_load((PROJECT_ROOT / "usecases" / "telco_churn.yaml").read_text())
    for spec in raw["datasets"].values():
        spec["batch_suite"] = str(PROJECT_ROOT / spec["batch_suite"])
        spec["row_suite"] = str(PROJECT_ROOT / spec["row_suite"])
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    path = tmp / "usecase.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
