"""``make demo``: the closed loop, day by day, on a simulated telco whose reality changes.

Each simulated day, that day's files land and the real flows run: ingest → features → (train +
gate when the retraining policy says so) → score → drift. A drift check that finds drift emits
``driftloop.drift.detected``, and the features flow announces ``driftloop.training.due`` when the
retraining policy wants a model; the loop reads these events back from the Prefect API (an
in-process subscription to the same events the deployment triggers of prefect.yaml use) and
starts the train flow from them with the parameters those triggers render. A drift-started run
records the change and waits for labels after it; the policy's later ``training.due`` trains on
data since the change. The demo prints one line per day and writes
``reports/index.html`` and ``reports/demo-summary.json``.

Uses its own lake (``data/demo`` unless ``DRIFTLOOP_DATA_ROOT`` is set), recreated on every run.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import typer

from driftloop.settings import PROJECT_ROOT

DEMO_ROOT = PROJECT_ROOT / "data" / "demo"
START = date(2026, 1, 1)


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


def wait_for_events(name: str, after: datetime, timeout: float = 30.0) -> list[Any]:
    """Events called ``name`` the Prefect API received since ``after``, newest first."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventOrder

    flt = EventFilter(
        event=EventNameFilter(name=[name]),
        order=EventOrder.DESC,
        occurred=EventOccurredFilter(since=after),  # type: ignore[arg-type]
    )
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            flt.occurred.until = datetime.now(tz=UTC) + timedelta(minutes=1)  # type: ignore[assignment]
            events = client.read_events(filter=flt, limit=50).events
            if events or time.monotonic() > deadline:
                return list(events)
            time.sleep(0.5)


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(sum(vals) / len(vals), 4) if vals else None


