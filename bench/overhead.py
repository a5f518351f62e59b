"""P7: orchestration overhead on a 1M-row day: the flows under Prefect ÷ the same task functions
called directly on the same input.

One simulated usage day (``--rows`` customers, 1% defects) is landed into two fresh lakes. On the
first, the stages' plain functions run in the order the flows call them: ``open_ledger``,
``drain``, ``write_index_report`` (ingest), then ``build_features``,
``apply_repo``, ``materialize`` and the retraining policy's ``current_state`` (features). On the
second, ``ingest_flow()`` and ``features_flow()`` run in this process against a temporary Prefect
API (``prefect_test_harness``, started before the clock): task runs and their states, the flow
run, artifacts and events are the difference. Imports, GX's context and Feast are warmed first
(the plain functions on a 200-customer day), so neither side pays them. The score flow is left out: it needs a champion, which a one-day lake
does not have.

    .venv/bin/python bench/overhead.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from driftloop_config.settings import quiet_telemetry


def log(message: str) -> None:
    print(message, flush=True)


def point_at(root: Path) -> Any:
    os.environ["DRIFTLOOP_DATA_ROOT"] = str(root / "lake")
    os.environ["DRIFTLOOP_STATE_DIR"] = str(root / "state")
    from driftloop_config.settings import load_settings

    return load_settings()


def land(settings: Any, key: str, data: bytes) -> Any:
    from tasks.storage import Lake

    lake = Lake.from_settings(settings)
    lake.landing.write_bytes(key, data)
    return lake


def plain(settings: Any, lake: Any) -> dict[str, float]:
    from driftloop_config.usecase import load_usecase
    from tasks import feature_store, features, ingest, policy, registry
    from tasks.drain import drain

    usecase = load_usecase(settings.usecase)
    model = usecase.model
    assert model is not None, f"use case {usecase.name!r} defines no model"
    t0 = time.perf_counter()
    ledger = ingest.open_ledger(lake.ledger)
    drain(lake, ledger, usecase, max_bytes=settings.max_file_bytes)
    ingest.write_index_report(lake, ledger)
    t_ingest = time.perf_counter() - t0
    t0 = time.perf_counter()
    built = features.build_features(lake, usecase)
    store = feature_store.apply_repo(settings)
    end = features.latest_feature_timestamp(lake, "customer_daily")
    assert end is not None and built
    with contextlib.redirect_stdout(sys.stderr):
        feature_store.materialize(store, end)
    champion = registry.champion_version(settings.tracking_uri, model.registered_name)
    policy.current_state(lake, usecase, has_champion=champion is not None)
    t_features = time.perf_counter() - t0
    return {"ingest": t_ingest, "features": t_features}


def run_flows() -> dict[str, float]:
    from flows.features import features_flow
    from flows.ingest import ingest_flow

    t0 = time.perf_counter()
    out = ingest_flow()
    t_ingest = time.perf_counter() - t0
    assert out["totals"], out
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        features_flow()
    t_features = time.perf_counter() - t0
    return {"ingest": t_ingest, "features": t_features}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    quiet_telemetry()
    load_start = os.getloadavg()

    from prefect.testing.utilities import prefect_test_harness

    import flows.features
    import flows.ingest  # noqa: F401  (imports are not what is measured)
    from driftloop.simulate import simulate
    from tasks.storage import LocalStorage
    from tasks.validate import default_validator

    default_validator()
    with tempfile.TemporaryDirectory(prefix="driftloop-bench-") as tmp:
        work = Path(tmp)
        gen = LocalStorage(work / "gen")
        simulate(gen, days=1, customers=args.rows, defect_rate=0.01, seed=args.seed)
        [landed] = gen.list("usage")
        data = gen.read_bytes(landed.key)

        # warm-up on a 200-customer day: Feast's, DuckDB's and SQLite's first-call costs are
        # paid here, not by whichever side runs first
        tiny = LocalStorage(work / "tiny")
        simulate(tiny, days=1, customers=200, defect_rate=0.01, seed=args.seed)
        [tiny_obj] = tiny.list("usage")
        settings = point_at(work / "warm")
        plain(settings, land(settings, tiny_obj.key, tiny.read_bytes(tiny_obj.key)))

        settings = point_at(work / "plain")
        lake = land(settings, landed.key, data)
        direct = plain(settings, lake)
        log(f"plain functions: ingest {direct['ingest']:.2f}s, features {direct['features']:.2f}s")

        with prefect_test_harness(server_startup_timeout=120):
            settings = point_at(work / "flows")
            land(settings, landed.key, data)
            orchestrated = run_flows()
        log(
            f"flows under Prefect: ingest {orchestrated['ingest']:.2f}s, "
            f"features {orchestrated['features']:.2f}s"
        )

    ours, floor = sum(orchestrated.values()), sum(direct.values())
    result = {
        "rows": args.rows,
        "flows_s": round(ours, 2),
        "plain_s": round(floor, 2),
        "overhead_s": round(ours - floor, 2),
        "ratio": round(ours / floor, 3),
        "per_flow": {
            k: {"flow_s": round(orchestrated[k], 2), "plain_s": round(direct[k], 2)} for k in direct
        },
        "load_avg_start": load_start,
        "load_avg": os.getloadavg(),
    }
    log(
        f"orchestration overhead: {ours:.2f}s under Prefect vs {floor:.2f}s plain "
        f"= {ours / floor:.3f}x (+{ours - floor:.2f}s)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
