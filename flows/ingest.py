"""Ingest + validate: landed objects → validated/ and quarantine/, exactly once per content.

One run takes everything pending and keeps going until nothing new is pending (objects that
land while it works are taken in the same run), so a burst of arrivals is one run. It announces
each object (``driftloop.data.validated`` / ``driftloop.data.rejected``) and, when it validated
rows, the run as a whole (``driftloop.data.batch-validated``: one features run per ingest run).
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field

from driftloop_config.settings import load_settings
from driftloop_config.usecase import load_usecase
from flows.runners import run_partitions
from tasks import ingest as stage
from tasks import reconcile
from tasks.storage import Lake, sweep_debris


class IngestParams(BaseModel):
    """What to ingest. The defaults ingest everything that landed and is not yet in the ledger,
    including what lands while the run works."""

    model_config = ConfigDict(extra="forbid")

    objects: list[str] | None = Field(
        default=None,
        description="Only these landing keys (relative to landing/, e.g. 'usage/2026-01-05.csv'). "
        "Empty: every pending object.",
    )
    settle_seconds: float = Field(
        default=0.0,
        ge=0.0,
        le=3600.0,
        description="Take an object only once it has not changed for this long (a file still "
        "being copied in is not half-read); the run waits for such objects. 0: take everything "
        "pending now.",
    )
    today: date | None = Field(
        default=None,
        description="The day the datasets' date windows count from (a row dated more than "
        "date_window.max_days_after_today after it is implausible). Empty: today (UTC). A "
        "replay sets the day it plays, so that history is judged as on the day it landed.",
    )
    trigger: str | None = Field(
        default=None,
        max_length=1024,
        description="What started this run (the landed objects, set by their event); recorded "
        "on the run, it does not narrow the ingest.",
    )


open_ledger = task(name="open-ledger", cache_policy=NO_CACHE, retries=2)(stage.open_ledger)
find_pending = task(name="find-pending", cache_policy=NO_CACHE, retries=2)(stage.find_pending)
# pure per-object work: runs on the settings' task runner (threads or Dask workers)
check_object = task(
    name="check-object", cache_policy=NO_CACHE, retries=1, task_run_name="validate {obj.key}"
)(stage.check_object)
# writes outputs and the ledger record: in the flow's process only (single writer)
record_object = task(
    name="record-object", cache_policy=NO_CACHE, retries=1, task_run_name="record {obj.key}"
)(stage.record_object)
write_index = task(name="write-index", cache_policy=NO_CACHE)(stage.write_index_report)
# temporary files of writers killed mid-write (their PID is gone): removed before new work
sweep = task(name="sweep-debris", cache_policy=NO_CACHE)(sweep_debris)


@flow(
    name="ingest",
    description="Validate newly landed objects and split rows into validated/quarantine.",
)
def ingest_flow(params: IngestParams = IngestParams()) -> dict[str, Any]:
    settings = load_settings()
    lake = Lake.from_settings(settings)
    usecase = load_usecase(settings.usecase)

    sweep(lake.root)
    ledger = open_ledger(lake.ledger)
    outcomes: list[stage.IngestOutcome] = []
    attempted: set[tuple[str, str]] = set()
    rounds = 0
    waited = 0.0
    while True:  # drain: until nothing new is pending (tasks.reconcile.next_round decides)
        pending = find_pending(lake.landing, ledger, keys=params.objects)
        step = reconcile.next_round(
            pending,
            attempted,
            now=datetime.now(tz=UTC),
            settle_seconds=params.settle_seconds,
            waited_seconds=waited,
        )
        if step.stop:
            break
        if step.wait_seconds is not None:
            time.sleep(step.wait_seconds)
            waited += step.wait_seconds
            continue
        rounds += 1
        attempted |= {(o.key, o.etag) for o in step.take}
        checked = run_partitions(
            settings,
            check_object,
            [
                {
                    "lake": lake,
                    "usecase": usecase,
                    "obj": obj,
                    "max_bytes": settings.max_file_bytes,
                    "known": ledger.contents(obj.key),
                    "today": params.today,
                }
                for obj in step.take
            ],
        )
        results = [
            record_object(lake, ledger, usecase, obj, c)
            for obj, c in zip(step.take, checked, strict=True)
        ]
        # None: same content seen under a new etag
        done = [o for o in results if o is not None]
        for outcome in done:
            emit_event(**stage.event_for(outcome, lake.landing.uri))
        outcomes += done
    if outcomes:
        write_index(lake, ledger)
        create_table_artifact(
            key="ingest-summary",
            table=stage.summary_rows(outcomes),
            description=f"Ingest run: {stage.totals(outcomes)} in {rounds} rounds",
        )
    batch = reconcile.batch_validated_event(
        outcomes, lake.landing.uri, rounds=rounds, run=flow_run.get_name()
    )
    if batch is not None:
        emit_event(**batch)
    return {
        "totals": stage.totals(outcomes),
        "objects": stage.summary_rows(outcomes),
        "rounds": rounds,
    }
