"""Ingest + validate: landed objects → validated/ and quarantine/, exactly once per content."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from pydantic import BaseModel, ConfigDict, Field

from driftloop.settings import load_settings
from driftloop.usecase import load_usecase
from flows.runners import run_partitions
from tasks import ingest as stage
from tasks.storage import Lake, sweep_debris


class IngestParams(BaseModel):
    """What to ingest. The defaults ingest everything that landed and is not yet in the ledger."""

    model_config = ConfigDict(extra="forbid")

    objects: list[str] | None = Field(
        default=None,
        description="Only these landing keys (relative to landing/, e.g. 'usage/2026-01-05.csv'). "
        "Empty: every pending object.",
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
    pending = find_pending(lake.landing, ledger, keys=params.objects)
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
            }
            for obj in pending
        ],
    )
    results = [
        record_object(lake, ledger, usecase, obj, c)
        for obj, c in zip(pending, checked, strict=True)
    ]
    outcomes = [o for o in results if o is not None]  # None: same content seen under a new etag
    if outcomes:
        write_index(lake, ledger)
        create_table_artifact(
            key="ingest-summary",
            table=stage.summary_rows(outcomes),
            description=f"Ingest run: {stage.totals(outcomes)}",
        )
    for outcome in outcomes:
        emit_event(**stage.event_for(outcome, lake.landing.uri))
    return {"totals": stage.totals(outcomes), "objects": stage.summary_rows(outcomes)}
