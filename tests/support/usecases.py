"""Variants of the shipped use case for tests (shorter horizons, lower floors, ...), and where
the shipped use cases' Feast repositories are."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from driftloop_config.settings import PROJECT_ROOT


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


def feature_repo_of(usecase: Path) -> Path:
    """The Feast repository a shipped use case names in its heading comment
    (``examples/feature_repos/<name>``), else the project's ``feature_repo/``."""
    named = re.search(r"examples/feature_repos/(\w+)", usecase.read_text(encoding="utf-8"))
    return (
        PROJECT_ROOT / "examples" / "feature_repos" / named[1]
        if named
        else PROJECT_ROOT / "feature_repo"
    )
