"""Ingest + validate: landed objects → validated/ and quarantine/, exactly once per content.

One run takes everything pending and keeps going until nothing new is pending (objects that
land while it works are taken in the same run), so a burst of arrivals is one run. It announces
each object (``driftloop.data.validated`` / ``driftloop.data.rejected``) and, when it validated
rows, the run as a whole (``driftloop.data.batch-validated``: one features run per ingest run).
"""

from __future__ import annotations

from datetime import date
from functools import partial

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field

from flows.runners import run_partitions
from flows.shared import announce, sweep
from tasks import drain
from tasks import ingest as stage
from tasks.context import RunContext


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


@flow(
    name="ingest",
    description="Validate newly landed objects and split rows into validated/quarantine.",
)
def ingest_flow(params: IngestParams = IngestParams()) -> drain.IngestSummary:
    ctx = RunContext.load()
    sweep(ctx.lake.root)
    ledger = open_ledger(ctx.lake.ledger)
    drained = drain.drain(
        ctx.lake,
        ledger,
        ctx.usecase,
        max_bytes=ctx.settings.max_file_bytes,
        keys=params.objects,
        settle_seconds=params.settle_seconds,
        today=params.today,
        find=find_pending,
        check=partial(run_partitions, ctx.settings, check_object),
        record=record_object,
        announce=announce,
    )
    if drained.outcomes:
        write_index(ctx.lake, ledger)
        create_table_artifact(
            key="ingest-summary",
            table=stage.summary_rows(drained.outcomes),
            description=f"Ingest run: {stage.totals(drained.outcomes)} in {drained.rounds} rounds",
        )
    announce(
        [
            drain.batch_validated_event(
                drained.outcomes,
                ctx.lake.landing.uri,
                rounds=drained.rounds,
                run=flow_run.get_name(),
            )
        ]
    )
    return drained.summary()
