"""Scale-out: the Dask task runner leaves the same lake behind as the thread runner.

One simulated telco (with defective rows, broken files and a reality change near the end) lands
in three lakes, and the real flows run ingest → features → drift on each: with
``task_runner=thread``, with ``task_runner=dask`` on a temporary local cluster, and with
``dask_address`` pointing at a ``distributed.LocalCluster`` started here. The validated and
quarantined Parquet, the ledger, the feature table and the drift check must be identical. The
champion the drift check compares against is trained once (thread run) and shared through one
MLflow store.
"""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from driftloop.simulate import simulate
from driftloop_config.settings import Settings, load_settings
from flows.runners import local_cluster_kwargs, partitions, task_runner
from tasks.drain import IngestSummary
from tasks.drift import DriftOutcome, feature_groups
from tasks.features import FeaturesSummary, date_ranges
from tasks.ingest import open_ledger
from tasks.storage import Lake, LocalStorage, S3Storage
from tests.support.usecases import usecase_with

DAYS = 28
CUSTOMERS = 300
DRIFT_DAY = 22  # the reality change: the newest days drift from the training window
WORKERS = 2


# ---- the runner follows the settings ------------------------------------------------------------


def test_runner_selection_follows_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    default = load_settings()
    assert isinstance(task_runner(default), ThreadPoolTaskRunner)
    assert partitions(default) == 1

    monkeypatch.setenv("DRIFTLOOP_TASK_RUNNER", "dask")
    monkeypatch.setenv("DRIFTLOOP_DASK_WORKERS", "3")
    local = load_settings()  # read when the flow runs, not at import
    runner = task_runner(local)
    assert isinstance(runner, DaskTaskRunner)
    assert runner.address is None
    assert runner.cluster_kwargs == local_cluster_kwargs(local)
    assert runner.cluster_kwargs["n_workers"] == 3 == partitions(local)
    assert runner.cluster_kwargs["processes"] is True
    assert runner.cluster_kwargs["threads_per_worker"] == 1
    assert runner.cluster_kwargs["host"] == "127.0.0.1"
    assert runner.cluster_kwargs["dashboard_address"] is None
    assert runner.cluster_kwargs["scheduler_kwargs"] == {"dashboard_address": "127.0.0.1:0"}

    monkeypatch.setenv("DRIFTLOOP_DASK_ADDRESS", "tcp://10.0.0.5:8786")
    remote = task_runner(load_settings())
    assert isinstance(remote, DaskTaskRunner)
    assert remote.address == "tcp://10.0.0.5:8786"
    assert remote.cluster_kwargs == {}  # an existing cluster: nothing is started


def test_work_is_cut_into_pieces_that_cover_it_in_order() -> None:
    days = [date(2026, 1, d) for d in (*range(1, 21), 25, 26)]
    assert date_ranges(days, 30) == [days]  # one builder call, as before
    cut = date_ranges(days, 30, parts=3)
    assert [d for r in cut for d in r] == days
    assert len(cut) == 3 and max(len(r) for r in cut) == 8
    assert date_ranges([], 30, parts=2) == []

    reference: dict[str, Any] = {
        "numeric": {"a": {}, "b": {}, "c": {}},
        "categorical": {"p": {}, "q": {}},
    }
    groups = feature_groups(reference, ["q", "a", "b", "c", "p", "extra"], parts=2)
    assert groups == [["a", "b", "c"], ["p", "q"]]
    assert feature_groups(reference, ["a"], parts=4) == [["a"]]


def test_an_s3_lake_travels_to_workers_by_pickle(s3_endpoint: str, s3_bucket: str) -> None:
    lake = Lake(S3Storage(s3_bucket, "lake", endpoint_url=s3_endpoint))
    lake.landing.write_bytes("usage/x.csv", b"a,b\n1,2\n")
    copy = pickle.loads(pickle.dumps(lake))
    assert copy.landing.read_bytes("usage/x.csv") == b"a,b\n1,2\n"
    assert copy.root.uri == lake.root.uri


# ---- the same lake, whatever the runner ---------------------------------------------------------


@dataclass(frozen=True)
class Run:
    name: str
    settings: Settings
    seconds: float
    ingest: IngestSummary
    features: FeaturesSummary | None
    drift: DriftOutcome | None


