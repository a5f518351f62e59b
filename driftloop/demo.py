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

from driftloop.settings import PROJECT_ROOT

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


def run(days: int, customers: int, defect_rate: float, seed: int) -> dict[str, Any]:
    """Simulate → ingest → features → train + gate; returns what the demo checks."""
    from driftloop.settings import load_settings, quiet_telemetry
    from driftloop.usecase import load_usecase

    quiet_telemetry()
    if "DRIFTLOOP_DATA_ROOT" not in os.environ:
        shutil.rmtree(DEMO_ROOT, ignore_errors=True)
        os.environ["DRIFTLOOP_DATA_ROOT"] = str(DEMO_ROOT)
    settings = load_settings()
    usecase = load_usecase(settings.usecase)

    from driftloop.cli import console, print_ingest_summary, print_training_summary
    from flows.features import features_flow
    from flows.ingest import IngestParams, ingest_flow
    from flows.train import TrainParams, train_flow
    from tasks.ingest import open_ledger
    from tasks.simulate import simulate
    from tasks.storage import Lake, read_parquet

    lake = Lake.from_settings(settings)
    assert usecase.target is not None
    console.rule("1. simulate a telco")
    result = simulate(
        lake.landing,
        days=days,
        start=date(2026, 1, 1),
        customers=customers,
        defect_rate=defect_rate,
        seed=seed,
        label_delay_days=usecase.target.label_delay_days,
    )
    console.print(
        f"{len(result.objects)} files, {result.rows_written:,} rows, {len(result.truth)} injected defects"
    )

    console.rule("2. ingest + validate (Great Expectations)")
    summary = ingest_flow(IngestParams())
    print_ingest_summary(summary, only_problems=True)
    quarantined: list[dict[str, Any]] = []
    for info in lake.quarantine.list("rows"):
        rows = read_parquet(lake.quarantine, info.key)[["_source_object", "_row"]]
        quarantined += [{"_source_object": o, "_row": r} for o, r in rows.itertuples(index=False)]
    check = compare_with_truth(result.truth, open_ledger(lake.ledger).all_records(), quarantined)
    console.print(
        f"defects injected: {check['injected']}, caught: {check['caught']}, missed: {check['missed']}"
    )

    console.rule("3. features (Feast: offline table, registry, online store)")
    console.print(features_flow()["totals"])

    console.rule("4. train a challenger + promotion gate (MLflow)")
    trained = train_flow(TrainParams(reason="manual"))
    print_training_summary(trained)

    reports = settings.zone("reports")
    console.print(f"reports: {reports}/validation/index.html")
    console.print(f"         {reports}/{trained['reports']['training']}")
    console.print(f"         {reports}/{trained['reports']['promotion']}")
    console.print(f"MLflow:  {settings.tracking_uri}")
    outcome = (
        check
        | summary["totals"]
        | {"champion": trained["version"] if trained["promoted"] else None}
    )
    lake.reports.write_bytes("demo-summary.json", json.dumps(outcome, indent=2).encode())
    return outcome


def main(
    days: Annotated[int, typer.Option(min=30, help="Days to simulate.")] = 40,
    customers: Annotated[int, typer.Option(min=100)] = 2000,
    defect_rate: Annotated[float, typer.Option(min=0, max=0.5)] = 0.02,
    seed: int = 7,
) -> None:
    outcome = run(days, customers, defect_rate, seed)
    if outcome["missed"] or outcome["champion"] is None:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
