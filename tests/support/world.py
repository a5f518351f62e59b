"""A small simulated world run through the real flows: a lake, its features and online store.

Use under the ``prefect_harness`` fixture (the flows need a Prefect API)::

    @pytest.fixture(scope="module")
    def world(tmp_path_factory, prefect_harness):
        with simulated_world(tmp_path_factory.mktemp("w"), model={"floor": 0.5}) as s:
            yield s
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from driftloop.simulate import simulate
from driftloop_config.settings import Settings, load_settings
from tasks.storage import Lake
from tests.support.usecases import usecase_with


@contextmanager
def simulated_world(
    tmp: Path,
    *,
    customers: int = 600,
    days: int = 34,
    label_delay_days: int = 7,
    seed: int = 5,
    start: date = date(2026, 1, 1),
    **sections: dict[str, Any],
) -> Iterator[Settings]:
    """Point the ``DRIFTLOOP_*`` environment at a fresh lake under ``tmp`` and a use case with
    ``sections`` updated (see :func:`tests.support.usecases.usecase_with`), simulate a telco, run
    the ingest and features flows, and yield the settings; the environment is restored after."""
    from flows.features import features_flow
    from flows.ingest import ingest_flow

    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("DRIFTLOOP_DATA_ROOT", str(tmp / "lake"))
        mp.setenv("DRIFTLOOP_USECASE", str(usecase_with(tmp, **sections)))
        settings = load_settings()
        simulate(
            Lake.from_settings(settings).landing,
            days=days,
            start=start,
            customers=customers,
            label_delay_days=label_delay_days,
            seed=seed,
        )
        ingest_flow()
        features_flow()
        yield settings
    finally:
        mp.undo()
