"""``make demo``: run what driftloop has, end to end, on a fresh simulated telco.

Uses its own lake (``data/demo`` unless ``DRIFTLOOP_DATA_ROOT`` is set) so a demo never mixes
with real data; the local demo lake is recreated on every run.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import date
from typing import Annotated, Any

import typer
from rich.console import Console

from driftloop.settings import PROJECT_ROOT

console = Console()
DEMO_ROOT = PROJECT_ROOT / "data" / "demo"


def compare_with_truth(
    truth: list[dict[str, Any]], records: list[dict[str, Any]], quarantined: list[dict[str, Any]]
) -> dict[str, int]:
    """How many injected defects ended up rejected/quarantined (matched by object and row)."""
    rejected = {r["key"] for r in records if r["status"] == "rejected"}
    q_rows = {(q["_source_object"], int(q["_row"])) for q in quarantined}
    caught = missed = 0
    for t in truth:
        hit = t["object"] in rejected if "row" not in t else (t["object"], t["row"]) in q_rows
        caught += hit
        missed += not hit
    return {"injected": len(truth), "caught": caught, "missed": missed}


def run(days: int, customers: int, defect_rate: float, seed: int) -> dict[str, int]:
    """Simulate, then ingest; returns the truth comparison."""
    from driftloop.settings import load_settings, quiet_telemetry

    quiet_telemetry()
    if "DRIFTLOOP_DATA_ROOT" not in os.environ:
        shutil.rmtree(DEMO_ROOT, ignore_errors=True)
        os.environ["DRIFTLOOP_DATA_ROOT"] = str(DEMO_ROOT)
    settings = load_settings()

    from driftloop.cli import print_ingest_summary
    from flows.ingest import IngestParams, ingest_flow
    from tasks.ingest import open_ledger
    from tasks.simulate import simulate
    from tasks.storage import Lake, read_parquet

    lake = Lake.from_settings(settings)
    console.rule("1. simulate")
    result = simulate(
        lake.landing,
        days=days,
        start=date(2026, 1, 1),
        customers=customers,
        drift_day=days // 2,
        defect_rate=defect_rate,
        seed=seed,
    )
    console.print(
        f"{len(result.objects)} files, {result.rows_written:,} rows, "
        f"{len(result.truth)} injected defects, reality change on day {result.drift_day}"
    )
    console.rule("2. ingest + validate")
    summary = ingest_flow(IngestParams())
    print_ingest_summary(summary)

    records = open_ledger(lake.ledger).all_records()
    quarantined: list[dict[str, Any]] = []
    for info in lake.quarantine.list("rows"):
        rows = read_parquet(lake.quarantine, info.key)[["_source_object", "_row"]]
        quarantined += [{"_source_object": o, "_row": r} for o, r in rows.itertuples(index=False)]
    check = compare_with_truth(result.truth, records, quarantined)
    console.print(
        f"defects injected: {check['injected']}, caught: {check['caught']}, missed: {check['missed']}"
    )
    lake.reports.write_bytes(
        "demo-ingest.json", json.dumps(check | summary["totals"], indent=2).encode()
    )
    console.print(f"reports: {settings.zone('reports')}/validation/index.html")
    return check


def main(
    days: Annotated[int, typer.Option(min=2)] = 14,
    customers: Annotated[int, typer.Option(min=10)] = 2000,
    defect_rate: Annotated[float, typer.Option(min=0, max=0.5)] = 0.02,
    seed: int = 7,
) -> None:
    check = run(days, customers, defect_rate, seed)
    if check["missed"]:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
