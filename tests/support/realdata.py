"""The loop on real public data: setting up a lake for a use case of ``usecases/`` with its Feast
repository in ``examples/feature_repos/``, replaying a feed through it, and reading back what
the loop did (quarantine, registry) for the tests in ``tests/realdata/`` and
``bench/loop_quality.py``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from driftloop.replay import DayOutcome, backfill, replay
from driftloop_config.settings import PROJECT_ROOT, Settings, load_settings
from driftloop_config.usecase import UseCase, load_usecase
from tasks.storage import Lake, LocalStorage, Storage, read_parquet

USECASES = PROJECT_ROOT / "usecases"
FEATURE_REPOS = PROJECT_ROOT / "examples" / "feature_repos"


@contextmanager
def environment(
    name: str, root: Path, *, usecase: Path | None = None, feature_repo: Path | None = None
) -> Iterator[tuple[Settings, UseCase]]:
    """The ``DRIFTLOOP_*`` environment of use case ``name`` (``usecases/<name>.yaml``, Feast
    repository ``examples/feature_repos/<name>``, unless given) with a fresh lake under
    ``root``; restored afterwards."""
    wanted = {
        "DRIFTLOOP_DATA_ROOT": str(root / "lake"),
        "DRIFTLOOP_USECASE": str(usecase or USECASES / f"{name}.yaml"),
        "DRIFTLOOP_FEATURE_REPO": str(feature_repo or FEATURE_REPOS / name),
    }
    before = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        settings = load_settings()
        yield settings, load_usecase(settings.usecase)
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass(frozen=True)
class Loop:
    """A replayed loop: its lake, the history backfilled and the live days' outcomes."""

    settings: Settings
    usecase: UseCase
    feed: Storage
    backfilled: dict[str, Any]
    outcomes: list[DayOutcome]
    seconds: float

    @property
    def lake(self) -> Lake:
        return Lake.from_settings(self.settings)

    def print_days(self, name: str) -> None:
        """One line per live day (shown with ``pytest -s`` or on a failure)."""
        print(f"{name} loop: {self.seconds:.0f} s, backfill {self.backfilled}")
        for o in self.outcomes:
            print(
                o.day,
                f"{o.seconds:5.1f}s",
                o.rows_validated,
                o.rows_quarantined,
                f"v{o.champion}",
                o.drift_status,
                o.drift_severity,
                [(t.trigger, t.version, t.promoted, t.deferred) for t in o.trainings],
            )


def run_loop(
    settings: Settings,
    usecase: UseCase,
    feed_root: Path,
    *,
    history: tuple[date, date],
    live: tuple[date, date],
    on_day: Callable[[DayOutcome], None] | None = None,
    keep_history: Path | None = None,
) -> Loop:
    """Backfill the history days, then replay the live days of the feed in ``feed_root``;
    with ``keep_history``, a copy of the lake as backfilled is kept there (a file lake), for a
    second replay of the same days."""
    import time

    feed = LocalStorage(feed_root)
    started = time.monotonic()
    filled = backfill(settings, usecase, feed, *history)
    if keep_history is not None:
        from tests.support.replaying import copy_lake

        copy_lake(settings.local_root, keep_history)
    outcomes = replay(settings, usecase, feed, *live, on_day=on_day)
    return Loop(settings, usecase, feed, filled, outcomes, time.monotonic() - started)


def quarantined_by_object(lake: Lake) -> dict[str, int]:
    """Rows in quarantine per landing key."""
    counts: dict[str, int] = {}
    for info in lake.quarantine.list("rows"):
        rows = read_parquet(lake.quarantine, info.key)
        for key, n in rows["_source_object"].value_counts().items():
            counts[str(key)] = counts.get(str(key), 0) + int(n)
    return counts


def rejected_objects(lake: Lake) -> list[str]:
    """Landing keys rejected whole (kept in quarantine/files/ with a reason)."""
    prefix = "files/"
    return sorted(
        i.key[len(prefix) :]
        for i in lake.quarantine.list(prefix)
        if not i.key.endswith(".reason.json")
    )


def trained_versions(settings: Settings, name: str) -> list[dict[str, Any]]:
    """Every registered version with what it was trained on: ``as_of``, ``since``, and the
    training split's rows and positives as logged (``train_n``, ``train_positives``)."""
    from tasks import registry

    client = registry.client_for(settings.tracking_uri)
    out = []
    for version in registry.versions(settings.tracking_uri, name):
        run = client.get_run(str(version.run_id))
        metrics, params = run.data.metrics, run.data.params
        out.append(
            {
                "version": str(version.version),
                "as_of": params.get("as_of"),
                "since": params.get("since"),
                "train_n": metrics.get("train_n"),
                "train_positives": metrics.get("train_positives"),
                "holdout_positives": metrics.get("holdout_positives"),
                "holdout_roc_auc": metrics.get("holdout_roc_auc"),
                "rows_train": version.tags.get("driftloop.rows_train"),
            }
        )
    return out
