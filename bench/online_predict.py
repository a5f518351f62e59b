"""P4: ``POST /predict`` latency (p50/p99) of ``driftloop serve`` for one customer.

A small real world is built first: a simulated telco run through the ingest and features flows
(Feast offline table + SQLite online store), then the train flow trains a champion and the
promotion gate promotes it (a use case with a low absolute floor, so the small world's first model
is promoted). The flows run against a temporary Prefect API (``prefect_test_harness``).

Then ``driftloop serve`` is started as its own process on a free loopback port with the same
``DRIFTLOOP_*`` environment, and, after a warm-up, timed over one keep-alive HTTP connection:

* ``--calls`` sequential ``POST /predict`` for random known customers;
* ``--batch-calls`` sequential ``POST /predict/batch`` of ``--batch-size`` random customers.

The floor is the same work in process, without HTTP: ``Predictor.predict`` of
``tasks.serve.build_predictor`` for one id (and for a batch); the ratio is HTTP p50 / in-process
p50. The server is stopped by its PID at the end, also on error.

    .venv/bin/python bench/online_predict.py [--customers 2000] [--days 40] [--calls 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from driftloop_config.settings import quiet_telemetry

# a low floor so the small world's first model is promoted; every day is a snapshot day
MODEL_OVERRIDES = {"floor": 0.5, "bootstrap_samples": 100, "min_history_days": 0}


def log(message: str) -> None:
    print(message, flush=True)


def percentile_ms(samples: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(samples) * 1000.0, q)), 3)


# ---- the world ----------------------------------------------------------------------------------


def build_world(work: Path, *, customers: int, days: int, seed: int) -> tuple[Any, list[str]]:
    """Simulate, ingest, build features, train and promote; returns (settings, known ids).

    Must run with a Prefect API (the flows); sets the ``DRIFTLOOP_*`` environment.
    """
    from tests.support.usecases import usecase_with

    os.environ["DRIFTLOOP_DATA_ROOT"] = str(work / "lake")
    os.environ["DRIFTLOOP_USECASE"] = str(usecase_with(work, model=MODEL_OVERRIDES))

    from driftloop.simulate import simulate
    from driftloop_config.settings import load_settings
    from driftloop_config.usecase import load_usecase
    from flows.features import features_flow
    from flows.ingest import ingest_flow
    from flows.train import TrainParams, train_flow
    from tasks.features import feature_key, latest_feature_timestamp
    from tasks.storage import Lake, read_parquet

    settings = load_settings()
    usecase = load_usecase(settings.usecase)
    assert usecase.target is not None
    lake = Lake.from_settings(settings)
    t0 = time.perf_counter()
    simulate(
        lake.landing,
        days=days,
        customers=customers,
        label_delay_days=usecase.target.label_delay_days,
        seed=seed,
    )
    t_sim = time.perf_counter() - t0
    t0 = time.perf_counter()
    ingest_flow()
    t_ingest = time.perf_counter() - t0
    t0 = time.perf_counter()
    features_flow()
    t_features = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = train_flow(TrainParams(seed=1))
    t_train = time.perf_counter() - t0
    if not out.get("promoted"):
        raise SystemExit(f"the first model was not promoted: {out.get('decision')}")
    log(
        f"world: {customers:,} customers x {days} days simulated in {t_sim:.1f}s; ingest flow "
        f"{t_ingest:.1f}s, features flow {t_features:.1f}s, train flow {t_train:.1f}s "
        f"-> champion v{out['version']}"
    )
    latest = latest_feature_timestamp(lake, "customer_daily")
    assert latest is not None
    day = read_parquet(
        lake.zone("features"), feature_key("customer_daily", latest.date() - timedelta(days=1))
    )
    return settings, sorted(day["customer_id"].astype(str).unique())


# ---- the server ---------------------------------------------------------------------------------


@contextlib.contextmanager
def serving(work: Path) -> Any:
    """``driftloop serve`` on a free loopback port; yields its base URL; stopped by PID."""
    import httpx

    from tests.support.servers import free_port, stop

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    exe = Path(sys.executable).with_name("driftloop")
    server_log = work / "serve.log"
    with open(server_log, "wb") as out:
        proc = subprocess.Popen(
            [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
            start_new_session=True,
        )
    try:
        t0 = time.perf_counter()
        deadline = time.monotonic() + 120
        status = None
        while status != 200:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"driftloop serve exited with code {proc.returncode}:\n"
                    + server_log.read_text(errors="replace")[-2000:]
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}/health did not answer 200 within 120s (last {status})")
            with contextlib.suppress(httpx.TransportError):
                status = httpx.get(f"{url}/health", timeout=2).status_code
            if status != 200:
                time.sleep(0.1)
        log(
            f"driftloop serve (pid {proc.pid}) healthy on {url} after {time.perf_counter() - t0:.1f}s"
        )
        yield url
    finally:
        stop(proc)


def http_latency(
    url: str, ids: list[str], *, calls: int, batch: int, warmup: int, seed: int
) -> dict[str, Any]:
    """Sequential calls over one keep-alive connection; per-call seconds and failures."""
    import httpx

    rng = np.random.default_rng(seed)
    path = "/predict" if batch == 1 else "/predict/batch"

    def body() -> dict[str, Any]:
        if batch == 1:
            return {"customer_id": str(rng.choice(ids))}
        return {"customer_ids": [str(i) for i in rng.choice(ids, size=batch, replace=False)]}

    samples: list[float] = []
    failures = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(warmup):
            client.post(path, json=body()).raise_for_status()
        for _ in range(calls):
            payload = body()
            t0 = time.perf_counter()
            response = client.post(path, json=payload)
            samples.append(time.perf_counter() - t0)
            failures += response.status_code != 200
    return {
        "calls": calls,
        "p50_ms": percentile_ms(samples, 50),
        "p99_ms": percentile_ms(samples, 99),
        "failures": failures,
    }


def inprocess_latency(
    predictor: Any, ids: list[str], *, calls: int, batch: int, warmup: int, seed: int
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)

    def pick() -> list[str]:
        return [str(i) for i in rng.choice(ids, size=batch, replace=False)]

    for _ in range(warmup):
        predictor.predict(pick())
    samples = []
    for _ in range(calls):
        wanted = pick()
        t0 = time.perf_counter()
        predictor.predict(wanted)
        samples.append(time.perf_counter() - t0)
    return {
        "calls": calls,
        "p50_ms": percentile_ms(samples, 50),
        "p99_ms": percentile_ms(samples, 99),
    }


# ---- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000, help="simulated population")
    parser.add_argument("--days", type=int, default=40, help="simulated days")
    parser.add_argument("--calls", type=int, default=1000, help="timed POST /predict calls")
    parser.add_argument("--batch-calls", type=int, default=200, help="timed /predict/batch calls")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls before each series")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    quiet_telemetry()
    started = time.perf_counter()
    load_start = os.getloadavg()

    from prefect.testing.utilities import prefect_test_harness

    with tempfile.TemporaryDirectory(prefix="driftloop-bench-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        with prefect_test_harness(server_startup_timeout=120):
            log(f"temporary Prefect API up in {time.perf_counter() - t0:.1f}s")
            settings, ids = build_world(
                work, customers=args.customers, days=args.days, seed=args.seed
            )
        log(f"{len(ids):,} customers with features on the newest day")
        batch = min(args.batch_size, len(ids))

        with serving(work) as url:
            one = http_latency(
                url, ids, calls=args.calls, batch=1, warmup=args.warmup, seed=args.seed
            )
            log(
                f"HTTP POST /predict, 1 customer: p50 {one['p50_ms']} ms, p99 {one['p99_ms']} ms "
                f"over {one['calls']} calls ({one['failures']} not 200)"
            )
            many = http_latency(
                url, ids, calls=args.batch_calls, batch=batch, warmup=10, seed=args.seed + 1
            )
            log(
                f"HTTP POST /predict/batch, {batch} customers: p50 {many['p50_ms']} ms, "
                f"p99 {many['p99_ms']} ms over {many['calls']} calls ({many['failures']} not 200)"
            )

        from tasks.serve import build_predictor

        predictor = build_predictor(settings)
        inproc = inprocess_latency(
            predictor, ids, calls=args.calls, batch=1, warmup=args.warmup, seed=args.seed
        )
        inproc_batch = inprocess_latency(
            predictor, ids, calls=args.batch_calls, batch=batch, warmup=10, seed=args.seed + 1
        )
        ratio = round(one["p50_ms"] / inproc["p50_ms"], 3)
        log(
            f"in process Predictor.predict, 1 customer: p50 {inproc['p50_ms']} ms, "
            f"p99 {inproc['p99_ms']} ms; {batch} customers: p50 {inproc_batch['p50_ms']} ms, "
            f"p99 {inproc_batch['p99_ms']} ms"
        )
        log(f"ratio HTTP / in process (p50, 1 customer): {ratio:.2f}x")

    result = {
        "customers": args.customers,
        "days": args.days,
        "known_ids": len(ids),
        "calls": one["calls"],
        "p50_ms": one["p50_ms"],
        "p99_ms": one["p99_ms"],
        "failures": one["failures"] + many["failures"],
        "batch_size": batch,
        "batch_calls": many["calls"],
        f"batch{batch}_p50_ms": many["p50_ms"],
        f"batch{batch}_p99_ms": many["p99_ms"],
        "inprocess_p50_ms": inproc["p50_ms"],
        "inprocess_p99_ms": inproc["p99_ms"],
        f"inprocess_batch{batch}_p50_ms": inproc_batch["p50_ms"],
        f"inprocess_batch{batch}_p99_ms": inproc_batch["p99_ms"],
        "ratio_http_over_inprocess": ratio,
        "load_avg_start": load_start,
        "load_avg": os.getloadavg(),
        "total_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