def run(
    days: int,
    customers: int,
    drift_day: int | None,
    defect_rate: float,
    seed: int,
    history_days: int = 30,
) -> dict[str, Any]:
    from driftloop.settings import export_artifact_endpoint, load_settings, quiet_telemetry
    from driftloop.usecase import load_usecase

    quiet_telemetry()
    if "DRIFTLOOP_DATA_ROOT" not in os.environ:
        shutil.rmtree(DEMO_ROOT, ignore_errors=True)
        os.environ["DRIFTLOOP_DATA_ROOT"] = str(DEMO_ROOT)
    settings = load_settings()
    export_artifact_endpoint(settings)
    usecase = load_usecase(settings.usecase)
    assert usecase.target and usecase.model and usecase.features

    from rich.table import Table

    from driftloop.cli import console
    from flows.drift import DriftParams, drift_flow
    from flows.features import FeaturesParams, features_flow
    from flows.ingest import IngestParams, ingest_flow
    from flows.score import ScoreParams, score_flow
    from flows.train import TrainParams, train_flow
    from tasks import features, registry, score
    from tasks.drift import DETECTED_EVENT
    from tasks.ingest import open_ledger
    from tasks.policy import TRAINING_DUE_EVENT, read_state
    from tasks.simulate import simulate
    from tasks.storage import Lake, read_parquet, write_json

    lake = Lake.from_settings(settings)
    feed = lake.root.child("_feed")  # the outside world: files appear in landing/ day by day
    name = usecase.model.registered_name
    console.rule(
        f"a {customers:,}-customer telco: {history_days} days of history, then {days} live days "
        + (f"(reality changes on live day {drift_day})" if drift_day is not None else "(no change)")
    )
    sim = simulate(
        feed,
        days=history_days + days,
        start=START,
        customers=customers,
        drift_day=None if drift_day is None else history_days + drift_day,
        defect_rate=defect_rate,
        seed=seed,
        label_delay_days=usecase.target.label_delay_days,
    )
    live_start = START + timedelta(days=history_days)
    history = [k for k in sim.objects if k.rsplit("/", 1)[-1][:10] < live_start.isoformat()]
    for key in history:
        lake.landing.write_bytes(key, feed.read_bytes(key))
    backfill = ingest_flow(IngestParams(objects=history))["totals"]
    features_flow(FeaturesParams(materialize=False))
    console.print(f"history backfilled: {backfill}")

    first_champion: str | None = None
    daily: list[dict[str, Any]] = []
    promotions: list[dict[str, Any]] = []
    trainings: list[dict[str, Any]] = []  # every challenger trained: day, version, reason, promoted
    drift_first: int | None = None
    table = Table(title="the closed loop, day by day")
    for col in (
        "day",
        "date",
        "champion",
        "AUC (new labels)",
        "stale v1 AUC",
        "drift",
        "validated",
        "quarantined",
        "event",
    ):
        table.add_column(col, justify="left" if col in ("date", "event") else "right")
    started = time.monotonic()

    def trained(d: int, out: dict[str, Any]) -> str:
        """Record a train run's outcome; its note for the day's line."""
        if not out["trained"]:
            return f"train deferred: {out['reason']}"
        version, reason, promoted = out["version"], out["reason"], out["promoted"]
        trainings.append({"day": d, "version": version, "reason": reason, "promoted": promoted})
        if promoted:
            ci = out["decision"].get("delta_ci")
            promotions.append(
                {
                    "day": d,
                    "version": version,
                    "reason": reason,
                    "auc_delta_ci": [round(c, 4) for c in ci] if ci else None,
                }
            )
        return f"v{version} {'promoted' if promoted else 'rejected'} ({reason})"

    for d in range(days):
        day = live_start + timedelta(days=d)
        arrived = [k for k in sim.objects if day.isoformat() in k]
        for key in arrived:
            lake.landing.write_bytes(key, feed.read_bytes(key))
        ingested = ingest_flow(IngestParams(objects=arrived))["totals"]
        built_at = datetime.now(tz=UTC)
        built = features_flow(FeaturesParams(materialize=False))

        # the features flow asks the retraining policy and announces a due training as an
        # event; the train flow is started from that event (as the deployment trigger does)
        notes: list[str] = []
        if built.get("training", {}).get("due"):
            for event in wait_for_events(TRAINING_DUE_EVENT, built_at)[:1]:
                out = train_flow(
                    TrainParams(
                        as_of=date.fromisoformat(event.payload["as_of"]),
                        reason=event.payload["reason"],
                    )
                )
                notes.append(trained(d, out))
                if out["trained"] and out["promoted"]:
                    first_champion = first_champion or out["version"]

        champion = registry.champion_version(settings.tracking_uri, name)
        drifted = False
        if champion is not None:
            shadow = [first_champion] if first_champion and first_champion != champion else []
            score_flow(ScoreParams(day=day, shadow_versions=shadow))
            checked_at = datetime.now(tz=UTC)
            result = drift_flow(DriftParams(day=day))
            if result.get("detected"):
                # the drift event starts a training run (the train deployment's trigger); it
                # records the change and waits for labels after it before training
                for event in wait_for_events(DETECTED_EVENT, checked_at)[:1]:
                    drifted = True
                    pending = read_state(lake.ledger).drift_since
                    out = train_flow(
                        TrainParams(
                            as_of=day,
                            reason="drift",
                            drift_start=date.fromisoformat(event.payload["window"][0]),
                            signals=event.payload.get("signals"),
                            severity=event.payload.get("severity"),
                        )
                    )
                    if pending is None and read_state(lake.ledger).drift_since is not None:
                        drift_first = d if drift_first is None else drift_first
                        notes.append(f"drift event: {', '.join(event.payload['drifted'][:3])}")
                    notes.append(trained(d, out))
        note = "; ".join(notes)

        store = features.feature_store(settings)
        auc = stale = None
        if champion is not None:
            ev = score.evaluate_snapshot(settings, usecase, lake, store, day, champion)
            auc = ev["auc"] if ev else None
            if first_champion and first_champion != champion:
                ev_stale = score.evaluate_snapshot(
                    settings, usecase, lake, store, day, first_champion
                )
                stale = ev_stale["auc"] if ev_stale else None
            elif ev:
                stale = auc
        row = {
            "day": d,
            "date": day.isoformat(),
            "champion_version": champion,
            "auc": auc,
            "stale_auc": stale,
            "drift_detected": drifted,
            "rows_validated": ingested["rows_validated"],
            "rows_quarantined": ingested["rows_quarantined"],
        }
        daily.append(row)
        table.add_row(
            str(d),
            row["date"],
            f"v{champion}" if champion else "-",
            f"{auc:.3f}" if auc is not None else "-",
            f"{stale:.3f}" if stale is not None else "-",
            "DRIFT" if drifted else "",
            str(row["rows_validated"]),
            str(row["rows_quarantined"]),
            note,
        )
        console.print(
            f"day {d:2d} {row['date']}  champion {champion or '-':>3}  auc {auc if auc is None else round(auc, 3)}"
            f"  {'DRIFT ' if drifted else ''}{note}"
        )

    console.print(table)
    change = days if drift_day is None else drift_day
    horizon_end = usecase.target.horizon_days + usecase.target.label_delay_days - 1
    recovery = next((p["day"] for p in promotions if p["reason"] == "drift"), None)

    def snapshot_day(r: dict[str, Any]) -> int:
        return int(r["day"]) - horizon_end

    pre = [
        r["auc"]
        for r in daily
        if r["auc"] is not None and snapshot_day(r) + usecase.target.horizon_days <= change
    ]
    post = [
        r["auc"]
        for r in daily
        if recovery is not None and r["day"] > recovery and snapshot_day(r) >= change
    ]
    stale_post = [r["stale_auc"] for r in daily if snapshot_day(r) >= change]
    summary = {
        "days": days,
        "drift_day": drift_day,
        "drift_detected_first_day": drift_first,
        "daily": [{k: v for k, v in r.items() if k != "stale_auc"} for r in daily],
        "promotions": [
            {"day": p["day"], "version": p["version"], "auc_delta_ci": p["auc_delta_ci"]}
            for p in promotions
        ],
        "trainings": trainings,
        "alarm_days": [r["day"] for r in daily if r["drift_detected"]],
        "auc_pre_drift": _mean(pre),
        "auc_post_recovery": _mean(post),
        "auc_stale_champion_post_drift": _mean(stale_post),
    }
    write_json(lake.reports, "demo-summary.json", summary)

    records = open_ledger(lake.ledger).all_records()
    quarantined: list[dict[str, Any]] = []
    for info in lake.quarantine.list("rows"):
        rows = read_parquet(lake.quarantine, info.key)[["_source_object", "_row"]]
        quarantined += [{"_source_object": o, "_row": r} for o, r in rows.itertuples(index=False)]
    check = compare_with_truth(sim.truth, records, quarantined)
    write_index(lake)
    console.print(
        f"defects injected {check['injected']}, caught {check['caught']}, missed {check['missed']}; "
        f"drift first detected on day {drift_first} (change on day {drift_day}); "
        f"promotions {[(p['day'], 'v' + p['version']) for p in promotions]}"
    )
    console.print(
        f"AUC before the change {summary['auc_pre_drift']}, after recovery {summary['auc_post_recovery']}, "
        f"stale champion after the change {summary['auc_stale_champion_post_drift']}; "
        f"{time.monotonic() - started:.0f} s"
    )
    console.print(f"reports: {settings.zone('reports')}/index.html")
    return summary | {"defects": check}