def _run_world(
    name: str,
    tmp: Path,
    landed: Path,
    env: dict[str, str],
    before_drift: Callable[[], None],
    *,
    ingest_only: bool = False,
) -> Run:
    from flows.drift import drift_flow
    from flows.features import features_flow
    from flows.ingest import ingest_flow

    mp = pytest.MonkeyPatch()
    try:
        for key, value in {"DRIFTLOOP_DATA_ROOT": str(tmp / name), **env}.items():
            mp.setenv(key, value)
        settings = load_settings()
        source, landing = LocalStorage(landed), Lake.from_settings(settings).landing
        for info in source.list():
            landing.write_bytes(info.key, source.read_bytes(info.key))
        started = time.perf_counter()
        ingested = ingest_flow()
        if ingest_only:
            return Run(name, settings, time.perf_counter() - started, ingested, None, None)
        built = features_flow()
        seconds = time.perf_counter() - started
        before_drift()
        started = time.perf_counter()
        checked = drift_flow()
        seconds += time.perf_counter() - started
        return Run(name, settings, seconds, ingested, built, checked)
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory, prefect_harness: None
) -> Iterator[dict[str, Run]]:
    from distributed import LocalCluster

    from flows.train import TrainParams, train_flow

    tmp = tmp_path_factory.mktemp("dask-runner")
    landed = tmp / "landed"
    simulate(
        LocalStorage(landed),
        days=DAYS,
        start=date(2026, 1, 1),
        customers=CUSTOMERS,
        drift_day=DRIFT_DAY,
        defect_rate=0.02,
        seed=11,
        label_delay_days=7,
    )
    shared = {
        "DRIFTLOOP_USECASE": str(
            usecase_with(tmp, model={"floor": 0.0, "bootstrap_samples": 50, "min_history_days": 0})
        ),
        # one MLflow store: the champion trained in the thread run is every run's reference
        "DRIFTLOOP_MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "DRIFTLOOP_MLFLOW_ARTIFACT_ROOT": str(tmp / "mlartifacts"),
        "DRIFTLOOP_DASK_WORKERS": str(WORKERS),
    }

    def train() -> None:
        trained = train_flow(TrainParams(seed=1))
        assert trained["promoted"], trained["decision"]["reason"]

    out = {"thread": _run_world("thread", tmp, landed, shared, before_drift=train)}
    dask_env = {**shared, "DRIFTLOOP_TASK_RUNNER": "dask"}
    # a temporary cluster per flow run costs its workers' imports each time: ingest only
    out["dask-local"] = _run_world(
        "dask-local", tmp, landed, dask_env, before_drift=lambda: None, ingest_only=True
    )
    with LocalCluster(**local_cluster_kwargs(out["thread"].settings)) as cluster:
        address_env = {**dask_env, "DRIFTLOOP_DASK_ADDRESS": str(cluster.scheduler_address)}
        out["dask-address"] = _run_world(
            "dask-address", tmp, landed, address_env, before_drift=lambda: None
        )
        assert len(cluster.workers) == WORKERS
    print(
        "\nwall time of ingest + features + drift: "
        + ", ".join(f"{r.name} {r.seconds:.1f} s" for r in out.values())
    )
    yield out


def _files(lake: Lake, zone: str, *, suffix: str = "") -> dict[str, bytes]:
    storage = lake.zone(zone)
    return {o.key: storage.read_bytes(o.key) for o in storage.list() if o.key.endswith(suffix)}


def _ledger(lake: Lake) -> dict[str, list[dict[str, Any]]]:
    """Every ledger record without the parts that depend on when and where it ran."""
    skip = {"etag", "processed_at"}
    ledger = open_ledger(lake.ledger)
    return {
        r["key"]: [
            {k: v for k, v in rec.items() if k not in skip} for rec in ledger.records(r["key"])
        ]
        for r in ledger.all_records()
    }


def _same_files(a: dict[str, bytes], b: dict[str, bytes]) -> None:
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []


def _same_ingest(base: Run, run: Run) -> None:
    """The same objects, statuses, rows and quarantine reasons, byte for byte."""
    lake_a, lake_b = Lake.from_settings(base.settings), Lake.from_settings(run.settings)
    assert run.ingest == base.ingest
    assert base.ingest["totals"]["rejected"] > 0 and base.ingest["totals"]["rows_quarantined"] > 0
    _same_files(_files(lake_a, "validated"), _files(lake_b, "validated"))
    _same_files(_files(lake_a, "quarantine"), _files(lake_b, "quarantine"))
    assert _ledger(lake_b) == _ledger(lake_a)


# each temporary cluster's workers import Prefect, pandas and Great Expectations once per flow
# run, which takes long on a busy machine
@pytest.mark.timeout(1800)
def test_a_temporary_local_cluster_validates_like_threads(runs: dict[str, Run]) -> None:
    _same_ingest(runs["thread"], runs["dask-local"])


@pytest.mark.timeout(1800)
def test_an_existing_cluster_leaves_the_same_lake_as_threads(runs: dict[str, Run]) -> None:
    base, run = runs["thread"], runs["dask-address"]
    assert run.features is not None and run.drift is not None
    assert base.features is not None and base.drift is not None
    lake_a, lake_b = Lake.from_settings(base.settings), Lake.from_settings(run.settings)
    _same_ingest(base, run)

    # features: the same days and rows, the same Parquet bytes per day
    assert run.features["dates_built"] == base.features["dates_built"]
    assert run.features["rows"] == base.features["rows"] > 0
    feature_files = _files(lake_a, "features", suffix=".parquet")
    assert len(feature_files) == len(base.features["dates_built"]) > DAYS // 2
    _same_files(feature_files, _files(lake_b, "features", suffix=".parquet"))
    rows = {
        lk: json.loads(lake.zone("features").read_bytes("_manifests/customer_daily.json"))
        for lk, lake in (("a", lake_a), ("b", lake_b))
    }
    assert {d: e["rows"] for d, e in rows["a"]["dates"].items()} == {
        d: e["rows"] for d, e in rows["b"]["dates"].items()
    }

    # drift: the same scores and verdict, in the same order
    assert len(base.drift["scores"]) >= 10
    assert json.dumps(run.drift, sort_keys=True) == json.dumps(base.drift, sort_keys=True)
    key = base.drift["report"].removesuffix(".html") + ".json"
    assert lake_b.reports.read_bytes(key) == lake_a.reports.read_bytes(key)
