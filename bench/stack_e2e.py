"""P8: one landed day → challenger decided, end to end through a real local stack.

A simulated telco (``--customers`` rows a day) with a short-horizon use case: the history up to
the day before the first training is due is landed and ingested, and its features built, with
the plain task functions before the stack starts (so it announces nothing). Then the stack
(``driftloop up`` on free loopback ports, state in a temporary folder) is started and the due
day's files (usage: ``--customers`` rows, and labels) are written into the watched landing
folder. The clock runs from that write until the train run (started by the
``driftloop.training.due`` trigger of the features run) has finished: a challenger registered
in MLflow and the promotion gate's decision recorded on it. The path: watcher → landed events →
ingest runs → validated events → features run (build, Feast apply, materialise, policy) →
training.due → train run (point-in-time set, fit, register, gate). Each run's start and end are
read from the REST API for the breakdown. The stack is stopped by PID at the end, also on error.

    .venv/bin/python bench/stack_e2e.py [--customers 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchstack import FINAL, BenchStack, log, running_stack, ts, use_state

from tests.support.stack import SMALL_LOOP, START, due_day
from tests.support.usecases import usecase_with


def history(settings: Any, usecase: Any, customers: int, seed: int) -> tuple[Any, Any, int]:
    """Simulate, land and ingest the days before the due day; build their features.
    Returns (feed of simulated files, due day, history rows)."""
    from driftloop.simulate import simulate
    from tasks.drain import drain
    from tasks.features import build_features
    from tasks.ingest import Ledger
    from tasks.storage import Lake

    lake = Lake.from_settings(settings)
    due = due_day(usecase)
    feed = lake.root.child("_feed")
    t0 = time.perf_counter()
    simulate(
        feed,
        days=(due - START).days + 1,
        start=START,
        customers=customers,
        seed=seed,
        label_delay_days=usecase.target.label_delay_days,
    )
    t_sim = time.perf_counter() - t0
    t0 = time.perf_counter()
    keys = [i.key for i in feed.list() if i.key.rsplit("/", 1)[-1][:10] < due.isoformat()]
    for key in keys:
        lake.landing.write_bytes(key, feed.read_bytes(key))
    ledger = Ledger(lake.ledger)
    drained = drain(lake, ledger, usecase, max_bytes=settings.max_file_bytes)
    rows = sum(o.rows_total for o in drained.outcomes if o.dataset == "usage")
    build_features(lake, usecase)
    log(
        f"history: {customers:,} customers x {(due - START).days} days simulated in {t_sim:.1f}s, "
        f"{rows:,} usage rows ingested and featurised in {time.perf_counter() - t0:.1f}s; "
        f"training is due on {due}"
    )
    return feed, due, rows


def decided_version(settings: Any, name: str) -> dict[str, str] | None:
    """The newest registered version's tags once the gate has decided on it."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.tracking_uri)
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except Exception:  # no registered model yet
        return None
    for v in sorted(versions, key=lambda v: int(v.version), reverse=True):
        tags = dict(v.tags or {})
        if "driftloop.decision" in tags:
            return {"version": str(v.version), **tags}
    return None


def run_span(loop: BenchStack, deployment: str, landed: datetime) -> dict[str, Any]:
    runs = loop.runs(loop.deployment_id(deployment))
    if not runs:
        return {"runs": 0}
    starts = [ts(r["start_time"]) for r in runs if r["start_time"]]
    ends = [ts(r["end_time"]) for r in runs if r["end_time"]]
    ran = [r for r in runs if r["start_time"]] or runs  # not the next scheduled one
    first = min(ran, key=lambda r: ts(r["created"]))
    return {
        "runs": len(runs),
        "states": sorted({r["state_type"] for r in runs}),
        # the first run: created (its event's automation fired), and when it was due to start
        # (an automation dates it from its event, so before created; after created only when it
        # was rescheduled to wait for its deployment's concurrency slot)
        "first_created_s": round((ts(first["created"]) - landed).total_seconds(), 2),
        "first_expected_start_s": round(
            (ts(first["expected_start_time"]) - landed).total_seconds(), 2
        ),
        "first_start_s": round((min(starts) - landed).total_seconds(), 2) if starts else None,
        "last_end_s": round((max(ends) - landed).total_seconds(), 2) if ends else None,
        "run_s": [round(r["total_run_time"], 2) for r in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000, help="rows of the landed day")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=1500.0, help="seconds to wait")
    args = parser.parse_args()
    started = time.perf_counter()
    load_start = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="driftloop-bench-") as tmp:
        work = Path(tmp)
        settings = use_state(work, usecase_with(work, **SMALL_LOOP))
        from driftloop_config.usecase import load_usecase
        from tasks.storage import Lake

        usecase = load_usecase(settings.usecase)
        assert usecase.model is not None, f"use case {usecase.name!r} defines no model"
        name = usecase.model.registered_name
        feed, due, history_rows = history(settings, usecase, args.customers, args.seed)
        lake = Lake.from_settings(settings)
        with running_stack(settings) as loop:
            train_id = loop.deployment_id("train")
            keys = [i.key for i in feed.list() if due.isoformat() in i.key]
            landed = datetime.now(tz=UTC)
            t0 = time.perf_counter()
            for key in keys:
                lake.landing.write_bytes(key, feed.read_bytes(key))
            log(f"landed {keys} at {landed:%H:%M:%S}")

            def train_done() -> dict[str, Any] | None:
                runs = [r for r in loop.runs(train_id) if r["state_type"] in FINAL]
                return runs[0] if runs else None

            train = loop.wait_for("the train run", train_done, args.timeout, every=0.5)
            decided = loop.wait_for(
                "the gate's decision", lambda: decided_version(settings, name), 60, every=0.5
            )
            t_total = time.perf_counter() - t0
            spans = {d: run_span(loop, d, landed) for d in ("ingest", "features", "train")}
        log(
            f"landed → challenger v{decided['version']} decided in {t_total:.1f}s "
            f"(train run {train['state_type'].lower()}); "
            + "; ".join(
                f"{d}: {s['runs']} run(s), first start +{s['first_start_s']}s, "
                f"last end +{s['last_end_s']}s"
                for d, s in spans.items()
            )
        )

    decision = {
        "version": decided["version"],
        "decision": decided["driftloop.decision"],
        "auc": decided.get("driftloop.challenger_value"),
        "reason": decided.get("driftloop.reason", "")[:200],
    }
    result = {
        "customers": args.customers,
        "due_day": due.isoformat(),
        "history_rows": history_rows,
        "landed_keys": keys,
        "total_s": round(t_total, 2),
        "train_state": train["state_type"],
        "decision": decision,
        "spans": spans,
        "load_avg_start": load_start,
        "load_avg": os.getloadavg(),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
