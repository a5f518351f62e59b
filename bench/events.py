"""P4: event emitted → flow run Running, on a real local stack (``driftloop up``).

The stack (Prefect server on SQLite, MLflow, one process worker per pool polling every second, flow runs forked by the warm-start server,
the landing watcher) is started on free loopback ports with its state in a temporary folder, and
prefect.yaml is deployed as shipped. The script then emits ``--events`` events with Prefect's own
client (``prefect.events.emit_event``), one at a time: ``driftloop.data.landed`` for a key that
is not in the landing zone, which the ``ingest`` deployment's trigger matches; the run it starts
finds nothing pending and finishes at once. Each event's key is rendered into the run's
parameters, so the run is told from the others by it.

Per event, from the server's REST API: event ``occurred`` → ``received`` by the server (the
client sent it) → the run created (the automation fired; state SCHEDULED) → PENDING (a worker
picked it up) → RUNNING (the run's ``start_time``: its process was forked or started and loaded
the flow). The next event is emitted once the run is over, so no
run waits for another. p50/p95 of each step are printed; the stack is stopped by PID at the end,
also on error.

    .venv/bin/python bench/events.py [--events 20] [--warmup 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchstack import FINAL, BenchStack, log, pct, running_stack, ts, use_state

from driftloop.stack import WORKER_QUERY_SECONDS

EVENT = "driftloop.data.landed"
DEPLOYMENT = "ingest"


def one_event(loop: BenchStack, deployment_id: str, i: int, timeout: float) -> dict[str, Any]:
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    key = f"bench/event-{i:03d}-{uuid.uuid4().hex[:8]}.csv"
    with temporary_settings({PREFECT_API_URL: loop.stack.api_url}):
        event = emit_event(
            event=EVENT,
            resource={
                "prefect.resource.id": f"driftloop.object.bench/{key}",
                "prefect.resource.name": key,
            },
            payload={"key": key},
        )
        EventsWorker.drain_all()
    if event is None:
        raise RuntimeError("emit_event sent nothing (no Prefect API configured?)")

    def started() -> dict[str, Any] | None:
        for run in loop.runs(deployment_id, limit=10):
            # the ingest trigger renders the landed object's name as the run's ``trigger``
            params = run["parameters"].get("params") or {}
            if params.get("trigger") == key and run["start_time"]:
                return run
        return None

    run = loop.wait_for(f"a run for {key}", started, timeout)
    loop.wait_for(
        f"run {run['id']} to finish",
        lambda: loop.http.get(f"/flow_runs/{run['id']}").json()["state_type"] in FINAL,
        timeout,
        every=0.25,
    )
    final = loop.http.get(f"/flow_runs/{run['id']}").json()
    states = loop.states(run["id"])
    occurred = event.occurred
    running = ts(final["start_time"])
    # when the server received the event: what is before it is the client sending it
    [stored] = loop.http.post(
        "/events/filter", json={"filter": {"id": {"id": [str(event.id)]}}, "limit": 1}
    ).json()["events"]
    return {
        "key": key,
        "state": final["state_type"],
        "to_received_s": (ts(stored["received"]) - occurred).total_seconds(),
        "to_created_s": (ts(final["created"]) - occurred).total_seconds(),
        "to_pending_s": (states["PENDING"] - occurred).total_seconds()
        if "PENDING" in states
        else None,
        "to_running_s": (running - occurred).total_seconds(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20, help="timed events")
    parser.add_argument("--warmup", type=int, default=2, help="untimed events first")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per event")
    args = parser.parse_args()
    started = time.perf_counter()
    load_start = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="driftloop-bench-") as tmp:
        settings = use_state(Path(tmp))
        with running_stack(settings) as loop:
            deployment_id = loop.deployment_id(DEPLOYMENT)
            for i in range(args.warmup):
                one_event(loop, deployment_id, -1 - i, args.timeout)
            samples = []
            for i in range(args.events):
                res = one_event(loop, deployment_id, i, args.timeout)
                samples.append(res)
                log(
                    f"event {i + 1:2d}/{args.events}: received +{res['to_received_s']:.2f}s, "
                    f"created +{res['to_created_s']:.2f}s, "
                    f"pending +{res['to_pending_s'] or float('nan'):.2f}s, "
                    f"running +{res['to_running_s']:.2f}s ({res['state'].lower()})"
                )

    def stats(key: str) -> dict[str, float]:
        values = [s[key] for s in samples if s[key] is not None]
        return {"p50": pct(values, 50), "p95": pct(values, 95), "max": round(max(values), 3)}

    running = stats("to_running_s")
    result = {
        "events": len(samples),
        "event": EVENT,
        "deployment": DEPLOYMENT,
        "p50_s": running["p50"],
        "p95_s": running["p95"],
        "max_s": running["max"],
        "to_received": stats("to_received_s"),
        "to_created": stats("to_created_s"),
        "to_pending": stats("to_pending_s"),
        "not_completed": sum(s["state"] != "COMPLETED" for s in samples),
        "worker_query_seconds": WORKER_QUERY_SECONDS,
        "load_avg_start": load_start,
        "load_avg": os.getloadavg(),
        "total_s": round(time.perf_counter() - started, 1),
    }
    log(
        f"event → Running over {len(samples)} events: p50 {running['p50']:.2f}s, "
        f"p95 {running['p95']:.2f}s (created p50 {result['to_created']['p50']:.2f}s, "
        f"pending p50 {result['to_pending']['p50']:.2f}s)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
