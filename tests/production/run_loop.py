"""One shortened closed loop in a process of its own, for tests/production/test_backends.py.

``python -m tests.production.run_loop OUT.json --days N ...`` runs :func:`driftloop.demo.run`
with the backends its environment names (``DRIFTLOOP_*``, ``PREFECT_API_URL``), then one
features run with materialisation (the demo builds features without loading the online store),
and writes the demo's summary plus what the Prefect API recorded to ``OUT.json``. Without
``PREFECT_API_URL`` it runs under Prefect's test harness (a temporary SQLite server), the
embedded default. A process per run keeps the two runs' settings, environment (the program
exports ``MLFLOW_S3_ENDPOINT_URL`` itself) and Prefect clients apart.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any


def flow_runs_by_flow() -> dict[str, dict[str, int]]:
    """``{flow name: {state type: count}}`` of every flow run the current Prefect API holds."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        names = {f.id: f.name for f in client.read_flows(limit=200)}
        counts: Counter[tuple[str, str]] = Counter()
        offset = 0
        while True:
            runs = client.read_flow_runs(limit=200, offset=offset)
            for r in runs:
                state = r.state.type.value if r.state else "NONE"
                counts[(names.get(r.flow_id, "?"), state)] += 1
            if len(runs) < 200:
                break
            offset += 200
    out: dict[str, dict[str, int]] = {}
    for (flow, state), n in sorted(counts.items()):
        out.setdefault(flow, {})[state] = n
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--days", type=int, required=True)
    parser.add_argument("--customers", type=int, required=True)
    parser.add_argument("--drift-day", type=int, required=True)
    parser.add_argument("--history", type=int, required=True)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--wait-for",
        action="append",
        default=[],
        help="A health URL to wait for before the loop starts (servers still starting).",
    )
    args = parser.parse_args()

    with ExitStack() as stack:
        if not os.environ.get("PREFECT_API_URL"):
            from prefect.testing.utilities import prefect_test_harness

            stack.enter_context(prefect_test_harness(server_startup_timeout=120))
        from prefect.settings import PREFECT_API_URL

        from driftloop.demo import run
        from flows.features import FeaturesParams, features_flow
        from tests.support.servers import wait_http

        for url in args.wait_for:
            wait_http(url, timeout=300)
        started = time.monotonic()
        summary: dict[str, Any] = run(
            args.days, args.customers, args.drift_day, 0.01, args.seed, history_days=args.history
        )
        loop_seconds = time.monotonic() - started
        loaded = features_flow(FeaturesParams())
        result = {
            "summary": summary,
            "materialized": loaded["materialized"],
            "flow_runs": flow_runs_by_flow(),
            "prefect_api_url": PREFECT_API_URL.value(),
            "mlflow_s3_endpoint_url": os.environ.get("MLFLOW_S3_ENDPOINT_URL"),
            "loop_seconds": round(loop_seconds, 1),
        }
    args.out.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