def write_index(lake: Any) -> None:
    """``reports/index.html``: links to every report the run wrote."""
    from tasks.report import page, table

    rows = [
        {"report": f'<a href="{info.key}">{info.key}</a>', "kind": info.key.split("/", 1)[0]}
        for info in lake.reports.list()
        if info.key.endswith(".html") and info.key != "index.html"
    ]
    html = page("driftloop — reports", table(rows, raw_html=("report",)), f"{len(rows)} reports")
    lake.reports.write_bytes("index.html", html.encode("utf-8"))


def main(
    days: Annotated[int, typer.Option(min=30, help="Days to simulate.")] = 60,
    customers: Annotated[int, typer.Option(min=100)] = 2000,
    drift_day: Annotated[
        int | None, typer.Option(help="Day of the reality change (default: half-way).")
    ] = None,
    defect_rate: Annotated[float, typer.Option(min=0, max=0.5)] = 0.01,
    seed: int = 7,
) -> None:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    # the flows run in this process: no heartbeat thread, which each run would wait for at its
    # end (heartbeats find crashed runs of deployed workers; `driftloop up` sets them there)
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        summary = run(
            days, customers, days // 2 if drift_day is None else drift_day, defect_rate, seed
        )
    if summary["defects"]["missed"] or not summary["promotions"]:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
