"""``make demo``: the closed loop, day by day, on a simulated telco whose reality changes.

The simulator writes the telco's files into a feed; the history days are backfilled and the
live days replayed (:mod:`driftloop.replay`): each day's files land and the real flows run,
ingest → features → (train + gate when the retraining policy says so) → score → drift, and the
runs that events start (``driftloop.training.due``, ``driftloop.drift.detected``) are started
with the parameters prefect.yaml's triggers render for them. A drift-started run records the
change and waits for labels after it; the policy's later ``training.due`` trains on data since
the change. What is demo-specific is here: the simulated world, the AUC of the champion and of
the first champion on each day's newly complete labels, and the check of the injected defects
against the quarantine. The demo prints one line per day and writes
``reports/index.html`` and ``reports/demo-summary.json``.

Uses its own lake (``data/demo`` unless ``DRIFTLOOP_DATA_ROOT`` is set), recreated on every run.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import date, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from driftloop_config.settings import PROJECT_ROOT

if TYPE_CHECKING:
    from tasks.storage import Lake

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
    play_days: int | None = None,
) -> dict[str, Any]:
    """Simulate the telco's files into a feed, backfill the history days, replay the live days
    (:mod:`driftloop.replay`: the decisions the deployments take) and follow the champion's
    AUC, and the first champion's, on each day's newly complete labels.

    ``play_days`` plays only the first live days. A later run on the same lake (same seed, days
    and history) plays on from there: the days already played are read back, not played again,
    and its summary covers every live day as an uninterrupted run's does."""
    from driftloop_config.settings import export_artifact_endpoint, load_settings, quiet_telemetry
    from driftloop_config.usecase import load_usecase

    if play_days is not None and not 1 <= play_days <= days:
        raise ValueError(f"play_days must be between 1 and days ({days}), got {play_days}")
    quiet_telemetry()
    # the flows run in this process against a temporary Prefect server of its own (the demo's
    # lake is recreated on every run); on a busy machine it can take more than the default
    # 20 s to answer
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    # the replay reads each training.due / drift.detected back from the API: written sooner;
    # task runs recorded in batches
    from driftloop.stack import tune_temporary_server

    tune_temporary_server()
    if "DRIFTLOOP_DATA_ROOT" not in os.environ:
        shutil.rmtree(DEMO_ROOT, ignore_errors=True)
        os.environ["DRIFTLOOP_DATA_ROOT"] = str(DEMO_ROOT)
    settings = load_settings()
    export_artifact_endpoint(settings)
    usecase = load_usecase(settings.usecase)
    target = usecase.loop().target

    from rich.table import Table

    from driftloop.cli import console
    from driftloop.replay import DayOutcome, backfill, day_of_key, replay
    from driftloop.simulate import simulate
    from tasks import score
    from tasks.feature_store import feature_store
    from tasks.ingest import open_ledger
    from tasks.storage import Lake, read_parquet, write_json

    lake = Lake.from_settings(settings)
    feed = lake.root.child("_feed")  # the outside world: files appear in landing/ day by day
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
        label_delay_days=target.label_delay_days,
    )
    live_start = START + timedelta(days=history_days)
    last_day = live_start + timedelta(days=(days if play_days is None else play_days) - 1)
    filled = backfill(settings, usecase, feed, START, live_start - timedelta(days=1))
    console.print(f"history backfilled: {filled['ingest']}")

    daily: list[dict[str, Any]] = []
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
    first: list[str] = []  # the first champion, once there is one

    def on_day(o: DayOutcome) -> None:
        d = (o.day - live_start).days
        notes = [f"drift event: {', '.join(o.drift_drifted[:3])}"] if o.drift_detected else []
        for t in o.trainings:
            notes.append(
                f"v{t.version} {'promoted' if t.promoted else 'rejected'} ({t.reason})"
                if t.trained
                else f"train deferred: {t.deferred}"
            )
        if o.champion and not first:
            first.append(o.champion)
        store = feature_store(settings)
        auc = stale = None
        if o.champion is not None:
            ev = score.evaluate_snapshot(settings, usecase, lake, store, o.day, o.champion)
            auc = ev["auc"] if ev else None
            if first and first[0] != o.champion:
                old = score.evaluate_snapshot(settings, usecase, lake, store, o.day, first[0])
                stale = old["auc"] if old else None
            else:
                stale = auc
        row = {
            "day": d,
            "date": o.day.isoformat(),
            "champion_version": o.champion,
            "auc": auc,
            "stale_auc": stale,
            "drift_detected": o.drift_detected,
            "rows_validated": o.rows_validated,
            "rows_quarantined": o.rows_quarantined,
        }
        daily.append(row)
        note = "; ".join(notes)
        table.add_row(
            str(d),
            o.day.isoformat(),
            f"v{o.champion}" if o.champion else "-",
            f"{auc:.3f}" if auc is not None else "-",
            f"{stale:.3f}" if stale is not None else "-",
            "DRIFT" if o.drift_detected else "",
            str(o.rows_validated),
            str(o.rows_quarantined),
            note,
        )
        console.print(
            f"day {d:2d} {row['date']}  champion {o.champion or '-':>3}  auc "
            f"{auc if auc is None else round(auc, 3)}  {'DRIFT ' if o.drift_detected else ''}{note}",
            markup=False,
        )

    outcomes = replay(
        settings,
        usecase,
        feed,
        live_start,
        last_day,
        on_day=on_day,
        shadow_first_champion=True,
    )
    console.print(table)
    trainings = [
        {
            "day": (o.day - live_start).days,
            "version": t.version,
            "reason": t.reason,
            "promoted": t.promoted,
            "auc_delta_ci": t.delta_ci,
        }
        for o in outcomes
        for t in o.trained
    ]
    promotions = [
        {"day": t["day"], "version": t["version"], "auc_delta_ci": t["auc_delta_ci"]}
        for t in trainings
        if t["promoted"]
    ]
    alarm_days = [r["day"] for r in daily if r["drift_detected"]]
    drift_first = alarm_days[0] if alarm_days else None
    change = days if drift_day is None else drift_day
    horizon_end = target.horizon_days + target.label_delay_days - 1
    recovery = next((t["day"] for t in trainings if t["reason"] == "drift" and t["promoted"]), None)

    def snapshot_day(r: dict[str, Any]) -> int:
        return int(r["day"]) - horizon_end

    pre = [
        r["auc"]
        for r in daily
        if r["auc"] is not None and snapshot_day(r) + target.horizon_days <= change
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
        "promotions": promotions,
        "trainings": [{k: v for k, v in t.items() if k != "auc_delta_ci"} for t in trainings],
        "alarm_days": alarm_days,
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
    landed = [t for t in sim.truth if (day_of_key(t["object"]) or START) <= last_day]
    check = compare_with_truth(landed, records, quarantined)
    write_index(lake)
    console.print(
        f"defects injected {check['injected']}, caught {check['caught']}, missed {check['missed']}; "
        f"drift first detected on day {drift_first} (change on day {drift_day}); "
        f"promotions {[(p['day'], 'v' + str(p['version'])) for p in promotions]}",
        markup=False,
    )
    console.print(
        f"AUC before the change {summary['auc_pre_drift']}, after recovery {summary['auc_post_recovery']}, "
        f"stale champion after the change {summary['auc_stale_champion_post_drift']}; "
        f"{time.monotonic() - started:.0f} s"
    )
    console.print(f"reports: {settings.zone('reports')}/index.html")
    return summary | {"defects": check}


def write_index(lake: Lake) -> None:
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
    summary = run(days, customers, days // 2 if drift_day is None else drift_day, defect_rate, seed)
    if summary["defects"]["missed"] or not summary["promotions"]:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
